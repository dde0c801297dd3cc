"""Hidden checks of back-pressure: the student's pipeline, on threads and on processes.

    check process
      runner thread: run_pipeline(items, handle, capacity, consumers, Queue, Worker)
        items    a fast stream of 0..N-1 (the producer is the caller)
        Queue    queue.Queue / multiprocessing.Queue, counting its deepest depth and
                 the puts it refused (Full); every queue made is kept for the judge
        Worker   threading.Thread / a forked multiprocessing.Process, daemonic, kept too
        handle   slow (WORK_S an item); counts each item in shared memory, and where
                 it ran (the producer's own thread does not count as a consumer)
      watcher: every item handled and run_pipeline returned; or, once every item is
               handled, STOP_S more without a return (a consumer never got its stop
               signal); or STALL_S with no item handled (stuck)

The pipeline scenario's own verdict (scenarios/pipeline.py: every item once, the depth
within the capacity) is what is judged, measured here from outside the student's code.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.queues
import os
import queue
import threading
import time
import traceback

from taskrace.grading import Fail, StudentError, check

CTX = multiprocessing.get_context("fork")  # the workers inherit the student's module as imported
ITEMS, CAPACITY, CONSUMERS = 300, 8, 3
WORK_S = 0.001   # what handling one item takes: the consumers are the slow side
STOP_S = 2.0     # every item handled, and run_pipeline still has not returned: stuck
STALL_S = 3.0    # no item handled for this long: stuck


def _one_line(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.endswith("solution.py")]
    where = f"solution.py, line {frames[-1].lineno}: " if frames else ""
    return f"{where}{type(exc).__name__}: {exc}".splitlines()[0]


class Tally:
    """``handle``: slow, and counting (in shared memory: consumers may be processes)."""

    def __init__(self, items: int) -> None:
        self.counts = CTX.Array("i", items)  # how often each item was handled
        self.handled = CTX.RawValue("q", 0)
        self.foreign = CTX.RawValue("q", 0)  # values that are not items (a stop marker?)
        self.in_producer = CTX.RawValue("q", 0)
        self.producer = (os.getpid(), None)  # the runner thread sets its ident

    def __call__(self, item) -> None:
        time.sleep(WORK_S)
        here = (os.getpid(), threading.get_ident()) == self.producer
        with self.counts.get_lock():
            if isinstance(item, int) and 0 <= item < len(self.counts):
                self.counts[item] += 1
            else:
                self.foreign.value += 1
            self.in_producer.value += here
            self.handled.value += 1


def _classes(kind: str, queues: list, workers: list, errors):
    """The Queue and Worker classes handed to the student, recording what it makes."""
    if kind == "threads":
        class Queue(queue.Queue):
            def __init__(self, maxsize: int = 0) -> None:
                super().__init__(maxsize)
                self.deepest, self.refused, self.puts = 0, 0, 0
                queues.append(self)

            def _put(self, item) -> None:  # called under the queue's own mutex: exact
                super()._put(item)
                self.deepest = max(self.deepest, len(self.queue))

            def put(self, item, block: bool = True, timeout=None) -> None:
                self.puts += 1
                try:
                    super().put(item, block, timeout)
                except queue.Full:
                    self.refused += 1
                    raise

        class Worker(threading.Thread):
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, **kwargs)
                self.daemon = True  # a consumer left waiting must not keep the check alive
                workers.append(self)

            def run(self) -> None:
                try:
                    super().run()
                except Exception as exc:
                    errors.put(_one_line(exc))
        return Queue, Worker

    class ProcessQueue(multiprocessing.queues.Queue):
        def __init__(self, maxsize: int = 0) -> None:
            super().__init__(maxsize, ctx=CTX)
            self._seen = CTX.RawArray("q", 3)  # deepest, refused, puts: any process may put
            queues.append(self)

        def put(self, obj, block: bool = True, timeout=None) -> None:
            self._seen[2] += 1
            try:
                super().put(obj, block, timeout)
            except queue.Full:
                self._seen[1] += 1
                raise
            # puts minus gets (a semaphore's count, exact on Linux), right after this put
            self._seen[0] = max(self._seen[0], self.qsize())

        @property
        def deepest(self) -> int:
            return self._seen[0]

        @property
        def refused(self) -> int:
            return self._seen[1]

        @property
        def puts(self) -> int:
            return self._seen[2]

        def __getstate__(self):
            return (*super().__getstate__(), self._seen)

        def __setstate__(self, state) -> None:
            super().__setstate__(state[:-1])
            self._seen = state[-1]

    class Worker(CTX.Process):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.daemon = True
            workers.append(self)

        def run(self) -> None:
            try:
                super().run()
            except Exception as exc:
                errors.put(_one_line(exc))
                raise SystemExit(1)
    return ProcessQueue, Worker


def run(solution, kind: str, wait_for_return: bool) -> dict:
    """One pipeline on ``kind``; what was seen. Without ``wait_for_return``, the watch
    ends once every item is handled (the depth is known by then)."""
    tally, queues, workers, errors = Tally(ITEMS), [], [], CTX.SimpleQueue()
    Queue, Worker = _classes(kind, queues, workers, errors)
    outcome: dict = {}

    def call() -> None:
        tally.producer = (os.getpid(), threading.get_ident())
        try:
            solution.run_pipeline(iter(range(ITEMS)), tally, CAPACITY, CONSUMERS, Queue, Worker)
            outcome["returned"] = True
        except Exception as exc:
            outcome["error"] = _one_line(exc)

    runner = threading.Thread(target=call, daemon=True)
    runner.start()
    seen, since, stuck = -1, time.monotonic(), None
    while runner.is_alive():
        handled, now = tally.handled.value, time.monotonic()
        if handled != seen:
            seen, since = handled, now
        elif handled >= ITEMS and not wait_for_return and now - since > 0.5:
            break
        elif handled >= ITEMS and now - since > STOP_S:
            stuck = "stop"
            break
        elif handled < ITEMS and now - since > STALL_S:
            stuck = "stall"
            break
        time.sleep(0.01)
    alive = [w for w in workers if w.is_alive()]
    result = {"stuck": stuck, "returned": outcome.get("returned", False), "error": outcome.get("error"),
              "alive": len(alive), "workers": len(workers), "queues": len(queues),
              "deepest": max((q.deepest for q in queues), default=0),
              "refused": sum(q.refused for q in queues), "puts": sum(q.puts for q in queues),
              "counts": list(tally.counts[:]), "foreign": tally.foreign.value,
              "in_producer": tally.in_producer.value, "handled": tally.handled.value}
    if kind == "processes":
        for q in queues:
            q.cancel_join_thread()  # items nobody will read must not hold up our exit
        for w in alive:
            w.kill()
            w.join(5)
    found = []
    while not errors.empty():
        found.append(errors.get())
    result["errors"] = found
    return result


def _solution(student):
    solution = student.solution()
    if not callable(getattr(solution, "run_pipeline", None)):
        raise Fail("solution.py has no function run_pipeline(items, handle, capacity, consumers, "
                   "Queue, Worker)")
    return solution


def _stopped(result: dict, kind: str) -> None:
    """The verdicts every run shares: it ran, and did not stall before the end."""
    if result["error"]:
        raise StudentError(result["error"])
    if result["errors"]:
        raise StudentError(result["errors"][0])
    if result["stuck"] == "stall":
        raise Fail(f"no item was handled for {STALL_S:.0f} s ({result['handled']} of {ITEMS} on "
                   f"{kind}): are the consumers started, and reading the queue the producer "
                   "fills?")
    if result["queues"] == 0:
        raise Fail("run_pipeline made no queue with the Queue class it was given: use it, so "
                   "the pipeline runs on threads and on processes alike")


def once(student, kind: str) -> None:
    result = run(_solution(student), kind, wait_for_return=True)
    _stopped(result, kind)
    if result["stuck"] == "stop":
        raise Fail(f"every item was handled, but run_pipeline did not return within {STOP_S:.0f} s "
                   f"({result['alive']} of {result['workers']} consumers still running on {kind}): "
                   "a consumer never got its stop signal; send one per consumer")
    if result["alive"]:
        raise Fail(f"run_pipeline returned while {result['alive']} of {result['workers']} consumers "
                   "were still running: stop each one and join() it before returning")
    counts = result["counts"]
    missing = [i for i, c in enumerate(counts) if c == 0]
    twice = [i for i, c in enumerate(counts) if c > 1]
    if missing:
        shown = ", ".join(map(str, missing[:3]))
        lesson = (f"the queue refused {result['refused']} puts (Full): when it is full the "
                  "producer must wait (put() blocks until a consumer takes one), never drop "
                  "the item" if result["refused"] else
                  "every item must reach a consumer before the stop signals do")
        raise Fail(f"{len(missing)} of {ITEMS} items were never handled (e.g. {shown}) on {kind}: "
                   f"{lesson}")
    if twice:
        raise Fail(f"{len(twice)} items were handled twice (e.g. {twice[0]}) on {kind}: each item "
                   "goes into the queue once and one consumer takes it")
    if result["foreign"]:
        raise Fail(f"handle() was called {result['foreign']} times with something that is not an "
                   "item (the stop signal?): a consumer stops at its signal without handling it")
    if result["in_producer"]:
        raise Fail(f"{result['in_producer']} items were handled by the producer itself: the "
                   "consumers (the Workers) call handle(), the producer only puts")


def bounded(student, kind: str) -> None:
    result = run(_solution(student), kind, wait_for_return=False)
    _stopped(result, kind)
    if result["deepest"] > CAPACITY:
        raise Fail(f"the queue held {result['deepest']} items, capacity is {CAPACITY} ({kind}, a "
                   "slow consumer): give the queue its bound, Queue(capacity), so a full queue "
                   "makes the producer wait")
    if result["puts"] < ITEMS:
        raise Fail(f"only {result['puts']} of {ITEMS} items were put into the queue on {kind}: "
                   "the producer puts every item, the consumers get them")


@check(points=2, timeout=60, repeat=2)
def every_item_once_on_threads(student):
    """Threads: every item handled exactly once, then every consumer stops and it returns."""
    once(student, "threads")


@check(points=2, timeout=60, repeat=2)
def within_capacity_on_threads(student):
    """Threads, a fast producer, slow consumers: the queue never holds more than its capacity."""
    bounded(student, "threads")


@check(points=2, timeout=60, repeat=2)
def every_item_once_on_processes(student):
    """Processes: every item handled exactly once, then every consumer stops and it returns."""
    once(student, "processes")


@check(points=2, timeout=60, repeat=2)
def within_capacity_on_processes(student):
    """Processes, a fast producer, slow consumers: the queue never holds more than its capacity."""
    bounded(student, "processes")
