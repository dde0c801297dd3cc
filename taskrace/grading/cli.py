"""``taskrace exercise list | start NAME DIR | check DIR`` (students) and ``taskrace grade
DIR... --checks HIDDEN --json score.json | --out SCORES`` (teachers): their parsers,
handlers and tables. What grading does is ``taskrace.grading.runner``'s.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from taskrace.grading.exercises import MARKER, GradingError, all_exercises, exercise_of, root, start
from taskrace.grading.runner import DEFAULT_MEMORY_MB, Score, grade, grade_room, students_in
from taskrace.options import Parser, UsageError, check_writable, whole_number
from taskrace.progress import ProgressBar

EXIT_OK, EXIT_FAILED = 0, 1
STYLE = {"passed": "green", "failed": "red", "error": "red", "timeout": "yellow", "crashed": "magenta"}
LETTER = {"passed": "P", "failed": "F", "error": "E", "timeout": "T", "crashed": "C"}
SUMMARY_FORMAT = "taskrace-scores/1"


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise GradingError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise GradingError(f"expected a number > 0, got {text}")
    return value


def _common(p) -> None:
    p.add_argument("--jobs", "-j", type=whole_number, default=1, metavar="N",
                   help="checks run at a time, each in its own process (default 1)")
    p.add_argument("--memory", type=whole_number, default=DEFAULT_MEMORY_MB, metavar="MIB",
                   help=f"address-space limit of each check's process, in MiB (default {DEFAULT_MEMORY_MB})")
    p.add_argument("--no-progress", action="store_true")


def add_exercise_parser(sub) -> None:
    p = sub.add_parser("exercise", help="exercises for students: list, start NAME DIR, check DIR")
    ex = p.add_subparsers(dest="exercise_command", parser_class=Parser)
    ex.add_parser("list", help="every exercise: its order, name, title and what it teaches")
    s = ex.add_parser("start", help="copy an exercise's starter, statement and visible checks into DIR")
    s.add_argument("name", metavar="NAME")
    s.add_argument("dir", metavar="DIR")
    c = ex.add_parser("check", help="run the exercise's visible checks on DIR (exit 0: all pass)")
    c.add_argument("dir", metavar="DIR")
    _common(c)


def add_grade_parser(sub) -> None:
    p = sub.add_parser("grade", help="grade students' folders (one, or a room of them) with the hidden checks")
    p.add_argument("dirs", nargs="+", metavar="DIR",
                   help="a student's folder, or a folder of students' folders (a room)")
    p.add_argument("--checks", metavar="CHECKS.py",
                   help="the checks file (default: the exercise's hidden/checks.py, named by .taskrace-exercise)")
    p.add_argument("--visible", action="store_true", help="grade with the exercise's visible checks instead")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", metavar="FILE", help="one student: write the score file here")
    out.add_argument("--out", metavar="DIR", help="write one score file per student here, and a room's "
                     "summary.json and summary.csv")
    p.add_argument("--repeat-scale", type=_positive, default=1.0, metavar="X",
                   help="multiply every check's repeat by X (default 1)")
    _common(p)


# --- exercise ----------------------------------------------------------------------------
def cmd_exercise(args, console: Console) -> int:
    command = getattr(args, "exercise_command", None)
    if command == "list":
        return _list(console)
    if command == "start":
        return _start(args, console)
    if command == "check":
        return _check(args, console)
    raise UsageError("taskrace exercise: choose list, start NAME DIR or check DIR")


def _list(console: Console) -> int:
    exercises = all_exercises()
    if not exercises:
        raise GradingError(f"no exercises found (looked in {root() or 'exercises/'}; "
                           f"TASKRACE_EXERCISES names another folder)")
    table = Table(box=box.SIMPLE_HEAD, title="taskrace exercises", title_justify="left", pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("exercise", no_wrap=True)
    table.add_column("title: what it teaches")
    for ex in exercises:
        table.add_row(str(ex.order), ex.name, f"[bold]{escape(ex.title)}[/]: {escape(ex.teaches)}")
    console.print(table)
    console.print("start one: taskrace exercise start NAME DIR", markup=False, highlight=False)
    return EXIT_OK


def _start(args, console: Console) -> int:
    written = start(args.name, Path(args.dir))
    console.print(f"{args.name} is in {args.dir}: {', '.join(f for f in written if f != MARKER)}",
                  markup=False, highlight=False, soft_wrap=True)
    console.print(f"read {Path(args.dir) / 'README.md'}, fill the gaps marked TODO(student), then:\n"
                  f"  taskrace exercise check {args.dir}", markup=False, highlight=False)
    return EXIT_OK


def _check(args, console: Console) -> int:
    folder = Path(args.dir)
    if not folder.is_dir():
        raise GradingError(f"{folder} is not a folder")
    name = exercise_of(folder)
    if name is None:
        raise GradingError(f"{folder} has no {MARKER}: start an exercise there first "
                           f"(taskrace exercise start NAME {folder})")
    with ProgressBar(Console(stderr=True), disable=args.no_progress):
        score = grade(folder, hidden=False, jobs=args.jobs, memory_mb=args.memory)
    print_score(score, console)
    if score.ok:
        console.print("every visible check passes; the hidden checks try harder (more runs, more "
                      "interleavings)", markup=False, highlight=False)
    return EXIT_OK if score.ok else EXIT_FAILED


# --- grade -------------------------------------------------------------------------------
def cmd_grade(args, console: Console) -> int:
    folders, room = students_in(args.dirs, checks_given=args.checks is not None)
    if room and args.json:
        raise UsageError("a room gets one score file per student: give --out DIR, not --json")
    if args.checks and not Path(args.checks).is_file():
        raise GradingError(f"--checks {args.checks}: no such file")
    check_writable(args.json)
    out = _out_dir(args.out)
    options = dict(checks=args.checks, hidden=not args.visible, repeat_scale=args.repeat_scale, jobs=args.jobs,
                   memory_mb=args.memory)
    with ProgressBar(Console(stderr=True), disable=args.no_progress):
        scores = grade_room(folders, **options) if room else [grade(folders[0], **options)]
    if room:
        print_summary(scores, console)
    else:
        print_score(scores[0], console)
    written = []
    if args.json:
        written.append(scores[0].to_json(args.json))
    if out:
        written += [s.to_json(out / f"{s.student}.json") for s in scores]
        if room:
            written += write_summary(scores, out)
    if written:
        where = args.json or f"{out}/"
        files = f"{len(written)} file{'s' if len(written) > 1 else ''}"
        console.print(f"scores: {files} written to {where}", markup=False, highlight=False)
    return EXIT_OK if all(s.ok for s in scores) else EXIT_FAILED


def _out_dir(path: str | None) -> Path | None:
    if not path:
        return None
    out = Path(path)
    try:
        out.mkdir(parents=False, exist_ok=True)
    except OSError as exc:
        raise GradingError(f"--out {path}: cannot make the folder ({exc.strerror or exc})") from None
    check_writable(str(out / "summary.json"))
    return out


# --- tables and files ------------------------------------------------------------------
def _points(x: float) -> str:
    return f"{x:g}"


def print_score(score: Score, console: Console) -> None:
    """One student's checks: points, status and the one-line message."""
    title = f"{score.student}: {score.exercise or Path(score.checks_file or '').name}, " \
            f"{_points(score.earned)}/{_points(score.possible)} points"
    if score.error:
        console.print(f"{score.student}: not graded: {score.error}", markup=False, highlight=False, soft_wrap=True)
        return
    table = Table(box=box.SIMPLE_HEAD, title=escape(title), title_justify="left", pad_edge=False)
    table.add_column("check", no_wrap=True, max_width=28)
    table.add_column("points", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("what to look at")
    for c in score.checks:
        table.add_row(c.name, f"{_points(c.earned)}/{_points(c.points)}",
                      f"[{STYLE[c.status]}]{c.status}[/]", escape(c.message or c.doc))
    console.print(table)


def print_summary(scores: list[Score], console: Console) -> None:
    """A room: one row per student, a letter per check (P passed, F failed, E error,
    T timeout, C crashed), in the checks' order."""
    table = Table(box=box.SIMPLE_HEAD, title=f"taskrace grade: {len(scores)} students", title_justify="left",
                  pad_edge=False)
    table.add_column("student", no_wrap=True, max_width=24)
    table.add_column("exercise", no_wrap=True, max_width=20)
    table.add_column("points", justify="right", no_wrap=True)
    table.add_column("checks")
    for s in scores:
        letters = "".join(f"[{STYLE[c.status]}]{LETTER[c.status]}[/]" for c in s.checks)
        table.add_row(escape(s.student), escape(s.exercise or "-"),
                      f"{_points(s.earned)}/{_points(s.possible)}" if not s.error else "-",
                      letters or f"[red]{escape(s.error or '')}[/]")
    console.print(table)
    console.print("checks: P passed, F failed, E error, T timeout, C crashed (in the checks' order)",
                  markup=False, highlight=False)


def summary(scores: list[Score]) -> dict:
    return {"format": SUMMARY_FORMAT,
            "students": [{"student": s.student, "file": f"{s.student}.json", "exercise": s.exercise,
                          "score": s.earned, "full_score": s.possible, "ok": s.ok, "error": s.error,
                          "checks": {c.name: c.status for c in s.checks}} for s in scores]}


def write_summary(scores: list[Score], out: Path) -> list[Path]:
    """summary.json (every student's points and statuses) and summary.csv (a spreadsheet's
    view: one row per student, one column per check, the checks of every exercise)."""
    doc = summary(scores)
    (out / "summary.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    names: list[str] = []
    for s in scores:
        names += [c.name for c in s.checks if c.name not in names]
    with open(out / "summary.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["student", "exercise", "score", "full_score", "ok", *names, "error"])
        for s in scores:
            status = {c.name: c.status for c in s.checks}
            w.writerow([s.student, s.exercise or "", s.earned, s.possible, s.ok,
                        *[status.get(n, "") for n in names], s.error or ""])
    return [out / "summary.json", out / "summary.csv"]
