"""What notebook 4 races on Celery (4-race-your-own-function.ipynb, section 7).

A Celery worker calls a function by its import path (``mywork:longest_chain``), with
JSON inputs and results. It cannot import a function defined in a notebook's cell (its
module is ``__main__``), so a function it runs lives in a module like this one, beside
the notebook. The workers ``taskrace.race`` starts are given this module's name in
``TASKRACE_TASK_MODULES`` and this folder on their ``PYTHONPATH``; the lab's workers
mount the notebooks folder and name this module in their own environment.
"""
from __future__ import annotations

WINDOW = 5_000  # numbers per call: about a tenth of a second of pure Python


def collatz_steps(n: int) -> int:
    """How many steps of n -> n/2 (n even) or 3n + 1 (n odd) take n to 1."""
    steps = 0
    while n != 1:
        n, steps = (n // 2 if n % 2 == 0 else 3 * n + 1), steps + 1
    return steps


def longest_chain(start: int) -> int:
    """The most steps any n in [start, start + WINDOW) takes to reach 1: CPU work."""
    return max(collatz_steps(n) for n in range(max(start, 1), start + WINDOW))
