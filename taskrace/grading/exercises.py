"""Where the exercises are, what each one is, and handing one out.

An exercise is a folder ``exercises/<name>/`` (docs/exercises.md, "The format"):
``exercise.json`` (title, teaches, files, order), ``README.md`` (the statement),
``starter/`` (what the student receives), ``visible.py`` (the checks the student runs)
and ``hidden/`` (the hidden checks, the reference solution, plausible wrong ones).

The exercises are found, in this order: ``$TASKRACE_EXERCISES`` (a folder of exercises:
a course's own, or a test's), ``exercises/`` beside the ``taskrace`` package (a checkout,
``pip install -e .``), ``<prefix>/share/taskrace/exercises`` (the lab image copies them
there). A student's folder names its exercise in ``.taskrace-exercise`` (one line of JSON),
which ``start`` writes and ``check`` and ``grade`` read.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from taskrace.options import UsageError

MARKER = ".taskrace-exercise"
ENV = "TASKRACE_EXERCISES"
CHECKOUT = Path(__file__).resolve().parents[2] / "exercises"
INSTALLED = Path(sys.prefix, "share", "taskrace", "exercises")


class GradingError(UsageError):
    """Bad input to the grader (a folder, an exercise, a checks file): one line, exit 2."""


@dataclass(frozen=True)
class Exercise:
    name: str
    path: Path
    title: str
    teaches: str
    files: tuple[str, ...]
    order: int

    @property
    def visible(self) -> Path:
        return self.path / "visible.py"

    @property
    def hidden(self) -> Path:
        return self.path / "hidden" / "checks.py"

    def checks(self, hidden: bool) -> Path:
        return self.hidden if hidden else self.visible


def root() -> Path | None:
    """The folder the exercises are read from (None: there is none)."""
    given = os.environ.get(ENV)
    if given:
        return Path(given)
    for candidate in (CHECKOUT, INSTALLED):
        if candidate.is_dir():
            return candidate
    return None


def _read(folder: Path) -> Exercise:
    try:
        meta = json.loads((folder / "exercise.json").read_text(encoding="utf-8"))
        return Exercise(folder.name, folder, str(meta["title"]), str(meta.get("teaches", "")),
                        tuple(meta.get("files") or ("solution.py",)), int(meta.get("order", 999)))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GradingError(f"exercise {folder.name}: exercise.json is unreadable ({type(exc).__name__}: "
                           f"{exc})") from None


def all_exercises() -> list[Exercise]:
    """Every exercise, in teaching order (then by name)."""
    base = root()
    if base is None or not base.is_dir():
        return []
    found = [_read(d) for d in base.iterdir() if (d / "exercise.json").is_file()]
    return sorted(found, key=lambda e: (e.order, e.name))


def get(name: str) -> Exercise:
    known = all_exercises()
    for ex in known:
        if ex.name == name:
            return ex
    choices = ", ".join(e.name for e in known) or f"none found (set {ENV} to a folder of exercises)"
    raise GradingError(f"unknown exercise {name!r}; choose from: {choices}")


def exercise_of(folder: Path) -> str | None:
    """The exercise a student's folder says it holds (None: no marker)."""
    marker = Path(folder) / MARKER
    if not marker.is_file():
        return None
    try:
        name = json.loads(marker.read_text(encoding="utf-8"))["exercise"]
    except (OSError, ValueError, KeyError, TypeError):
        raise GradingError(f"{marker} is not what `taskrace exercise start` writes "
                           f"(one line of JSON: {{\"exercise\": NAME}})") from None
    if not isinstance(name, str) or not name:
        raise GradingError(f"{marker} names no exercise")
    return name


def start(name: str, folder: Path) -> list[str]:
    """Copy exercise ``name``'s starter, statement and visible checks into ``folder``
    (made if missing) and mark it; returns the files written. Never overwrites a
    student's work: a folder that holds anything already is refused, in one line."""
    ex = get(name)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise GradingError(f"{folder} is a file, not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        held = exercise_of(folder)
        if held == name:
            raise GradingError(f"{folder} already holds {name} (your work is kept): "
                               f"taskrace exercise check {folder}")
        if held:
            raise GradingError(f"{folder} holds another exercise ({held}): choose a new folder for {name}")
        raise GradingError(f"{folder} is not empty: choose a new folder for {name}")
    starter = ex.path / "starter"
    if not starter.is_dir():
        raise GradingError(f"exercise {name} has no starter/ folder")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(starter, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    for extra in ("README.md", "visible.py"):
        if (ex.path / extra).is_file():
            shutil.copy(ex.path / extra, folder / extra)
    (folder / MARKER).write_text(json.dumps({"exercise": name}) + "\n", encoding="utf-8")
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
