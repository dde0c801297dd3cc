"""The tier interface: *how* a batch of work runs.

A tier (sequential, threads, asyncio, processes, celery) offers two ways to run work and a
few shared-state primitives. Scenarios use only these, so a scenario never names a tier:

    map(fn, args_list, chunksize)  independent tasks          -> one Outcome per task
    run_actors(actors)             long-running concurrent fns -> one Outcome per actor
    accounts(balances)             shared integer balances (memory / Value+Array / Redis)
    lock()                         a mutual-exclusion lock the actors can share
    channel(maxsize)               a FIFO queue the actors can share (message passing)

Capabilities are class attributes that scenarios read (as joblib's backends do), never
``isinstance`` checks or tier names. An event-loop tier hands out loop primitives (an
``asyncio.Lock``, an ``asyncio.Queue``) and runs a task's declared coroutine twin
(``scenarios.base.coroutine_twin``) in place of the task, so only twins touch them.
"""
from __future__ import annotations

import os
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from typing import Any, Callable, NamedTuple

from taskrace import events


@dataclass(frozen=True)
class TierOption:
    """A setting a tier takes from the command line, declared on the tier class in
    ``cli_options``. The CLI turns each into ``--flag`` on ``run`` and ``compare`` and
    hands what the user gave to the tier's constructor as ``name=value``; what was not
    given is left out, so the constructor's own default applies (``default`` only
    documents it). Declaring options on the class is what lets a new tier with options
    be one module plus one registry line."""

    name: str  # the constructor's keyword argument
    help: str
    type: Callable[[str], Any] = str
    default: Any = None  # shown in --help; None: the help says what happens instead
    choices: tuple | None = None
    switch: bool = False  # a flag without a value (--acks-late): gives True
    spelling: str = ""  # the flag, when not --name with dashes (--external-workers)
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return self.spelling or "--" + self.name.replace("_", "-")


@dataclass
class Outcome:
    """What became of one task or actor: its value or its error, and when it ran.

    Timestamps are ``time.perf_counter()`` readings. On Linux that is CLOCK_MONOTONIC,
    shared by every process of one host, so times taken in a worker process and in the
    caller can be subtracted. They are *not* comparable across hosts.
    """

    index: int
    value: Any = None
    error: str | None = None
    submitted: float | None = None  # caller handed the task to the tier
    started: float | None = None  # the task began, where it ran
    finished: float | None = None  # the task ended, where it ran
    seen: float | None = None  # the caller had the result back
    worker: str = ""  # who ran it: "pid/thread" locally, the node name under Celery
    cpu_s: float | None = None  # CPU time of the thread that ran it
    max_rss: int | None = None  # peak resident memory of that process so far, bytes

    def to_dict(self) -> dict:
        return asdict(self)


class Actor(NamedTuple):
    """A long-running function that runs concurrently with the others of its batch."""

    name: str
    fn: Callable
    args: tuple


def where() -> str:
    """Identify the executing process and thread, like the seed's process listing."""
    return f"{os.getpid()}/{threading.current_thread().name}"


def node_of(worker: str) -> str:
    """The executor an Outcome's ``worker`` names: a Celery node less its ":pid", or the
    local "pid/thread" as it is (what a record's ``nodes`` count)."""
    return worker.rsplit(":", 1)[0]


def peak_rss() -> int | None:
    """Peak resident memory of this process, in bytes (ru_maxrss is KiB on Linux)."""
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    except (ImportError, OSError):
        return None


def call(index: int, fn: Callable, args: tuple, on_start: Callable | None = None) -> Outcome:
    """Run one task and capture its exception into the outcome (one bad task must not
    end the run: concurrent.futures does the same). Module-level so it pickles.
    ``on_start(index, started, worker)``: told as the task starts (tiers that run tasks
    in the caller's process pass their event hook; a pool child is never given one)."""
    cpu0 = time.thread_time()
    started = time.perf_counter()
    if on_start is not None:
        on_start(index, started, where())
    try:
        value, error = fn(*args), None
    except Exception as exc:  # noqa: BLE001 - reported per task, by design
        value, error = None, error_text(exc)
    return Outcome(index, value, error, started=started, finished=time.perf_counter(),
                   worker=where(), cpu_s=time.thread_time() - cpu0, max_rss=peak_rss())


