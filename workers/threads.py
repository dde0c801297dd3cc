"""Threads in the caller's process (``concurrent.futures.ThreadPoolExecutor``).

Threads share memory, so tasks see the caller's globals and a plain ``threading.Lock``
protects shared balances. Under the GIL only one thread runs Python bytecode at a time:
threads overlap *waiting* (sleep, sockets, disk) but not *computing*.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

from workers.base import Actor, MemoryAccounts, Outcome, Tier, call


class ThreadsTier(Tier):
    name = "threads"
    summary = "a thread pool in one process: shared memory, one core for Python code (GIL)"
    shares_memory = True

    def __init__(self, workers: int = 1, **options) -> None:
        super().__init__(workers, **options)
        self._pool: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="taskrace")

    def stop(self, abort: bool = False) -> None:
        if self._pool is not None:
            # Running threads cannot be killed; queued ones are dropped on the way out, and
            # on abort we do not wait for the running ones (the CLI then exits without them).
            self._pool.shutdown(wait=not abort, cancel_futures=True)
            self._pool = None

    def map(self, fn, args_list, chunksize=1) -> list[Outcome]:
        submitted = time.perf_counter()
        self._queued(len(args_list), submitted)
        on_start = self.started_hook()
        futures = [self._pool.submit(call, i, fn, args, on_start) for i, args in enumerate(args_list)]
        outcomes: list[Outcome | None] = [None] * len(futures)
        for future in as_completed(futures):  # each one as it ends: seen (and told) in time
            outcome = self._seen(future.result(), submitted)
            outcomes[outcome.index] = outcome
        return outcomes

    def run_actors(self, actors: list[Actor]) -> list[Outcome]:
        # One dedicated thread per actor: actors block on each other (queues, locks), so
        # a pool smaller than the batch could deadlock.
        outcomes: list[Outcome | None] = [None] * len(actors)
        on_start = self.started_hook()

        def run(i: int, actor: Actor) -> None:
            outcomes[i] = call(i, actor.fn, actor.args, on_start)

        submitted = time.perf_counter()
        self._queued(len(actors), submitted)
        threads = [threading.Thread(target=run, args=(i, a), name=f"actor-{a.name}")
                   for i, a in enumerate(actors)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for outcome in outcomes:
            self._seen(outcome, submitted)
        return outcomes

    def accounts(self, balances):
        return MemoryAccounts(balances)

    def lock(self):
        return threading.Lock()

    def channel(self, maxsize=0):
        return queue.Queue(maxsize)
