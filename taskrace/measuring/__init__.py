"""Measuring: one run timed from outside (runner, measure), the matrix and its sweeps
(matrix, sweep), statistics (stats), the CPUs' capacity, counted overhead (counting)
and the harness against plain stdlib code (bench)."""