def error_text(exc: BaseException) -> str:
    """One line for a task's exception: its type, message and where it was raised."""
    error = f"{type(exc).__name__}: {exc}"
    last = traceback.extract_tb(exc.__traceback__)[-1:]
    if last:
        error += f" (at {os.path.basename(last[0].filename)}:{last[0].lineno})"
    return error


def call_star(packed: tuple) -> Outcome:
    """``call`` for executors whose map passes one argument per item."""
    return call(*packed)


class Tier:
    """Base of every tier. Subclasses override ``map`` and ``run_actors`` and the
    three shared-state factories. Used as a context manager: ``start`` brings up pools,
    workers and brokers; ``stop`` always takes them down again."""

    name = ""
    summary = ""
    shares_memory = False  # tasks see (and can change) the caller's module globals
    needs_broker = False  # work travels through a message broker (tests then need Redis)
    channel_bounded = True  # channel(maxsize) really blocks producers when full
    external = False  # tasks run in processes someone else started, outside the harness's tree
    bank_strategies: tuple[str, ...] = ("none", "lock", "atomic", "optimistic", "queue")
    reduces_remotely = False  # map_reduce(): a reduce callback runs where the map tasks ran (a chord)
    runs_coroutines = False  # an event loop: awaits a task's coroutine twin instead of calling the task
    cli_options: tuple[TierOption, ...] = ()  # the settings users may give: see TierOption

    def __init__(self, workers: int = 1, **options: Any) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self.options = options
        self._told_started: set[int] = set()  # tasks whose start was emitted as it happened

    # lifecycle -------------------------------------------------------------
    def start(self) -> None:
        """Bring up whatever runs the work. The harness times this separately."""

    def stop(self, abort: bool = False) -> None:
        """Take everything down again; ``abort`` (an error or Ctrl-C is on its way up)
        means kill rather than drain. Safe to call twice and after a failed start."""

    def __enter__(self) -> "Tier":
        try:
            self.start()
        except BaseException:
            self.stop(abort=True)
            raise
        return self

    def __exit__(self, exc_type, *rest: object) -> None:
        self.stop(abort=exc_type is not None)

    def describe(self) -> dict:
        """Settings that shaped this run, for the results JSON (no secrets)."""
        return {"workers": self.workers}

    def refuses(self, scenario) -> str | None:
        """Why this tier, with its settings, will not run ``scenario`` (one line), or None.
        Asked before any process starts (the scenario's own ``supported_by`` judges the
        tier's class; this judges the settings, e.g. a delivery promise it cannot keep)."""
        return None

    def reserve(self, actors: int) -> None:
        """Make room for ``actors`` concurrent actors before the timed run starts (tiers
        whose executors are not created per actor override this)."""

    # running work ------------------------------------------------------------
    def map(self, fn: Callable, args_list: list[tuple], chunksize: int = 1) -> list[Outcome]:
        raise NotImplementedError

    def run_actors(self, actors: list[Actor]) -> list[Outcome]:
        raise NotImplementedError

    def map_reduce(self, fn: Callable, args_list: list[tuple], reduce_fn: Callable):
        """Map ``fn`` over ``args_list`` and reduce the values with ``reduce_fn(values)``
        where the tasks ran, as one unit (Celery's chord): only on tiers whose
        ``reduces_remotely`` is true. Returns an object with ``outcomes`` (one per map
        task, then one for the reduce) and ``record`` (what it cost, for the results)."""
        raise NotImplementedError

    # events (taskrace.events) -------------------------------------------------------
    # A tier reports each task through these three, as the caller learns of it: queued
    # when handed over, started as it starts where the tier can see that (tasks in the
    # caller's process: ``started_hook``), and finished as its outcome arrives, with the
    # times measured where it ran. Nothing is built unless someone listens.
    def _queued(self, count: int, submitted: float) -> None:
        self._told_started = set()
        if events.wants_tasks():
            queued = events.epoch(submitted)
            for index in range(count):
                events.emit("task.queued", backend=self.name, index=index, queued=queued)

    def started_hook(self) -> Callable | None:
        """``call``'s ``on_start`` for tasks run in this process, or None (nobody listens)."""
        return self._started if events.wants_tasks() else None

    def _started(self, index: int, started: float, worker: str) -> None:
        self._told_started.add(index)
        events.emit("task.started", backend=self.name, index=index, started=events.epoch(started),
                    worker=worker)

    def _seen(self, outcome: "Outcome", submitted: float) -> "Outcome":
        """Stamp an outcome as the caller has it back, and tell the stream."""
        outcome.submitted, outcome.seen = submitted, time.perf_counter()
        if events.wants_tasks():
            self._tell_done(outcome)
        return outcome

    def _tell_done(self, outcome: "Outcome") -> None:
        """task.started (unless told as it happened) and task.finished of ``outcome``, its
        worker named as the record's nodes name it."""
        worker = node_of(outcome.worker)
        started, finished = events.epoch(outcome.started), events.epoch(outcome.finished)
        if outcome.index not in self._told_started:
            events.emit("task.started", backend=self.name, index=outcome.index, started=started, worker=worker)
        events.emit("task.finished", backend=self.name, index=outcome.index, started=started,
                    finished=finished, worker=worker, ok=outcome.error is None, error=outcome.error)

    # shared state --------------------------------------------------------------
    def accounts(self, balances: list[int]):
        raise NotImplementedError

    def lock(self):
        raise NotImplementedError

    def channel(self, maxsize: int = 0):
        raise NotImplementedError


