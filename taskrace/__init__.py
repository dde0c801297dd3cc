"""taskrace: race the same workloads across concurrency models, measured side by side.

The library face (``taskrace.run``, ``compare``, ``race``, ``faults``, ``network``, ``load``)
lives in ``taskrace.api`` and is imported on first use: a Celery worker that imports
``workers`` (and through it ``taskrace.events``) pays for none of it.
"""

from taskrace.version import __version__

_API = ("run", "compare", "race", "faults", "network", "load", "parse", "Results", "FaultResults", "NetworkResults",
        "InputError")
__all__ = [*_API, "events", "__version__"]


def __getattr__(name: str):
    if name in _API:
        from taskrace import api

        return getattr(api, name)
    raise AttributeError(f"module 'taskrace' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
