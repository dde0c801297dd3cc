"""Interpreters in the caller's process (``concurrent.futures.InterpreterPoolExecutor``,
Python 3.14+): one GIL per interpreter, and nothing shared unless it is sent.

How data crosses the interpreter boundary (one process, one OS thread per interpreter)::

    caller's interpreter                              worker interpreters (own modules, own GIL)
    --------------------                              ------------------------------------------
    map(fn, args_list)
      (index, fn, args) --pickle--> InterpreterPoolExecutor --> run_task(index, fn, args)
      Outcome <---------pickle----- (one interpreter per worker)  Outcome (value or error)

    run_actors(actors)                                one interpreter per actor, each in a thread
      (fn, args) --pickle, except:-->                   fn(*args)
      accounts: array('q') --memoryview, shared-->      read / write the same 64-bit slots
      channel: interpreters.Queue(maxsize) ---------->  put / get (bounded; items are copied)
      Outcome <------------pickle----- the call's return value

Functions travel by reference (module + name) and are imported again in each interpreter,
so they must be module-level in an importable module, as for processes. Each interpreter
has its own copy of every module: a task that appends to a module-level list appends to
its interpreter's list, which the caller never sees (globals, ``--store module``). Two
things are really shared: a ``memoryview`` (its buffer, the accounts and globals' shared
store) and an ``interpreters.Queue`` (the channel: the bank's ``queue`` and the pipeline).
There is no lock that crosses interpreters, so the bank runs ``queue`` only.
"""
from __future__ import annotations

import io
import os
import pickle
import sys
import threading
import time
from array import array

from workers import MissingDependency
from workers.base import Actor, Outcome, Tier, call, error_text

try:
    from concurrent import interpreters
    from concurrent.futures import InterpreterPoolExecutor
except ImportError:
    raise MissingDependency(
        "the interpreters backend needs Python 3.14+ (concurrent.futures.InterpreterPoolExecutor); "
        f"this is {sys.version_info[0]}.{sys.version_info[1]}") from None


def where_here() -> str:
    """"pid/interp-N": every interpreter of the pool is the same process, told apart by id."""
    return f"{os.getpid()}/interp-{interpreters.get_current().id}"


def run_task(index: int, fn, args: tuple) -> Outcome:
    """``call`` inside a worker interpreter, stamped with that interpreter."""
    outcome = call(index, fn, args)
    outcome.worker = where_here()
    return outcome


def ready(barrier, workers: int) -> int:
    """Start-up: each worker interpreter checks in and waits until all have, so that
    ``start`` returns with every interpreter created and this module imported in it."""
    barrier.put(interpreters.get_current().id)
    deadline = time.monotonic() + 60
    while barrier.qsize() < workers and time.monotonic() < deadline:
        time.sleep(0.001)
    return interpreters.get_current().id


class BufferAccounts:
    """Balances in an ``array('q')`` of the caller's, reached from every interpreter
    through a ``memoryview`` of it: a memoryview is shared, not copied, when it crosses
    to another interpreter (the one shared memory of the model). ``read`` and ``write``
    are separate steps on the same 64-bit slots."""

    def __init__(self, balances: list[int] | None = None, view: memoryview | None = None) -> None:
        if view is None:
            self._array = array("q", balances or [])
            view = memoryview(self._array)
        self.view = view

    def read(self, account: int) -> int:
        return self.view[account]

    def write(self, account: int, value: int) -> None:
        self.view[account] = value

    def snapshot(self) -> list[int]:
        return self.view.tolist()


class _Pickler(pickle.Pickler):
    """Pickles an actor's call, leaving every ``BufferAccounts`` out: its memoryview goes
    to the interpreter beside the pickle, as a shareable argument of its own."""

    def __init__(self, file) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.views: list[memoryview] = []

    def persistent_id(self, obj):
        if isinstance(obj, BufferAccounts):
            self.views.append(obj.view)
            return len(self.views) - 1
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, views: tuple) -> None:
        super().__init__(file)
        self.views = views

    def persistent_load(self, pid):
        return BufferAccounts(view=self.views[pid])


def pack_call(fn, args: tuple) -> tuple[bytes, list[memoryview]]:
    buffer = io.BytesIO()
    pickler = _Pickler(buffer)
    pickler.dump((fn, args))
    return buffer.getvalue(), pickler.views


