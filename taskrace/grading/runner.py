"""The grader: every check of a student's folder in a process of its own, with its timeout,
its memory limit and its points; a room of students the same way, side by side.

    from taskrace.grading.runner import grade
    score = grade("alice/", checks="exercises/lost-update/hidden/checks.py")
    score.earned, score.possible, score.ok, score.checks, score.to_json("alice.json")

Each check runs in ``python -m taskrace.grading.one`` (see there: a supervisor in a session
of its own, which forks the runner and sweeps every descendant when it ends), on a copy
of the student's folder, with an environment that names no broker of the grader's (a
check that needs Redis gets a private one; a check that needs Celery starts its workers).
Whatever a check does (hangs, eats memory, kills its own process) it is that check's
verdict alone: ``timeout``, ``crashed``; the others run as planned. Results come back as
JSON lines on a pipe, never pickle.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from taskrace import events
from taskrace.grading import CheckSpec
from taskrace.grading.exercises import MARKER, GradingError, exercise_of, get
from workers.infra.redact import redact_text

__all__ = ["grade", "grade_room", "students_in", "list_checks", "Score", "CheckResult", "GradingError",
           "STATUSES", "DEFAULT_MEMORY_MB"]

STATUSES = ("passed", "failed", "error", "timeout", "crashed")
NEEDS = ("redis", "celery")  # what a check may declare; "celery": it starts its workers itself
DEFAULT_MEMORY_MB = 2048  # per check process (and each process it starts): RLIMIT_AS
SETUP_S = 60.0  # the check's process up to its first run (imports, its Redis): not its timeout
TEARDOWN_S = 30.0  # after the verdict: the check's own clean-up (workers, Redis) before a sweep
STOP_WAIT_S = 15.0  # after SIGTERM to the supervisor: its SIGTERM/SIGKILL sweep and a margin
LIST_TIMEOUT_S = 60.0
SCORE_FORMAT = "taskrace-score/1"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
HINTS = {
    "SIGKILL": "did the solution kill its own process (os.kill, a pool's terminate), or run out of memory?",
    "SIGTERM": "did the solution stop its own process?",
    "SIGSEGV": "a crash inside C code, or past the memory limit",
    "SIGABRT": "an abort inside C code, or past the memory limit",
    "SIGXFSZ": "a file grew past the 256 MiB limit: printing in a loop?",
}


# --- what grading returns ------------------------------------------------------------
@dataclass
class CheckResult:
    name: str
    points: float
    earned: float
    status: str  # one of STATUSES
    message: str  # one line, what the student sees ("" when passed)
    runs: int  # runs started; a failure's run number
    seconds: float
    repeat: int = 1
    doc: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def result(self) -> str:
        """The score file's one-line result, as CS 544's tester writes it: "PASS (3/3)",
        else the status, the points and the message."""
        points = f"({_num(self.earned)}/{_num(self.points)})"
        if self.passed:
            return f"PASS {points}"
        return f"{self.status.upper()} {points}: {self.message}"

    def to_dict(self) -> dict:
        return {"name": self.name, "points": self.points, "earned": self.earned, "result": self.result,
                "status": self.status, "message": self.message, "runs": self.runs, "repeat": self.repeat,
                "seconds": round(self.seconds, 3), "doc": self.doc}


@dataclass
class Score:
    student: str  # the folder's name (a room's file name)
    folder: str
    exercise: str | None
    checks_file: str | None
    checks: list[CheckResult] = field(default_factory=list)
    error: str | None = None  # the folder could not be graded at all (one line)

    @property
    def earned(self) -> float:
        return sum(c.earned for c in self.checks)

    @property
    def possible(self) -> float:
        return sum(c.points for c in self.checks)

    @property
    def ok(self) -> bool:
        """Every check passed (and there was something to grade)."""
        return self.error is None and bool(self.checks) and all(c.passed for c in self.checks)

    def to_dict(self) -> dict:
        """The score file (docs/exercises.md, "The score file"): CS 544's ``score`` and
        ``full_score``, and one entry per check under ``tests``."""
        return {"format": SCORE_FORMAT, "student": self.student, "folder": self.folder,
                "exercise": self.exercise, "checks": self.checks_file,
                "score": self.earned, "full_score": self.possible, "ok": self.ok, "error": self.error,
                "tests": [c.to_dict() for c in self.checks]}

    def to_json(self, path) -> Path:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path


def _num(x: float) -> str:
    return f"{x:g}"


# --- which checks, which students ----------------------------------------------------
_listed: dict[tuple[str, int], list[CheckSpec]] = {}
_listed_lock = threading.Lock()


def list_checks(path) -> list[CheckSpec]:
    """The checks a checks file defines, read in a process of its own (the grader never
    imports an exercise's code); cached while the file is unchanged."""
    path = Path(path).resolve()
    if not path.is_file():
        raise GradingError(f"no checks file {path}")
    key = (str(path), path.stat().st_mtime_ns)
    with _listed_lock:
        if key in _listed:
            return _listed[key]
    try:
        proc = subprocess.run([sys.executable, "-m", "taskrace.grading.one", "--list", str(path)],
                              capture_output=True, text=True, timeout=LIST_TIMEOUT_S, env=child_env(),
                              cwd=path.parent, stdin=subprocess.DEVNULL)
        answer = json.loads(proc.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        raise GradingError(f"{path.name}: its checks could not be listed (does importing it hang or "
                           f"exit?)") from None
    if "error" in answer:
        raise GradingError(f"{path.name} does not load: {answer['error']}")
    specs = [CheckSpec(c["name"], c["points"], c["timeout"], c["repeat"], tuple(c["needs"]), c["doc"])
             for c in answer["checks"]]
    if not specs:
        raise GradingError(f"{path.name} defines no check (@check from taskrace.grading)")
    for s in specs:
        unknown = [n for n in s.needs if n not in NEEDS]
        if unknown:
            raise GradingError(f"{path.name}: check {s.name} needs {', '.join(unknown)}; "
                               f"a check may need: {', '.join(NEEDS)}")
    with _listed_lock:
        _listed[key] = specs
    return specs


def students_in(paths, checks_given: bool = False) -> tuple[list[Path], bool]:
    """(the student folders the paths hold, whether that is a room). A path is a student
    when it holds ``.taskrace-exercise``; a room when some of its subfolders do (then each
    subfolder is a student: one without the marker is graded with --checks, else scored
    as an error); with --checks and no marker anywhere, a folder with .py files is a
    student and one without is a room of its subfolders. Several paths are a room."""
    folders: list[Path] = []
    room = len(paths) > 1
    for p in map(Path, paths):
        if not p.is_dir():
            raise GradingError(f"{p} is not a folder")
        if (p / MARKER).is_file():
            folders.append(p)
            continue
        subs = sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith((".", "_")))
        if any((d / MARKER).is_file() for d in subs) or (checks_given and subs and not any(p.glob("*.py"))):
            room = True
            folders.extend(subs)
        elif checks_given:
            folders.append(p)
        else:
            raise GradingError(f"{p} holds no {MARKER}, nor do its subfolders: hand it out with "
                               f"`taskrace exercise start`, or give --checks")
    return folders, room


def _names(folders: list[Path]) -> list[str]:
    """Each student's name: the folder's, with its parent's in front where two clash."""
    names = [f.name for f in folders]
    return [f"{f.parent.name}-{f.name}" if names.count(f.name) > 1 else f.name for f in folders]


@dataclass
class _Plan:
    score: Score
    folder: Path
    checks: Path | None = None
    specs: list[CheckSpec] = field(default_factory=list)


def _plan(folder: Path, name: str, checks, hidden: bool, strict: bool) -> _Plan:
    """What grading ``folder`` means. ``strict`` (one student): a problem with the folder is
    bad input; in a room it is that student's error row."""
    score = Score(name, str(folder), None, None)
    try:
        score.exercise = exercise_of(folder)
        if checks is not None:
            path = Path(checks)
        elif score.exercise is None:
            raise GradingError(f"{folder} has no {MARKER} (which exercise is it?): "
                               f"give --checks, or hand it out with `taskrace exercise start`")
        else:
            path = get(score.exercise).checks(hidden)
            if not path.is_file():
                raise GradingError(f"exercise {score.exercise} has no {path.name}")
    except GradingError as exc:
        if strict:
            raise
        score.error = str(exc)
        return _Plan(score, folder)
    score.checks_file = str(path)
    return _Plan(score, folder, path, list_checks(path))  # a broken checks file: the teacher's, always bad input


# --- grading ----------------------------------------------------------------------------
def _validate(repeat_scale: float, jobs: int, memory_mb: int) -> None:
    if not repeat_scale > 0:
        raise GradingError(f"--repeat-scale must be > 0, got {repeat_scale}")
    if jobs < 1:
        raise GradingError(f"--jobs must be >= 1, got {jobs}")
    if memory_mb < 64:
        raise GradingError(f"the memory limit must be >= 64 MiB, got {memory_mb}")


def grade(student_dir, checks=None, hidden: bool = True, repeat_scale: float = 1.0, jobs: int = 1,
          memory_mb: int = DEFAULT_MEMORY_MB) -> Score:
    """Grade one student's folder. ``checks``: a checks file (default: the exercise's
    hidden checks, or its visible ones with ``hidden=False``, the exercise named by the
    folder's ``.taskrace-exercise``). ``repeat_scale`` multiplies every check's repeat;
    ``jobs`` checks run at a time. Bad input raises GradingError (one line)."""
    _validate(repeat_scale, jobs, memory_mb)
    folder = Path(student_dir)
    if not folder.is_dir():
        raise GradingError(f"{folder} is not a folder")
    plan = _plan(folder, folder.resolve().name, checks, hidden, strict=True)
    return _run([plan], repeat_scale, jobs, memory_mb)[0]


def grade_room(folders, checks=None, hidden: bool = True, repeat_scale: float = 1.0, jobs: int = 1,
               memory_mb: int = DEFAULT_MEMORY_MB) -> list[Score]:
    """Grade many students' folders (``students_in`` finds them), ``jobs`` checks at a time
    across all of them; a folder that cannot be graded is a Score with its ``error``."""
    _validate(repeat_scale, jobs, memory_mb)
    folders = [Path(f) for f in folders]
    plans = [_plan(f, name, checks, hidden, strict=False) for f, name in zip(folders, _names(folders))]
    return _run(plans, repeat_scale, jobs, memory_mb)


def _run(plans: list[_Plan], repeat_scale: float, jobs: int, memory_mb: int) -> list[Score]:
    work = [(plan, i, spec) for plan in plans for i, spec in enumerate(plan.specs)]
    for plan in plans:
        plan.score.checks = [None] * len(plan.specs)
    stop = threading.Event()
    done = [0]
    lock = threading.Lock()
    events.emit("run.start", command="grade", label="grading", total=len(work))

    def one(item):
        plan, i, spec = item
        repeat = max(1, round(spec.repeat * repeat_scale))
        result = run_check(plan.folder, plan.checks, spec, repeat, memory_mb, stop)
        plan.score.checks[i] = result
        with lock:
            done[0] += 1
            events.emit("step", label=f"{plan.score.student}: {spec.name} {result.status}",
                        done=done[0], total=len(work))

    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="taskrace-grade")
    try:
        for future in [pool.submit(one, item) for item in work]:
            future.result()
    except BaseException:
        stop.set()  # Ctrl-C: every running check is stopped and swept, the rest never start
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    events.emit("run.end", command="grade", exit_code=0 if all(p.score.ok for p in plans) else 1)
    return [plan.score for plan in plans]


