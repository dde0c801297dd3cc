"""Process-watching helpers for the Celery tier tests (test_celery_tier.py, test_celery_faults.py).

Two ways to find what a run started:

* in this process: the descendants of the test process (psutil children);
* in a ``taskrace`` subprocess: every process whose environment carries a unique marker
  (``TASKRACE_TEST_MARK``). Celery workers, their pool children and an embedded
  redis-server all inherit the environment, so they are found even after their parent
  has died and they were re-parented to init (true orphans).

Everything here kills by PID only, and only processes this test run started.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

MARK = "TASKRACE_TEST_MARK"
GRACE_S = 10  # for processes to be reaped after their run ended


def cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def is_redis_server(p: psutil.Process) -> bool:
    try:
        return p.name() == "redis-server" or os.path.basename((p.cmdline() or [""])[0]) == "redis-server"
    except psutil.Error:
        return False


def is_celery_worker(p: psutil.Process) -> bool:
    """A ``celery -A workers.celery_app worker`` main process or one of its pool children."""
    line = cmdline(p)
    return "celery" in line and "workers.celery_app" in line and " worker" in line


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pids, timeout: float = GRACE_S) -> list[int]:
    """The PIDs still alive after ``timeout`` (zombies count as gone)."""
    deadline = time.monotonic() + timeout
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    return left


def descendants(pid: int | None = None) -> list[psutil.Process]:
    try:
        return [c for c in psutil.Process(pid).children(recursive=True) if alive(c.pid)]
    except psutil.Error:
        return []


def kill_pids(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def tempdirs_of(procs) -> set[str]:
    """The temporary directories a run's processes live in: an embedded redis-server's
    working directory (its ``--dir``) and the directory of each celery worker's log file."""
    dirs = set()
    for p in procs:
        try:
            if is_redis_server(p):
                dirs.add(p.cwd())
            elif is_celery_worker(p):
                dirs.update(os.path.dirname(f.path) for f in p.open_files() if f.path.endswith(".log"))
        except psutil.Error:
            pass
    return dirs


# --- taskrace subprocesses, marked ---------------------------------------------------------

class MarkedRun:
    """``python -m taskrace ARGS`` as a subprocess whose whole process tree carries a
    unique environment marker. Use as a context manager: on exit, anything still alive
    that carries the marker is killed by PID (so a failing test leaves nothing behind)."""

    def __init__(self, *args: str, env: dict | None = None, drop_env: tuple = ()) -> None:
        self.mark = uuid.uuid4().hex
        full_env = {k: v for k, v in os.environ.items() if k not in drop_env}
        full_env.update(COLUMNS="200", PYTHONUNBUFFERED="1", **{MARK: self.mark})
        full_env.update(env or {})
        self.args = args
        self.popen = subprocess.Popen([sys.executable, "-m", "taskrace", *args], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=full_env)
        self.seen: dict[int, psutil.Process] = {}
        self.out = self.err = ""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def marked(self) -> list[psutil.Process]:
        """Every live process (but the taskrace process itself) carrying this run's marker."""
        found = []
        for p in psutil.process_iter():
            if p.pid in (os.getpid(), self.pid):
                continue
            try:
                if p.environ().get(MARK) == self.mark and p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
            except psutil.Error:
                continue
        return found

    def children(self) -> list[psutil.Process]:
        current = descendants(self.pid)
        for c in current:
            self.seen.setdefault(c.pid, c)
        return current

    def wait_for_children(self, predicate, timeout: float, what: str) -> list[psutil.Process]:
        def ready():
            if self.popen.poll() is not None:
                out, err = self.popen.communicate(timeout=10)
                pytest.fail(f"taskrace exited ({self.popen.returncode}) before {what}: {err[-2000:]}")
            kids = self.children()
            return kids if predicate(kids) else None
        return wait_for(ready, timeout, what)

    def communicate(self, timeout: float) -> int:
        try:
            self.out, self.err = self.popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.send_signal(signal.SIGINT)  # let it clean up its workers, then insist
            try:
                self.out, self.err = self.popen.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.out, self.err = self.popen.communicate(timeout=10)
            pytest.fail(f"taskrace {' '.join(self.args)} still running after {timeout:.0f} s "
                        f"(hang); stderr: {self.err[-2000:]}")
        return self.popen.returncode

    def stderr_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    def __enter__(self) -> "MarkedRun":
        return self

    def __exit__(self, *exc) -> None:
        if self.popen.poll() is None:  # a test failed mid-run: let taskrace clean up first (Ctrl-C)
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.communicate(timeout=10)
        kill_pids(p.pid for p in self.marked())  # only processes carrying this run's marker
