"""The Celery tier from the command line, and its faults: real Redis, real workers.

Each test runs ``python -m taskrace`` as a subprocess whose environment carries a unique
marker; every process of that run (workers, pool children, an embedded redis-server)
inherits it, so "no orphans" is checked by looking for the marker after the run, even
among processes re-parented to init. In CI nothing here may skip.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest
import redis

try:
    from celery_fixtures import require_redis_binary
    from celery_procs import MarkedRun, is_celery_worker, is_redis_server, tempdirs_of, wait_for, wait_gone
except ImportError:  # tests/ imported as a package
    from tests.celery_fixtures import require_redis_binary
    from tests.celery_procs import (MarkedRun, is_celery_worker, is_redis_server, tempdirs_of, wait_for,
                                    wait_gone)

from workers.infra.redis_server import EmbeddedRedis

QUICK_S = 60  # any command that fails before starting work
RUN_S = 120  # a whole run, or a run that must end after its broker went away
INTERRUPT_S = 30  # Ctrl-C: workers get 3 s to stop, then are killed; 30 s is a hang
# The run's Redis comes from --redis-url or from here: keep the caller's shell out of it.
NO_URL = ("REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "TASKRACE_EXTERNAL_WORKERS")


def _one_clean_line(run: MarkedRun) -> str:
    assert "Traceback" not in run.err, run.err[-3000:]
    lines = run.stderr_lines()
    assert len(lines) == 1, run.err[-3000:]
    return lines[0]


def _no_orphans(run: MarkedRun) -> None:
    assert wait_gone(list(run.seen)) == [], "processes of the run still alive"
    deadline = time.monotonic() + 10
    while (left := run.marked()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == [], f"orphans of the run: {[p.cmdline() for p in left]}"


def _workers_up(n: int):
    return lambda kids: sum(is_celery_worker(p) for p in kids) >= n


def _received(dirs) -> int:
    """Tasks received, as the workers' logs in ``dirs`` (tempdirs_of) say."""
    return sum(log.read_text(errors="replace").count("] received")
               for d in dirs for log in Path(d).glob("*.log"))


# --- 10. list -----------------------------------------------------------------------------

def test_list_shows_the_celery_backend():
    with MarkedRun("list") as run:
        assert run.communicate(QUICK_S) == 0, run.err
    line = next((ln for ln in run.out.splitlines() if ln.strip().startswith("celery ")), None)
    assert line is not None, run.out
    assert "unavailable" not in line and "Redis" in line
    assert "optimistic" in run.out  # the Redis-only bank strategy is listed


# --- 7. broker down before the run; bad URLs ------------------------------------------------