# --- one check, one process --------------------------------------------------------------
def _scrubbed(name: str) -> bool:
    """The grader's own brokers and workers are not a check's: it gets its own Redis, and
    starts its own Celery workers (a lab's REDIS_URL or external workers never leak in)."""
    upper = name.upper()
    return upper.startswith(("TASKRACE_", "CELERY_")) or "REDIS" in upper


def child_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not _scrubbed(k)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a read-only folder (the lab mounts students so) is fine
    env["PYTHONUNBUFFERED"] = "1"
    env["MALLOC_ARENA_MAX"] = "2"  # glibc reserves 64 MiB of address space per thread arena: RLIMIT_AS counts it
    return env


class _Descendants:
    """Every process seen below the check's supervisor, remembered (psutil's objects know
    their start time, so a reused PID is never mistaken for one of them)."""

    def __init__(self, pid: int) -> None:
        import psutil

        self._psutil = psutil
        self.seen: dict[int, object] = {}
        self.last = float("-inf")
        try:
            self.root = psutil.Process(pid)
        except psutil.Error:
            self.root = None

    def poll(self, every: float = 0.0) -> None:
        """Remember the descendants there now (at most once per ``every`` seconds: reading
        /proc costs milliseconds, and the supervisor's sweep is the first line)."""
        now = time.monotonic()
        if self.root is None or now - self.last < every:
            return
        self.last = now
        try:
            for p in self.root.children(recursive=True):
                self.seen.setdefault(p.pid, p)
        except self._psutil.Error:
            pass

    def kill_left(self) -> None:
        for p in self.seen.values():
            try:
                if p.is_running() and p.status() != self._psutil.STATUS_ZOMBIE:
                    p.kill()
            except self._psutil.Error:
                pass


