"""Grading a student's folder: the contract every exercise's checks are written against.

A check is a plain function in an exercise's ``checks`` module (visible or hidden)::

    from taskrace.grading import check, Fail, load_solution

    @check(points=3, timeout=60, repeat=20, needs=("redis",))
    def transfers_conserve_money(student: Student):
        bank = student.solution()            # the student's solution.py, imported fresh
        ...
        if lost:
            raise Fail("3 of 200 transfers lost an update: read and write happen under one lock?")

- A check passes when it returns, fails when it raises ``Fail`` (the message is shown to
  the student: it must teach) or ``AssertionError``; anything else the student's code
  raised is reported in one line (file:line: what), never a traceback.
- ``points``: what passing is worth. ``timeout``: seconds for all the repeats together;
  the grader stops the check's whole process group past it (a hang, a deadlock).
  ``repeat``: a race must hold every time, so the check runs that many times and fails on
  the first failure (the score says which run). ``needs``: what the check uses besides
  Python ("redis": ``student.redis_url`` is a Redis of its own; "celery": real workers
  are started by the check itself through taskrace, see the exercises).
- The grader (``taskrace grade``, ``taskrace exercise check``) runs each check in its
  own process, so one check that crashes, eats memory or kills its worker does not stop
  the others.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

_counter = itertools.count(1)

__all__ = ["check", "Fail", "CheckSpec", "Student", "StudentError", "checks_of", "load_solution", "stalled"]


class Fail(AssertionError):
    """A check's verdict with a message that teaches (shown to the student as is)."""


class StudentError(Exception):
    """The student's code could not be loaded or run: one line, file and line included."""


@dataclass(frozen=True)
class CheckSpec:
    name: str
    points: float = 1
    timeout: float = 60
    repeat: int = 1
    needs: tuple[str, ...] = ()
    doc: str = ""


def check(points: float = 1, timeout: float = 60, repeat: int = 1, needs: tuple[str, ...] = ()) -> Callable:
    """Mark a function of a checks module as a check (see the module's docstring)."""
    if repeat < 1 or timeout <= 0 or points < 0:
        raise ValueError("check needs repeat >= 1, timeout > 0 and points >= 0")

    def mark(fn: Callable) -> Callable:
        fn.__taskrace_check__ = CheckSpec(fn.__name__, points, timeout, repeat, tuple(needs),
                                          (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "")
        return fn
    return mark


def checks_of(module) -> list[tuple[CheckSpec, Callable]]:
    """The checks a module defines, in the order they are written."""
    found = [(fn.__taskrace_check__, fn) for fn in vars(module).values()
             if callable(fn) and hasattr(fn, "__taskrace_check__")]
    return sorted(found, key=lambda pair: pair[1].__code__.co_firstlineno)


@dataclass
class Student:
    """What a check is handed: the student's folder and what the grader set up for it."""
    folder: Path
    redis_url: str | None = None
    extra: dict = field(default_factory=dict)

    def solution(self, name: str = "solution"):
        """The student's ``<name>.py``, imported fresh (its own module name each time)."""
        return load_solution(self.folder, name)


def load_solution(folder: Path | str, name: str = "solution"):
    """Import ``folder/<name>.py`` as a fresh module. A missing file or a syntax error is a
    StudentError of one line: ``solution.py, line 12: invalid syntax``."""
    import importlib.util
    import sys

    path = Path(folder) / f"{name}.py"
    if not path.is_file():
        raise StudentError(f"{path.name} is missing from {folder}")
    try:
        source = path.read_text(encoding="utf-8")
        compile(source, str(path), "exec")
    except SyntaxError as err:
        raise StudentError(f"{path.name}, line {err.lineno}: {err.msg}") from None
    except UnicodeDecodeError:
        raise StudentError(f"{path.name} is not UTF-8 text") from None
    unique = f"{name}_{next(_counter)}" if name in sys.modules else name
    spec = importlib.util.spec_from_file_location(unique, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module
    spec.loader.exec_module(module)
    return module


def stalled(workers, done, after_s: float, poll_s: float = 0.02) -> bool:
    """Wait for ``workers`` (threads or processes: anything with ``is_alive()``) to end.
    ``done`` is their shared progress (a list or array of counts): True as soon as its sum
    has not moved for ``after_s`` seconds while some still run (a deadlock, a hang), False
    when they all ended. The check then says what that means for its exercise."""
    import time

    seen, since = -1, time.monotonic()
    while any(w.is_alive() for w in workers):
        now = sum(done)
        if now != seen:
            seen, since = now, time.monotonic()
        elif time.monotonic() - since > after_s:
            return True
        time.sleep(poll_s)
    return False