class MemoryAccounts:
    """Balances in the caller's memory, for tiers whose tasks share it.

    ``read``/``write`` are separate steps on purpose: a read-modify-write built from them
    can lose updates. ``apply_atomic`` is the store's own atomic operation, here guarded
    by an internal lock, exactly as ``multiprocessing.Value`` guards itself.
    """

    def __init__(self, balances: list[int]) -> None:
        self._balances = list(balances)
        self._guard = threading.Lock()

    def read(self, account: int) -> int:
        return self._balances[account]

    def write(self, account: int, value: int) -> None:
        self._balances[account] = value

    def apply_atomic(self, deltas: list, guard: bool):
        with self._guard:
            before, after = apply_deltas(self._balances, deltas, guard)
            return before, after, time.monotonic_ns()  # stamped inside: orders the history

    def snapshot(self) -> list[int]:
        return list(self._balances)

    def apply_optimistic(self, deltas: list, guard: bool, window_s: float):
        return optimistic(self, self._guard, self._balances, deltas, guard, window_s)


def optimistic(accounts, guard_lock, store, deltas: list, guard: bool, window_s: float,
               max_retries: int = 10_000):
    """Compare-and-set: read without any lock, think for ``window_s``, then commit only
    if the balances are still what was read (checked and written under the store's own
    guard, held for microseconds); otherwise read again. Comparing values rather than
    versions is enough here: the new balance depends only on the old one."""
    retries = 0
    while True:
        before = [accounts.read(a) for a, _ in deltas]
        if window_s:
            time.sleep(window_s)
        with guard_lock:
            if [store[a] for a, _ in deltas] == before:
                _, after = apply_deltas(store, deltas, guard)
                return before, after, time.monotonic_ns(), retries
        retries += 1
        if retries > max_retries:
            raise RuntimeError(f"gave up after {retries} conflicting retries")


def apply_deltas(balances, deltas: list, guard: bool) -> tuple[list[int], list[int] | None]:
    """Apply ``[(account, delta), ...]`` to an indexable store (the caller holds whatever
    makes this atomic). With ``guard``, refuse if any balance would go negative.
    Returns (values read, values written or None when refused)."""
    before = [balances[a] for a, _ in deltas]
    after = [b + d for b, (_, d) in zip(before, deltas)]
    if guard and any(v < 0 for v in after):
        return before, None
    for (account, _), value in zip(deltas, after):
        balances[account] = value
    return before, after


class TierFailure(RuntimeError):
    """The tier broke down mid-run (broker gone, workers dead, timeout). The message is
    one line and says how much work had completed."""
