"""taskrace: race the same workloads across concurrency models, measured side by side."""

__version__ = "0.1.0"
