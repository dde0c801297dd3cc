"""Starting and stopping real ``celery worker`` processes.

Each worker is ``python -m celery -A workers.celery_app worker`` in its own session
(Ctrl-C in the terminal reaches the harness, which stops the workers in order, instead
of racing it). The broker URL travels in the environment, never on the command line,
so the password does not show in ``ps``. A worker is a main process plus its pool
children, so stopping means: snapshot the whole tree, SIGTERM the parents (warm
shutdown), wait together, SIGKILL whatever is left.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Celery reads these in preference to the app's configured URLs: a stray one in the
# user's shell would silently send the workers to another broker.
CELERY_ENV_OVERRIDES = ("CELERY_BROKER_URL", "CELERY_BROKER_READ_URL", "CELERY_BROKER_WRITE_URL",
                        "CELERY_RESULT_BACKEND", "CELERY_CONFIG_MODULE")


POOLS = ("prefork", "threads", "solo")  # celery worker --pool: the ones a worker here may use
# Modules (and their submodules) besides scenarios. whose functions a worker may call, comma-
# separated, as its operator says (workers.celery_app._resolve): the workers the celery tier
# starts for taskrace.race get the race's function's module; the lab's, the notebooks' folder.
TASK_MODULES_ENV = "TASKRACE_TASK_MODULES"


def die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM us if the harness dies, even by
    SIGKILL, when no clean-up code can run. Elsewhere a no-op."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def worker_env(broker_url: str, extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in CELERY_ENV_OVERRIDES}
    env["TASKRACE_BROKER_URL"] = broker_url
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def worker_argv(name: str, queues: str, concurrency: int = 1, pool: str = "prefork",
                loglevel: str = "INFO", events: bool = False) -> list[str]:
    # `sys.executable -m celery`: the same interpreter as the harness (venvs, shims).
    # No gossip/mingle/heartbeat: workers need not know each other, and it starts faster.
    # events: -E, Celery's task events (workers.celery_events), only when someone listens
    # to them; off, a worker sends none (and can still be asked to: enable_events()).
    return [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
            "--pool", pool, "--concurrency", str(concurrency), "-n", f"{name}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            *(["-E"] if events else []), "-Q", queues, "--loglevel", loglevel]


@dataclass
class CeleryWorker:
    name: str
    proc: subprocess.Popen
    log_path: Path
    started_at: float
    ready_after: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tree_pids(self) -> set[int]:
        try:
            return {self.pid} | {c.pid for c in psutil.Process(self.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            return set()


def start_worker(broker_url: str, name: str, log_dir: Path, env: dict | None = None,
                 events: bool = False, **argv_options) -> CeleryWorker:
    """``events``: the worker sends Celery's task events (-E); see worker_argv."""
    log_path = Path(log_dir, f"{name}.log")
    with open(log_path, "wb") as log:
        argv = worker_argv(name, events=events, **argv_options)
        proc = subprocess.Popen(argv, env=worker_env(broker_url, env),
                                cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=die_with_parent if sys.platform == "linux" else None)
    return CeleryWorker(name, proc, log_path, time.monotonic())


def wait_ready(workers: list[CeleryWorker], timeout: float = 60.0) -> None:
    """Block until every worker logged '<node> ready.'. Start them all first, then wait:
    they boot in parallel (about 0.5 s each here)."""
    deadline = time.monotonic() + timeout
    pending = list(workers)
    while pending:
        for w in list(pending):
            if " ready." in w.log():
                w.ready_after = time.monotonic() - w.started_at
                pending.remove(w)
            elif w.proc.poll() is not None:
                tail = " | ".join(w.log().strip().splitlines()[-3:])
                raise RuntimeError(f"celery worker {w.name} exited with code {w.proc.returncode}: {tail}")
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"celery workers {[w.name for w in pending]} not ready after {timeout:.0f} s")
        time.sleep(0.05)


def kill_trees(pids, timeout: float = 10.0) -> None:
    """Terminate processes and all their descendants, then kill stragglers. Parents are
    signalled first and waited on together: an idle worker needs ~2.5 s to shut down."""
    parents, procs = [], []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            procs += [p] + p.children(recursive=True)  # snapshot before the parent reaps them
            parents.append(p)
        except psutil.NoSuchProcess:
            pass
    for p in parents:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


def stop_workers(workers: list[CeleryWorker], timeout: float = 10.0) -> None:
    # poll() first: once reaped, a PID may belong to someone else.
    live = [w for w in workers if w.proc.poll() is None]
    kill_trees([w.pid for w in live], timeout)
    for w in live:
        try:
            w.proc.wait(5)  # reap, so the PID really disappears
        except subprocess.TimeoutExpired:
            pass
