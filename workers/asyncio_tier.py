"""Coroutines on one asyncio event loop, in the caller's own thread: no pool, no process.

How work flows (nothing crosses a thread or a process; everything is one thread's memory)::

    caller thread (the harness)               the same thread, inside the event loop
    ---------------------------               --------------------------------------
    map(fn, args_list)
      loop.run_until_complete(...) ------->   one Task per item, at most -n running at once:
                                                twin_of(fn) declared?  await twin(*args)
                                                                       (other Tasks run at each await)
                                                no twin:               fn(*args) inline
                                                                       (the loop waits until it returns)
      Outcomes, in order  <---------------    each Task's Outcome, stamped where it ran

    run_actors(actors)                        one Task per actor, all at once, same rule
      accounts: LoopAccounts                    a plain list, no lock: code with no await is atomic
      lock: asyncio.Lock                        held across awaits by the bank's ``lock``
      channel: asyncio.Queue(maxsize)           a full queue suspends ``await put``: back-pressure

Where the caller's thread runs an event loop already (a cell of a Jupyter kernel does), a
thread cannot run a second one: the tier's loop then runs in a thread of its own, and the
caller waits for it. Still one loop in one thread, only not the caller's.

The loop switches only at ``await``. So waiting overlaps (power-io's ``asyncio.sleep``, on
one thread), computing does not (power-cpu and mapreduce hold the loop: one core, like
threads under the GIL), and the bank's race can only happen where an actor awaits between
its read and its write.
"""
from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import wait as wait_for

from scenarios.base import twin_of
from workers.base import Actor, Outcome, Tier, apply_deltas, call, error_text, peak_rss, where


async def call_async(index: int, fn, args: tuple, on_start=None) -> Outcome:
    """One task on the loop: its coroutine twin if it has one, else ``fn`` itself, inline."""
    twin = twin_of(fn)
    if twin is None:
        return call(index, fn, args, on_start)  # blocks the loop until it returns: nothing interleaves
    started = time.perf_counter()
    if on_start is not None:
        on_start(index, started, where())
    try:
        value, error = await twin(*args), None
    except Exception as exc:  # noqa: BLE001 - reported per task, by design
        value, error = None, error_text(exc)
    # cpu_s stays None: every Task runs on this one thread, so the thread's CPU time across
    # an await also counts whatever the other Tasks computed meanwhile.
    return Outcome(index, value, error, started=started, finished=time.perf_counter(),
                   worker=where(), max_rss=peak_rss())


