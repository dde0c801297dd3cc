"""Visible checks of back-pressure: run them with ``taskrace exercise check .``

On threads only, and short. The grader's hidden checks run the pipeline on threads and
on processes, with more items, and measure the queue's depth at every put.
"""
from __future__ import annotations

import queue
import threading
import time

from taskrace.grading import Fail, check

ITEMS, CAPACITY, CONSUMERS = 100, 4, 2


class DeepestQueue(queue.Queue):
    """A queue.Queue that remembers the most items it ever held."""

    def __init__(self, maxsize=0):
        super().__init__(maxsize)
        self.deepest = 0

    def _put(self, item):
        super()._put(item)
        self.deepest = max(self.deepest, len(self.queue))


class DaemonThread(threading.Thread):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.daemon = True  # a consumer left waiting must not keep this check alive


@check(points=1, timeout=20)
def pipeline_on_threads(student):
    """Threads: every item handled once, within the capacity, and run_pipeline returns."""
    solution = student.solution()
    made, handled, guard = [], [], threading.Lock()

    class Queue(DeepestQueue):
        def __init__(self, maxsize=0):
            super().__init__(maxsize)
            made.append(self)

    def handle(item):
        time.sleep(0.001)  # a slow consumer
        with guard:
            handled.append(item)

    runner = DaemonThread(target=solution.run_pipeline,
                          args=(iter(range(ITEMS)), handle, CAPACITY, CONSUMERS, Queue, DaemonThread))
    runner.start()
    runner.join(5)
    if runner.is_alive():
        raise Fail(f"run_pipeline did not return in 5 s ({len(handled)} of {ITEMS} items handled): "
                   "does every consumer get a stop signal?")
    deepest = max((q.deepest for q in made), default=0)
    if deepest > CAPACITY:
        raise Fail(f"the queue held {deepest} items, capacity is {CAPACITY}")
    if sorted(handled) != list(range(ITEMS)):
        raise Fail(f"{len(set(handled))} distinct items of {ITEMS} were handled, {len(handled)} "
                   "calls in all: each item must be handled exactly once")