def run_actor(index: int, payload: bytes, *views: memoryview) -> Outcome:
    """An actor inside its interpreter: unpickle its call (accounts rebuilt around the
    shared memoryviews), run it."""
    try:
        fn, args = _Unpickler(io.BytesIO(payload), views).load()
    except Exception as exc:  # noqa: BLE001 - reported as the actor's error
        return Outcome(index, error=error_text(exc), worker=where_here())
    return run_task(index, fn, args)


class InterpretersTier(Tier):
    name = "interpreters"
    summary = "a pool of interpreters in one process: one GIL each, nothing shared unless sent"
    shares_memory = False  # each interpreter imports its own copy of every module
    channel_bounded = True  # interpreters.Queue(maxsize): put waits while it is full
    bank_strategies = ("queue",)  # no lock crosses interpreters; a queue does

    def __init__(self, workers: int = 1, **options) -> None:
        super().__init__(workers, **options)
        self._pool: InterpreterPoolExecutor | None = None
        self._actors: list = []  # interpreters for actors, created by reserve(), reused
        self._threads: list[threading.Thread] = []

    def describe(self) -> dict:
        return {"workers": self.workers, "python": sys.version.split()[0]}

    def start(self) -> None:
        self._pool = InterpreterPoolExecutor(self.workers, thread_name_prefix="taskrace-interp")
        # Threads (and their interpreters) are created on demand: tasks that wait for each
        # other make it create all of them now, so "startup" means ready to work.
        barrier = interpreters.create_queue()
        futures = [self._pool.submit(ready, barrier, self.workers) for _ in range(self.workers)]
        for future in futures:
            future.result()

    def reserve(self, actors: int) -> None:
        while len(self._actors) < actors:
            interp = interpreters.create()
            interp.call(ready, interpreters.create_queue(), 1)  # imports this module there
            self._actors.append(interp)

    def stop(self, abort: bool = False) -> None:
        if self._pool is not None:
            # A running interpreter cannot be interrupted: on abort, queued tasks are
            # dropped and the running ones left to the CLI's exit, as with threads.
            self._pool.shutdown(wait=not abort, cancel_futures=True)
            self._pool = None
        for thread in self._threads:
            thread.join(0 if abort else None)
        self._threads = []
        actors, self._actors = self._actors, []
        for interp in actors:
            if not interp.is_running():
                interp.close()

    def map(self, fn, args_list, chunksize=1) -> list[Outcome]:
        submitted = time.perf_counter()
        self._queued(len(args_list), submitted)
        futures = [self._pool.submit(run_task, i, fn, args) for i, args in enumerate(args_list)]
        outcomes = []
        for i, future in enumerate(futures):
            try:
                outcome = future.result()
            except Exception as exc:  # noqa: BLE001 - e.g. fn cannot be imported in an interpreter
                outcome = Outcome(i, error=error_text(exc))
            outcomes.append(self._seen(outcome, submitted))
        return outcomes

    def run_actors(self, actors: list[Actor]) -> list[Outcome]:
        # One interpreter per actor, each called from a thread of its own: actors wait on
        # each other (the channel), so they must all run at once.
        self.reserve(len(actors))
        outcomes: list[Outcome | None] = [None] * len(actors)

        def run(i: int, interp, payload: bytes, views: list) -> None:
            try:
                outcomes[i] = interp.call(run_actor, i, payload, *views)
            except Exception as exc:  # noqa: BLE001 - the interpreter failed, not the actor
                outcomes[i] = Outcome(i, error=error_text(exc))

        calls = [pack_call(a.fn, a.args) for a in actors]
        submitted = time.perf_counter()
        self._queued(len(actors), submitted)
        self._threads = [threading.Thread(target=run, args=(i, self._actors[i], payload, views),
                                          name=f"actor-{a.name}")
                         for i, (a, (payload, views)) in enumerate(zip(actors, calls))]
        for t in self._threads:
            t.start()
        for t in self._threads:
            t.join()
        self._threads = []
        for outcome in outcomes:
            self._seen(outcome, submitted)
        return outcomes

    def accounts(self, balances):
        return BufferAccounts(balances)

    def channel(self, maxsize=0):
        return interpreters.create_queue(maxsize)
