"""Worker processes (``multiprocessing``): one interpreter, one GIL per process.

How data crosses the process boundary::

    caller process                                     worker processes
    --------------                                     ----------------
    map(fn, args_list)
      (index, fn, args) --pickle--> Pool task pipe ---> call(index, fn, args)
      Outcome <---------pickle---- Pool result pipe <-- Outcome (value or error)

    run_actors(actors)                                 one Process per actor
      Process(args=(fn, args, ...)) --inherited-->      fn(*args)
      accounts: Array('q')   shared memory, inherited   read / write / get_lock()
      lock: Lock, channel: Queue   OS semaphores + pipes
      Outcome <------------pickle---- results Queue <-- Outcome

Functions travel by reference (module + name), so they must be module-level in an
importable module. Shared memory (``Value``/``Array``) and locks can only be *inherited*
at process start, never sent through a pool's pipe: that is why actors get their own
``Process`` (the seed's way) while plain tasks use a ``Pool``.
"""
from __future__ import annotations

import multiprocessing as mp
import queue
import signal
import time

from workers.base import Actor, Outcome, Tier, TierOption, apply_deltas, call, call_star, optimistic


def _ignore_sigint() -> None:
    # Ctrl-C goes to the whole foreground process group. The caller handles it and stops
    # the workers; without this every worker would also print a KeyboardInterrupt trace.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A forked child inherits the CLI's SIGTERM-to-KeyboardInterrupt handler; terminate()
    # must simply end it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _actor_main(index: int, fn, args: tuple, results) -> None:
    _ignore_sigint()
    results.put(call(index, fn, args))


class SharedArrayAccounts:
    """Balances in a ``multiprocessing.Array``: shared memory, as in the seed.

    Each ``arr[i]`` access takes the array's own lock for that one access, so a
    read-modify-write built from ``read`` and ``write`` is still two steps (the seed's
    ``value.value = value.value + 1`` bug). ``apply_atomic`` holds ``get_lock()`` for the
    whole operation: the array's lock used properly.
    """

    def __init__(self, ctx, balances: list[int]) -> None:
        self._array = ctx.Array("q", list(balances))  # 'q': signed 64-bit, no overflow

    def read(self, account: int) -> int:
        return self._array[account]

    def write(self, account: int, value: int) -> None:
        self._array[account] = value

    def apply_atomic(self, deltas, guard):
        with self._array.get_lock():
            before, after = apply_deltas(self._array.get_obj(), deltas, guard)
            return before, after, time.monotonic_ns()  # stamped inside: orders the history

    def snapshot(self) -> list[int]:
        return list(self._array[:])

    def apply_optimistic(self, deltas, guard, window_s):
        return optimistic(self, self._array.get_lock(), self._array.get_obj(), deltas, guard, window_s)


class ProcessesTier(Tier):
    name = "processes"
    summary = "a pool of worker processes: every core runs Python, data is pickled across"
    shares_memory = False
    cli_options = (TierOption("start_method", "how worker processes start (default: the platform's)",
                              choices=tuple(mp.get_all_start_methods())),)

    def __init__(self, workers: int = 1, start_method: str | None = None, **options) -> None:
        super().__init__(workers, **options)
        # None = the platform's default (fork on Linux up to 3.13, spawn on macOS/Windows).
        self.ctx = mp.get_context(start_method)
        self.start_method = self.ctx.get_start_method()
        self._pool = None
        self._live: list = []

    def describe(self) -> dict:
        return {"workers": self.workers, "start_method": self.start_method}

    def start(self) -> None:
        self._pool = self.ctx.Pool(self.workers, initializer=_ignore_sigint)
        # Pool() returns before the children have imported anything; one round trip per
        # worker makes "startup" mean "ready to work" (under spawn that is the big cost).
        self._pool.map(_ready, range(self.workers), chunksize=1)

    def stop(self, abort: bool = False) -> None:
        for proc in self._live:
            if proc.is_alive():
                proc.terminate()
            proc.join(5)
        self._live = []
        if self._pool is not None:
            if abort:
                self._pool.terminate()
            else:
                self._pool.close()
            self._pool.join()
            self._pool = None

    def map(self, fn, args_list, chunksize=1) -> list[Outcome]:
        submitted = time.perf_counter()
        self._queued(len(args_list), submitted)
        packed = [(i, fn, args) for i, args in enumerate(args_list)]
        return [self._seen(outcome, submitted)
                for outcome in self._pool.imap(call_star, packed, chunksize=max(1, chunksize))]

    def run_actors(self, actors: list[Actor]) -> list[Outcome]:
        results = self.ctx.Queue()
        submitted = time.perf_counter()
        self._queued(len(actors), submitted)
        procs = [self.ctx.Process(target=_actor_main, args=(i, a.fn, a.args, results),
                                  name=f"taskrace-{a.name}", daemon=True)
                 for i, a in enumerate(actors)]
        self._live = procs
        for proc in procs:
            proc.start()
        outcomes: dict[int, Outcome] = {}
        # Drain results before join(): a child blocks on exit until its queued data is
        # read, so joining first can deadlock. Poll so a crashed actor can't hang us.
        while len(outcomes) < len(procs):
            try:
                outcome = results.get(timeout=0.2)
                outcomes[outcome.index] = self._seen(outcome, submitted)
            except queue.Empty:
                for i, proc in enumerate(procs):
                    if i not in outcomes and not proc.is_alive() and results.empty():
                        time.sleep(0.2)  # its last put may still be in flight
                        if results.empty():
                            outcomes[i] = self._seen(Outcome(i, error=f"actor process exited with code "
                                                                    f"{proc.exitcode}"), submitted)
        for proc in procs:
            proc.join()
        self._live = []
        return [outcomes[i] for i in range(len(procs))]

    def accounts(self, balances):
        return SharedArrayAccounts(self.ctx, balances)

    def lock(self):
        return self.ctx.Lock()

    def channel(self, maxsize=0):
        return self.ctx.Queue(maxsize)


def _ready(_: int) -> int:
    import os

    return os.getpid()
