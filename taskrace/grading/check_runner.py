"""The runner half of one check's process (``taskrace.grading.one`` forks it): limits,
the check's Redis, the repeats, and a verdict in one line.

What the student sees is never a traceback: an exception is said as the place in the
student's files it came from (``solution.py, line 12: ZeroDivisionError: division by
zero``), found by walking the traceback for the deepest frame inside their folder.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import resource
import sys
import time
import traceback
from pathlib import Path

from taskrace.grading.wire import one_line, send

MIB = 1024 * 1024
FILE_LIMIT_MB = 256  # no file written past this (a print loop would fill a tmpfs: RAM)


def _limit(kind: int, value: int) -> None:
    soft, hard = resource.getrlimit(kind)
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(kind, (value, value))


def set_limits(memory_mb: int) -> None:
    """Address space (a memory eater gets MemoryError here, not the machine's OOM killer),
    file size, no core files. The check's children (workers, redis-server) inherit them."""
    _limit(resource.RLIMIT_AS, memory_mb * MIB)
    _limit(resource.RLIMIT_FSIZE, FILE_LIMIT_MB * MIB)
    _limit(resource.RLIMIT_CORE, 0)


def import_checks(path: str):
    """A checks file as a module of its own name (its folder importable, for helpers)."""
    path = str(Path(path).resolve())
    folder = str(Path(path).parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = "taskrace_checks_" + hashlib.sha1(path.encode()).hexdigest()[:10]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _inside(filename: str, folder: Path | None) -> str | None:
    """``filename`` relative to ``folder`` if it is inside it."""
    if folder is None or not filename:
        return None
    try:
        return Path(filename).resolve().relative_to(folder).as_posix()
    except ValueError:
        return None


def locate(exc: BaseException, student: Path | None, checks: str | None) -> str:
    """``"solution.py, line 12: "``: where ``exc`` came from, in the student's files if it
    passed through them (the deepest such frame), else in the checks; "" if nowhere known."""
    student = student.resolve() if student else None
    if isinstance(exc, SyntaxError) and exc.filename:
        rel = _inside(exc.filename, student) or Path(exc.filename).name
        return f"{rel}, line {exc.lineno}: "
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        rel = _inside(frame.filename, student)
        if rel:
            return f"{rel}, line {frame.lineno}: "
    if checks:
        for frame in reversed(frames):
            if Path(frame.filename).resolve() == Path(checks).resolve():
                return f"{Path(checks).name}, line {frame.lineno}: "
    return ""


def in_student_code(exc: BaseException, student: Path) -> bool:
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and _inside(frames[-1].filename, student.resolve()) is not None


def verdict(exc: BaseException, student: Path, checks: str, memory_mb: int) -> tuple[str, str]:
    """(status, one-line message) for what a run of the check raised."""
    from taskrace.grading import Fail, StudentError

    where = locate(exc, student, checks)
    if isinstance(exc, MemoryError):
        at = f" ({where[:-2]})" if where else ""
        return "crashed", f"ran out of its memory limit of {memory_mb} MiB{at}"
    if isinstance(exc, StudentError):
        return "error", one_line(str(exc))
    if isinstance(exc, Fail):
        return "failed", one_line(str(exc) or f"{where}failed")
    if isinstance(exc, AssertionError) and not in_student_code(exc, student):
        return "failed", one_line(str(exc) or f"{where}assertion failed")
    if isinstance(exc, SyntaxError):
        return "error", one_line(f"{where}{exc.msg}")
    text = str(exc)
    return "error", one_line(f"{where}{type(exc).__name__}" + (f": {text}" if text else ""))


@contextlib.contextmanager
def provided(needs: list[str], student):
    """What the check declared it needs, up for the length of the check."""
    with contextlib.ExitStack() as stack:
        if "redis" in needs:
            from workers.infra.redis_server import EmbeddedRedis

            server = stack.enter_context(EmbeddedRedis())
            student.redis_url = server.url
        yield


def run_check(spec: dict, fd: int) -> int:
    """Run one check ``spec["repeat"]`` times; stop at the first run that does not pass.
    Says ``ready`` (the timeout starts), ``run`` before each run, then ``result``."""
    set_limits(spec["memory_mb"])
    student_dir = Path(spec["student"])
    sys.path.insert(0, str(student_dir))  # a solution may import its own helper modules
    from taskrace.grading import Student, checks_of

    checks = spec["checks"]
    try:
        module = import_checks(checks)
        fn = next(f for s, f in checks_of(module) if s.name == spec["check"])
    except BaseException as exc:  # noqa: BLE001 - the checks file itself: said in one line
        send(fd, kind="result", status="error", runs=0,
             message=one_line(f"the checks could not load: {locate(exc, None, checks)}{type(exc).__name__}: {exc}"))
        return 0
    student = Student(student_dir)
    repeat, memory_mb = spec["repeat"], spec["memory_mb"]
    try:
        with provided(spec["needs"], student):
            send(fd, kind="ready")
            t0 = time.perf_counter()
            for n in range(1, repeat + 1):
                send(fd, kind="run", n=n)
                try:
                    fn(student)
                except BaseException as exc:  # noqa: BLE001 - whatever it is, it is the verdict
                    status, message = verdict(exc, student_dir, checks, memory_mb)
                    if repeat > 1:
                        message = f"run {n} of {repeat}: {message}"
                    send(fd, kind="result", status=status, message=message, runs=n,
                         seconds=time.perf_counter() - t0)
                    return 0
            send(fd, kind="result", status="passed", message="", runs=repeat, seconds=time.perf_counter() - t0)
    except MemoryError:
        send(fd, kind="result", status="crashed", runs=0,
             message=f"ran out of its memory limit of {memory_mb} MiB")
    except Exception as exc:  # noqa: BLE001 - a need could not be set up (the grader's side)
        send(fd, kind="result", status="error", runs=0,
             message=one_line(f"the check's {', '.join(spec['needs'])} could not start: "
                              f"{type(exc).__name__}: {exc}"))
    return 0
