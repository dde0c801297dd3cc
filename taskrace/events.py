"""One event stream: what happens during a run, as it happens.

Every long operation (run, compare, faults, network) says what it is doing through
``emit``; whoever wants to know subscribes. Emitters never know who listens, and
listening changes nothing about what runs::

    emitters                                   subscribers
    --------                                   -----------
    commands    run.start/run.end, step, status  -> progress bars (taskrace.progress)
    runner      point.start/point.end (record)   -> --events FILE (taskrace.eventlog)
    tiers       task.queued/started/finished     -> a notebook's result (Recorder)
    celery      the same, from Celery's events   -> the live view
    fault lab   fault.fired/fault.healed, queue.depth, money.sample

An event is a kind, a wall-clock time (``t``, seconds since the epoch: comparable
across the hosts of a lab whose clocks agree) and plain JSON fields. Times a task
reports (``queued``, ``started``, ``finished``) are epoch seconds too; local tiers
measure with ``perf_counter`` and convert with ``epoch()``.

Cost: with nobody subscribed, ``emit`` is one truth test; tiers ask ``wants_tasks()``
once per batch and skip building task events altogether. Events are emitted only in
the process that subscribed (a forked pool child inherits the subscribers' objects,
but must not write to the parent's file or screen).
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

# Every kind the stream carries, with the fields it always has (others may be added).
KINDS: dict[str, tuple[str, ...]] = {
    "run.start": ("command",),            # a command began; "total": steps, when known
    "run.end": ("command",),              # ... ended; "exit_code"; run, compare: the final "records"
    "step": ("label", "done", "total"),   # one unit of a command's progress is done
    "status": ("text",),                  # what is going on now, in words
    "point.start": ("point", "scenario", "backend", "workers"),
    "point.end": ("point", "record"),     # its record, as the results file has it
    "sample.start": ("point", "warmup"),  # one timed run of a point begins
    "sample.end": ("point", "warmup", "wall_s", "ok"),
    "task.queued": ("backend", "index", "queued"),
    "task.started": ("backend", "index", "started", "worker"),
    "task.finished": ("backend", "index", "started", "finished", "worker", "ok"),
    "task.lost": ("backend", "index"),    # a task that will never finish (its worker died)
    "queue.depth": ("queue", "depth"),    # messages waiting; "unacked": taken, not acknowledged
    "money.sample": ("total", "expected"),
    "capacity": ("phase",),               # the CPU capacity probe, before / after
    "fault.fired": ("fault",),
    "fault.healed": ("fault",),
    "fault.result": ("run", "record"),    # one fault run's record, as the --json document has it
    "fault.contrast": ("record",),        # one run of the shared-memory contrast
    "cpu.sample": ("percent", "cores"),   # the machine's busy share, while the live view is on
}

# perf_counter is CLOCK_MONOTONIC on Linux, shared by every process of a host: one
# offset turns any of its readings (a pool child's too) into epoch seconds.
_OFFSET = time.time() - time.perf_counter()


def epoch(perf: float | None) -> float | None:
    """A ``time.perf_counter()`` reading of this host as seconds since the epoch."""
    return None if perf is None else round(perf + _OFFSET, 6)


@dataclass(frozen=True)
class Event:
    kind: str
    t: float
    data: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "t": self.t, **self.data}

    @classmethod
    def from_dict(cls, d: dict) -> "Event":
        d = dict(d)
        return cls(d.pop("kind"), d.pop("t"), d)

    def __getitem__(self, key):
        return self.data[key]

    def get(self, key, default=None):
        return self.data.get(key, default)


@dataclass
class _Subscription:
    fn: Callable[[Event], None]
    tasks: bool  # wants per-task events (the costly kind)


_subs: list[_Subscription] = []  # replaced, never mutated: emit reads it without a lock
_owner = os.getpid()
_lock = threading.Lock()
_context: dict = {}  # merged into every event: the point and repeat now running


def subscribe(fn: Callable[[Event], None], tasks: bool = True) -> "Subscription":
    """Call ``fn(event)`` for every event from now on, until the returned handle is
    closed (or used as a context manager). ``tasks=False``: not the per-task events,
    so a progress bar does not make the tiers (or Celery's workers) produce them.
    ``fn`` runs in the emitting thread: keep it quick, and never raise."""
    global _subs, _owner
    sub = _Subscription(fn, tasks)
    with _lock:
        if _owner != os.getpid():  # subscribed anew in a child: it owns its own stream
            _subs, _owner = [], os.getpid()
        _subs = [*_subs, sub]
    return Subscription(sub)


class Subscription:
    def __init__(self, sub: _Subscription) -> None:
        self._sub = sub

    def want_tasks(self, tasks: bool) -> None:
        """Start or stop getting per-task events (tiers read this at their next batch)."""
        self._sub.tasks = tasks

    def close(self) -> None:
        global _subs
        with _lock:
            _subs = [s for s in _subs if s is not self._sub]

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def active() -> bool:
    return bool(_subs) and _owner == os.getpid()


def wants_tasks() -> bool:
    """Whether anyone listens to per-task events: tiers check this once per batch."""
    return active() and any(s.tasks for s in _subs)


def emit(kind: str, **data) -> None:
    if not _subs or _owner != os.getpid():
        return
    subs = _subs
    if kind.startswith("task.") and not any(s.tasks for s in subs):
        return
    event = Event(kind, round(time.time(), 6), {**_context, **data} if _context else data)
    for sub in subs:
        if sub.tasks or not kind.startswith("task."):
            try:
                sub.fn(event)
            except Exception:  # noqa: BLE001 - a broken subscriber must not break the run
                pass


class context:
    """Fields added to every event emitted inside the block (the point running now).
    Process-wide, not per thread: a pool's threads emit for the point too."""

    def __init__(self, **fields) -> None:
        self.fields = fields

    def __enter__(self) -> "context":
        self.before = dict(_context)
        _context.update(self.fields)
        return self

    def __exit__(self, *exc) -> None:
        _context.clear()
        _context.update(self.before)


# subscribers ---------------------------------------------------------------------------
class Recorder:
    """Keeps every event in a list (``.events``): what a notebook's result holds."""

    def __init__(self, tasks: bool = True) -> None:
        self.events: list[Event] = []
        self._sub = subscribe(self.events.append, tasks=tasks)

    def close(self) -> None:
        self._sub.close()

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