@pytest.fixture
def closed_port():
    """A loopback port that refuses connections (bound, never listening: no port race)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.mark.parametrize("via", ["flag", "env"])
def test_broker_down_before_the_run(closed_port, via):
    url = f"redis://:s3cretpw@127.0.0.1:{closed_port}/0"
    args = ["run", "power-io", "-b", "celery", "-n", "2", "--sleep", "0"]
    extra = {"REDIS_URL": url} if via == "env" else {}
    with MarkedRun(*args, *(["--redis-url", url] if via == "flag" else []), env=extra,
                   drop_env=NO_URL) as run:
        code = run.communicate(QUICK_S)
        _no_orphans(run)
    assert code == 2, (code, run.err)
    line = _one_clean_line(run)
    assert "s3cretpw" not in run.err + run.out
    assert f"127.0.0.1:{closed_port}" in line and "unavailable" in line


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379/0", "127.0.0.1:6379", "redis://127.0.0.1:notaport/0",
                                 "redis://[bad"])
def test_malformed_redis_url(url):
    with MarkedRun("run", "power-io", "-b", "celery", "--sleep", "0", "--redis-url", url,
                   drop_env=NO_URL) as run:
        code = run.communicate(QUICK_S)
        _no_orphans(run)
    assert code == 2, (code, run.err[-3000:])
    line = _one_clean_line(run)
    assert line.startswith("taskrace: error:")


# --- 6. REDIS_URL in the environment of a CLI run --------------------------------------------

def test_cli_uses_redis_url_env_and_never_shows_the_password(tmp_path):
    require_redis_binary()
    out_json = tmp_path / "run.json"
    with EmbeddedRedis() as server:
        with MarkedRun("run", "power-io", "-b", "celery", "-n", "1", "--tasks", "2", "--sleep", "0.5",
                       "--json", str(out_json), env={"REDIS_URL": server.url}, drop_env=NO_URL) as run:
            run.wait_for_children(_workers_up(1), RUN_S, "the celery worker")
            while run.popen.poll() is None:  # until the run ends: never a redis-server of its own
                assert not any(is_redis_server(p) for p in run.children()), "a second Redis was started"
                time.sleep(0.05)
            code = run.communicate(RUN_S)
            _no_orphans(run)
        r = redis.Redis.from_url(server.url)
        try:
            doc_text = out_json.read_text()
            doc = json.loads(doc_text)
            tier = doc["runs"][0]["tier"]
            run_id = tier["queue"].split(".", 1)[1]
            assert list(r.scan_iter(match=f"taskrace:{run_id}:*")) == []
            assert not r.exists(tier["queue"])
        finally:
            r.close()
    assert code == 0, run.err
    assert server.password not in run.out + run.err + doc_text
    assert tier["broker"] == server.redacted_url
    assert doc["runs"][0]["verdict"]["ok"]
    assert sum(doc["runs"][0]["nodes"].values()) == 2


# --- 8. the broker goes away mid-run ----------------------------------------------------------

def test_broker_lost_mid_run():
    require_redis_binary()
    server = EmbeddedRedis().start()
    try:
        with MarkedRun("run", "power-io", "-b", "celery", "-n", "2", "--tasks", "6", "--sleep", "1",
                       "--redis-url", server.url, drop_env=NO_URL) as run:
            run.wait_for_children(_workers_up(2), RUN_S, "two celery workers")
            r = redis.Redis.from_url(server.url)
            try:  # mid-run: the first results are in, four tasks are still to come
                wait_for(lambda: next(r.scan_iter(match="celery-task-meta-*"), None), RUN_S,
                         "the first task result")
            finally:
                r.close()
            run.children()  # snapshot the whole tree before the broker goes
            assert run.popen.poll() is None, "the run ended before the broker was stopped"
            server.stop()  # SIGTERM: Redis goes away while tasks are in flight
            code = run.communicate(RUN_S)
            _no_orphans(run)
    finally:
        server.stop()
    assert code in (1, 2), (code, run.err[-3000:])
    line = _one_clean_line(run)
    assert "broker" in line.lower(), line
    assert re.search(r"\d+/6\b", line), f"no count of completed tasks: {line}"
    assert server.password not in run.out + run.err


# --- 9. Ctrl-C --------------------------------------------------------------------------------

def test_ctrl_c_stops_workers_and_embedded_redis():
    require_redis_binary()
    with MarkedRun("run", "power-io", "-b", "celery", "-n", "2", "--tasks", "4", "--sleep", "20",
                   drop_env=NO_URL) as run:
        # Both workers' main processes and pool children (is_celery_worker matches both),
        # and the embedded redis-server: waited for, not slept for.
        run.wait_for_children(
            lambda k: _workers_up(2 * 2)(k) and any(is_redis_server(p) for p in k), RUN_S,
            "two celery workers with their pool children and the embedded redis-server")
        # Both workers have taken a task (each logs "Task ...[id] received" at INFO): waited
        # for in their logs, not slept for.
        dirs = wait_for(lambda: (d := tempdirs_of(run.children())) and _received(d) >= 2 and d, RUN_S,
                        "both workers to receive a task")
        assert len(run.seen) >= 1 + 2 * 2  # redis-server + 2 x (worker main + pool child)
        run.popen.send_signal(signal.SIGINT)  # to taskrace only; its workers run in sessions of their own
        code = run.communicate(INTERRUPT_S)
        _no_orphans(run)
    assert code == 130, (code, run.err[-3000:])
    line = _one_clean_line(run)
    assert "interrupted" in line
    assert dirs and [d for d in dirs if os.path.exists(d)] == []