class _Follow:
    """The grader's side of one check's process: reads its JSON lines, keeps the clock
    (setup, then the check's timeout from its first run, then its clean-up), and stops it
    (SIGTERM to the supervisor, which sweeps) when a clock runs out."""

    def __init__(self, proc: subprocess.Popen, fd: int, spec: CheckSpec, repeat: int, stop: threading.Event):
        self.proc, self.fd, self.spec, self.repeat, self.stop_event = proc, fd, spec, repeat, stop
        self.watch = _Descendants(proc.pid)
        self.t0 = time.monotonic()
        self.phase, self.deadline = "setup", self.t0 + SETUP_S
        self.ready_at: float | None = None
        self.runs = 0
        self.verdict: dict | None = None
        self.seconds = 0.0
        self.exit: dict | None = None
        self.stopped: str | None = None

    def follow(self) -> None:
        buf = b""
        while self.exit is None:
            now = time.monotonic()
            if self.stop_event.is_set() and self.stopped is None:
                self._stop("interrupted")
            elif now >= self.deadline:
                if self.phase == "stopping":
                    return
                self._stop({"setup": "setup", "running": "timeout", "teardown": "teardown"}[self.phase])
            readable, _, _ = select.select([self.fd], [], [], max(0.0, min(0.25, self.deadline - now)))
            self.watch.poll(every=1.0)
            if not readable:
                if self.proc.poll() is not None:
                    return  # the supervisor is gone without its last word
                continue
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                try:
                    self._on(json.loads(line))
                except ValueError:
                    pass

    def _on(self, msg: dict) -> None:
        now = time.monotonic()
        kind = msg.get("kind")
        if kind == "ready" and self.phase == "setup":
            self.phase, self.ready_at, self.deadline = "running", now, now + self.spec.timeout
        elif kind == "run":
            self.runs = int(msg.get("n", self.runs))
        elif kind == "result" and self.verdict is None:
            self.verdict = msg
            self.seconds = float(msg.get("seconds", now - (self.ready_at or self.t0)))
            if self.phase != "stopping":
                self.phase, self.deadline = "teardown", now + TEARDOWN_S
        elif kind == "exit":
            self.exit = msg

    def _stop(self, why: str) -> None:
        self.stopped = why
        if why == "timeout":
            self.seconds = time.monotonic() - (self.ready_at or self.t0)
        try:
            os.kill(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        self.phase, self.deadline = "stopping", time.monotonic() + STOP_WAIT_S

    def end(self) -> None:
        """Nothing of the check is left when this returns."""
        if self.proc.poll() is None:
            if self.stopped is None:
                self._stop("teardown")
            try:
                self.proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                _killpg(self.proc.pid)
                self.proc.wait()
        if self.exit is None:  # the supervisor did not confirm its sweep: do it from here
            _killpg(self.proc.pid)
        self.watch.poll()
        self.watch.kill_left()

    def result(self) -> CheckResult:
        status, message, runs = self._outcome()
        message = redact_text(message)  # a URL's password, a secret's value: never in a score file
        earned = self.spec.points if status == "passed" else 0
        return CheckResult(self.spec.name, self.spec.points, earned, status, message, runs,
                           round(self.seconds, 3), self.repeat, self.spec.doc)

    def _outcome(self) -> tuple[str, str, int]:
        if self.verdict is not None:
            return self.verdict["status"], self.verdict.get("message", ""), int(self.verdict.get("runs", self.runs))
        during = (f" during run {self.runs} of {self.repeat}" if self.repeat > 1 else "") if self.runs else \
            " before its first run"
        if self.stopped == "timeout":
            running = f" (run {self.runs} of {self.repeat} was running)" if self.repeat > 1 else ""
            return ("timeout", f"did not finish within its timeout of {_num(self.spec.timeout)} s{running}: "
                               f"does it deadlock, or wait for something that never comes?", self.runs)
        if self.stopped == "setup":
            return "error", f"the check did not start within {_num(SETUP_S)} s", 0
        if self.stopped == "interrupted":
            return "error", "grading was interrupted", self.runs
        how = self.exit or {}
        if how.get("how") == "signal":
            sig = how["signal"]
            hint = HINTS.get(sig)
            return "crashed", f"the check's process was killed by {sig}{during}" + (f": {hint}" if hint else ""), \
                self.runs
        if how.get("how") == "exit":
            return ("crashed", f"the check's process exited (code {how['code']}){during} before its verdict: "
                               f"does the solution call os._exit or end its own process?", self.runs)
        return "crashed", f"the check's process ended without a verdict (code {self.proc.returncode})", self.runs


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_check(folder: Path, checks: Path, spec: CheckSpec, repeat: int, memory_mb: int = DEFAULT_MEMORY_MB,
              stop: threading.Event | None = None) -> CheckResult:
    """One check on a copy of ``folder``, in a process of its own; nothing it started is
    left when this returns."""
    work = Path(tempfile.mkdtemp(prefix="taskrace-check-"))
    copy = work / "student"
    try:
        shutil.copytree(folder, copy, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", ".git"))
    except (OSError, shutil.Error) as exc:
        shutil.rmtree(work, ignore_errors=True)
        return CheckResult(spec.name, spec.points, 0, "error", f"the folder could not be copied: {exc}"[:400],
                           0, 0.0, repeat, spec.doc)
    r, w = os.pipe()
    payload = {"fd": w, "checks": str(Path(checks).resolve()), "check": spec.name, "student": str(copy),
               "repeat": repeat, "needs": list(spec.needs), "memory_mb": memory_mb}
    try:
        with open(work / "output.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "taskrace.grading.one", json.dumps(payload)],
                                    pass_fds=(w,), start_new_session=True, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, cwd=copy, env=child_env())
    except BaseException:
        os.close(r)
        os.close(w)
        shutil.rmtree(work, ignore_errors=True)
        raise
    os.close(w)
    follow = _Follow(proc, r, spec, repeat, stop or threading.Event())
    try:
        follow.follow()
    finally:
        follow.end()
        os.close(r)
        shutil.rmtree(work, ignore_errors=True)
    return follow.result()
