"""The scenario interface: *what* runs, and how to judge it.

A scenario turns parameters and a seed into work, hands that work to a tier through the
tier's small interface (``map`` for independent tasks, ``run_actors`` plus shared-state
primitives for concurrent actors), and judges the result with its checker. It reads the
tier's capability flags where its verdict depends on them, and never names a tier.

Task functions live at module level in the scenario's module so that worker processes
and Celery workers can import them by name. A task that *waits* (sleeps, takes from a
channel, holds a lock) may also declare an ``async def`` twin with ``@coroutine_twin``:
a tier that runs an event loop awaits the twin instead, so the wait lets other work run.

Optional hooks (a scenario overrides them where it has something to say; the runner calls
them on every scenario): ``supported_by`` (refuse a tier before anything starts), ``oracle_params`` (what
the sequential baseline runs where it refuses these parameters),
``actors_needed`` (how many concurrent actors ``execute`` will ask for) and
``history_lines`` (every operation, for ``--history``).
"""
from __future__ import annotations

import inspect
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable


class BadInput(ValueError):
    """Parameters that cannot run; the message is one line for the user."""


@dataclass(frozen=True)
class Param:
    """One scenario option: ``--name`` on the command line, ``params[name]`` in code."""

    name: str
    type: type
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def convert(self, raw: Any) -> Any:
        try:
            value = self.type(raw)
            if self.type is int and isinstance(raw, float) and raw != int(raw):
                raise ValueError
        except (TypeError, ValueError):
            kind = {int: "an integer", float: "a number"}.get(self.type, self.type.__name__)
            raise BadInput(f"{self.flag} must be {kind}, got {raw!r}") from None
        if self.type is float and not math.isfinite(value):
            raise BadInput(f"{self.flag} must be a finite number, got {raw!r}")
        if self.choices is not None and value not in self.choices:
            raise BadInput(f"unknown {self.flag} {value!r}; choose from: {', '.join(map(str, self.choices))}")
        if self.min is not None and value < self.min:
            raise BadInput(f"{self.flag} must be at least {self.min}, got {value}")
        if self.max is not None and value > self.max:
            raise BadInput(f"{self.flag} must be at most {self.max}, got {value}")
        return value


@dataclass
class Execution:
    """What a scenario's run produced, before judging."""

    outcomes: list  # one workers.base.Outcome per task or actor
    units: int  # tasks, operations or items processed: the throughput numerator
    data: dict = field(default_factory=dict)  # scenario-specific observations


@dataclass
class Verdict:
    """The checker's judgement. ``answer`` is the canonical result that every tier must
    share with ``sequential``; ``unsafe`` marks configurations whose violations are the
    lesson (bank --strategy none), so the CLI reports them instead of failing."""

    ok: bool
    expected: Any
    actual: Any
    answer: Any = None
    details: dict = field(default_factory=dict)
    unsafe: bool = False

    def to_dict(self) -> dict:
        out = {"ok": self.ok, "expected": self.expected, "actual": self.actual,
               "unsafe": self.unsafe, "details": self.details}
        if "visible" in self.details:
            out["visible"] = self.details["visible"]
        return out


class Scenario:
    name = ""
    summary = ""
    params: tuple[Param, ...] = ()
    # Scaling sweeps (compare --scaling, taskrace.measuring.sweep): the option that says into how many
    # independent tasks the work is cut. Strong scaling raises it to the largest -n when the
    # user did not set it (the same work at every n, no worker left idle); weak scaling
    # multiplies it by n. None: the scenario runs as given (actors, whose number -n sets).
    scaling_param: str | None = None

    def __init__(self, params: dict | None = None, seed: int = 0) -> None:
        given = dict(params or {})
        unknown = set(given) - {p.name for p in self.params}
        if unknown:
            raise BadInput(f"{self.name} has no option {', '.join(sorted(unknown))}")
        self.p = {p.name: p.convert(given.get(p.name, p.default)) for p in self.params}
        self.seed = seed
        self.rng = random.Random(seed)
        self.validate()

    @property
    def strategy(self) -> str | None:
        return self.p.get("strategy")

    def validate(self) -> None:
        """Cross-parameter checks; raise BadInput."""

    def execute(self, tier) -> Execution:
        raise NotImplementedError

    def check(self, execution: Execution, tier) -> Verdict:
        raise NotImplementedError

    # optional hooks: the defaults say "nothing special" ----------------------------------
    def supported_by(self, tier_cls) -> str | None:
        """Why these parameters cannot run on ``tier_cls`` (one line), or None if they can.
        Asked before any process starts."""
        return None

    def oracle_params(self) -> dict:
        """Where ``sequential`` (the oracle) refuses these parameters because they only move
        work (mapreduce --reduce chord), the values it runs instead for the same answer;
        compare's baseline of such a series is read at them ({}: none)."""
        return {}

    def actors_needed(self, workers: int) -> int:
        """How many concurrent actors ``execute`` will start at ``-n workers`` (0: plain
        tasks only), so a tier can make room for them before the timed run."""
        return 0

    def task_count(self) -> int | None:
        """How many independent tasks these parameters make: the most workers that can be
        busy at once, so a point with more workers is task-starved (None: not a bag of
        tasks)."""
        return self.p[self.scaling_param] if self.scaling_param else None

    def history_lines(self, execution: Execution, tier_name: str) -> list[dict]:
        """Every operation of the run as JSON-able dicts, for ``--history`` (none here)."""
        return []


# --- coroutine twins ---------------------------------------------------------------------
# An event loop switches tasks only at ``await``: a plain task that sleeps blocks the whole
# loop. A scenario declares, beside such a task, an ``async def`` that does the same work
# awaiting instead of blocking; an event-loop tier finds it with ``twin_of``. A task with
# no twin runs inline on the loop, which is right for pure computing (and shows the cost).
_TWINS: dict[Callable, Callable] = {}


def coroutine_twin(task: Callable):
    """Decorator: the decorated ``async def`` is ``task``'s twin (same arguments, same
    result) for tiers that run an event loop."""
    def declare(twin: Callable) -> Callable:
        if not inspect.iscoroutinefunction(twin):
            raise TypeError(f"the coroutine twin of {task.__name__} must be an async def")
        _TWINS[task] = twin
        return twin
    return declare


def twin_of(task: Callable) -> Callable | None:
    """The coroutine twin declared for ``task``, or None: run it as it is."""
    return _TWINS.get(task)


def task_errors(outcomes) -> list[str]:
    """Errors raised inside tasks, as 'task N: message' lines."""
    return [f"task {o.index}: {o.error}" for o in outcomes if o.error]