def _loop_running_here() -> bool:
    """Whether this thread runs an event loop now (a Jupyter kernel's cell does)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class LoopAccounts:
    """Balances in a plain list, touched only by coroutines on the one loop.

    The loop runs one Task at a time and switches only at ``await``: code with no await
    in it cannot be interleaved, so ``apply_atomic`` needs no lock at all. ``read`` and
    ``write`` stay separate steps: an actor that awaits between them can lose updates.
    """

    def __init__(self, balances: list[int]) -> None:
        self._balances = list(balances)

    def read(self, account: int) -> int:
        return self._balances[account]

    def write(self, account: int, value: int) -> None:
        self._balances[account] = value

    def snapshot(self) -> list[int]:
        return list(self._balances)

    def apply_atomic(self, deltas: list, guard: bool):
        before, after = apply_deltas(self._balances, deltas, guard)
        return before, after, time.monotonic_ns()

    async def apply_optimistic(self, deltas: list, guard: bool, window_s: float, max_retries: int = 10_000):
        """Compare-and-set: read, await the window (others may write), then compare and
        write with no await between the two, else read again."""
        retries = 0
        while True:
            before = [self.read(a) for a, _ in deltas]
            if window_s:
                await asyncio.sleep(window_s)
            if [self.read(a) for a, _ in deltas] == before:
                _, after = apply_deltas(self._balances, deltas, guard)
                return before, after, time.monotonic_ns(), retries
            retries += 1
            if retries > max_retries:
                raise RuntimeError(f"gave up after {retries} conflicting retries")


class AsyncioTier(Tier):
    name = "asyncio"
    summary = "one event loop in one thread: waits overlap at await, computing blocks the loop"
    shares_memory = True  # one process, one thread: the caller's module globals
    runs_coroutines = True  # twin_of(fn) is awaited on the loop; a task without one blocks it

    def __init__(self, workers: int = 1, **options) -> None:
        super().__init__(workers, **options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task] = []  # the current batch's Tasks
        self._thread: threading.Thread | None = None  # the loop's own thread, if the caller's runs one
        self._ended: BaseException | None = None  # what ended that thread's loop, if not stop()
        self._own_thread = False

    def describe(self) -> dict:
        out = {"workers": self.workers}
        if self._own_thread:
            out["loop_thread"] = "its own (the caller's thread runs an event loop)"
        return out

    def start(self) -> None:
        # A loop of our own, not the thread's current one: nothing else runs on it, so
        # stop() can cancel everything on it and close it.
        self._loop = asyncio.new_event_loop()
        self._own_thread = _loop_running_here()
        if self._own_thread:  # a thread runs one loop at a time: ours gets a thread
            self._thread = threading.Thread(target=self._serve, name="taskrace-asyncio", daemon=True)
            self._thread.start()

    def _serve(self) -> None:
        try:
            self._loop.run_forever()
        except BaseException as exc:  # noqa: BLE001 - e.g. a Task's KeyboardInterrupt: told to the caller
            self._ended = exc

    def _run(self, coro):
        """Run ``coro`` on the tier's loop until it is done: here, or on the loop's thread."""
        if self._thread is None:
            return self._loop.run_until_complete(coro)
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        while not wait_for([future], timeout=0.2).done:
            if not self._thread.is_alive():
                future.cancel()
                raise self._ended or RuntimeError("the asyncio tier's loop ended")
        return future.result()

    def stop(self, abort: bool = False) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        thread, self._thread = self._thread, None
        if thread is not None:
            # Stop the loop in its thread, then wind it down as below in a thread with no
            # loop running (not the caller's). A task stuck in blocking code keeps it:
            # on abort, left to the process's exit, as the threads tier leaves its threads.
            if thread.is_alive():
                loop.call_soon_threadsafe(loop.stop)
                thread.join(5 if abort else None)
                if thread.is_alive():
                    return
            closer = threading.Thread(target=self._close, args=(loop,), name="taskrace-asyncio-close")
            closer.start()
            closer.join()
            return
        self._close(loop)

    def _close(self, loop: asyncio.AbstractEventLoop) -> None:
        # After Ctrl-C (a KeyboardInterrupt raised through run_until_complete) the loop
        # holds Tasks mid-await: cancel every one and let them unwind, and read the
        # exception of the Task that took the interrupt, so that no "Task was destroyed
        # but it is pending" or "exception was never retrieved" warning follows us out.
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        for task in self._tasks:
            if task.done() and not task.cancelled():
                task.exception()
        self._tasks = []
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    async def _run_all(self, calls: list[tuple], limit: int | None) -> list[Outcome]:
        """Each (fn, args) as one Task, at most ``limit`` running at once (None: all);
        results collected in order, like the threads tier's futures."""
        gate = asyncio.Semaphore(limit) if limit else None

        on_start = self.started_hook()

        async def one(index: int, fn, args: tuple) -> Outcome:
            if gate is None:
                return await call_async(index, fn, args, on_start)
            async with gate:
                return await call_async(index, fn, args, on_start)

        submitted = time.perf_counter()
        self._queued(len(calls), submitted)
        loop = asyncio.get_running_loop()
        tasks = self._tasks = [loop.create_task(one(i, fn, args)) for i, (fn, args) in enumerate(calls)]
        outcomes = []
        for task in tasks:
            outcomes.append(self._seen(await task, submitted))
        return outcomes

    def map(self, fn, args_list, chunksize=1) -> list[Outcome]:
        # -n bounds how many tasks are in flight, as a pool of n threads would.
        return self._run(self._run_all([(fn, args) for args in args_list], self.workers))

    def run_actors(self, actors: list[Actor]) -> list[Outcome]:
        # Every actor at once: actors wait on each other (queues, locks), so a limit
        # below the batch could leave a producer waiting for a consumer that never starts.
        return self._run(self._run_all([(a.fn, a.args) for a in actors], None))

    def accounts(self, balances):
        return LoopAccounts(balances)

    def lock(self):
        return asyncio.Lock()  # binds to the loop on first use (Python 3.10+)

    def channel(self, maxsize=0):
        return asyncio.Queue(maxsize)
