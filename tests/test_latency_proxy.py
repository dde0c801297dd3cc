"""The latency proxy (workers.infra.latency_proxy): a network between the workers and Redis.

Real sockets on 127.0.0.1 only: a private redis-server, the proxy in front of it, redis-py
through the proxy. Time bounds are set by the delay itself: with a delay D per direction a
request/response round trip takes at least 2 D, and at most 2 D (+ jitter) plus a second
of slack for a busy machine, never a threshold of its own. Every server, proxy, thread
and worker started here is stopped in ``finally``/``with`` blocks, also on failure.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

try:
    from celery_fixtures import require_redis_binary
    from celery_procs import descendants, is_celery_worker, is_redis_server, wait_gone
except ImportError:  # tests/ imported as a package
    from tests.celery_fixtures import require_redis_binary
    from tests.celery_procs import descendants, is_celery_worker, is_redis_server, wait_gone

from scenarios.base import BadInput
from taskrace.measuring.runner import prepare, run_one
from workers.celery_tier import CeleryTier
from workers.infra.latency_proxy import (Latency, LatencyProxy, parse_duration, parse_latency, redis_target,
                                   through)
from workers.infra.redis_server import EmbeddedRedis

SLACK = 1.0  # seconds on top of what the delay allows: a busy CI machine, never a goal
NO_RETRY = Retry(NoBackoff(), 0)  # one honest answer: redis-py >= 6 retries timeouts by default


@pytest.fixture(scope="module")
def server():
    require_redis_binary()  # skips locally without redis-server; fails in CI
    srv = EmbeddedRedis()
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def proxy(server):
    """Factory: ``proxy(delay, jitter) -> started LatencyProxy`` in front of the server;
    all stopped after the test, whatever happens."""
    made: list[LatencyProxy] = []

    def make(delay=0.0, jitter=0.0, **kw) -> LatencyProxy:
        p = LatencyProxy(redis_target(server.url), delay, jitter, **kw)
        made.append(p)
        return p.start()

    try:
        yield make
    finally:
        for p in made:
            p.stop()
    assert not proxy_threads(), "a proxy's thread outlived stop()"


@pytest.fixture
def clients():
    """Factory for redis clients (closed after the test)."""
    made: list[redis.Redis] = []

    def make(url: str, timeout: float = 5.0) -> redis.Redis:
        r = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=NO_RETRY)
        made.append(r)
        return r

    try:
        yield make
    finally:
        for r in made:
            r.close()


def proxy_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("latency-proxy")]


def via(server, p: LatencyProxy) -> str:
    return through(server.url, *p.address)


def rtts(r: redis.Redis, count: int) -> list[float]:
    r.ping()  # connect and authenticate first: several round trips not to be counted
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        assert r.ping() is True
        out.append(time.perf_counter() - t0)
    return out


# --- delay -------------------------------------------------------------------------------

def test_ping_round_trip_takes_twice_the_delay(server, proxy, clients):
    d = 0.050
    p = proxy(d)
    samples = rtts(clients(via(server, p)), 5)
    assert all(2 * d <= s < 2 * d + SLACK for s in samples), samples
    st = p.stats()
    assert st["connections_total"] == 1 and st["connections_open"] == 1
    assert st["bytes_up"] > 0 and st["bytes_down"] > 0 and st["delay_ms"] == 50.0


def test_zero_delay_forwards_everything(server, proxy, clients):
    p = proxy(0)
    r = clients(via(server, p))
    value = bytes(range(256)) * 4096  # 1 MiB, every byte value
    assert r.ping() is True
    r.set("lp:zero", value)
    assert r.get("lp:zero") == value
    assert p.stats()["bytes_up"] > len(value) and p.stats()["bytes_down"] > len(value)


def test_jitter_stays_within_its_bounds(server, proxy, clients):
    d, j = 0.020, 0.010
    p = proxy(d, j, seed=1)
    samples = rtts(clients(via(server, p)), 30)
    assert all(2 * (d - j) <= s < 2 * (d + j) + SLACK for s in samples), samples


def test_set_delay_applies_at_run_time(server, proxy, clients):
    p = proxy(0)
    r = clients(via(server, p))
    r.ping()
    p.set_delay("60ms")
    assert all(0.120 <= s < 0.120 + SLACK for s in rtts(r, 3))
    p.set_delay(0.010, "10ms")
    assert p.latency == Latency(0.010, 0.010)
    assert all(0 <= s < 0.040 + SLACK for s in rtts(r, 3))


def test_delay_is_not_paid_per_chunk(server, proxy, clients):
    """4 MiB is at least 64 reads of 64 KiB: a proxy that slept D per chunk would need
    64 x D = 3.2 s each way; queued with release times it takes about 2 D."""
    d = 0.050
    p = proxy(d)
    r = clients(via(server, p), timeout=30)
    r.ping()
    value = b"x" * (4 * 2**20)
    t0 = time.perf_counter()
    r.set("lp:big", value)
    took = time.perf_counter() - t0
    assert 2 * d <= took < 2 * d + SLACK, took
    assert r.strlen("lp:big") == len(value)


def test_order_is_kept_under_jitter(server, proxy, clients):
    """200 commands sent one by one, 1 ms apart, under 5 ms +- 5 ms: a chunk's jitter
    may not let it overtake the one before (TCP never reorders bytes)."""
    p = proxy("5ms+-5ms", seed=7)
    r = clients(via(server, p))
    r.ping()
    conn = r.connection_pool.get_connection()
    try:
        for i in range(200):
            conn.send_command("ECHO", str(i))
            time.sleep(0.001)
        replies = [conn.read_response() for _ in range(200)]
    finally:
        r.connection_pool.release(conn)
    assert replies == [str(i).encode() for i in range(200)]


# --- partitions --------------------------------------------------------------------------

def test_blackhole_hangs_the_link_and_heal_restores_it(server, proxy, clients):
    p = proxy(0)
    r = clients(via(server, p), timeout=0.3)
    assert r.ping() is True
    p.blackhole()
    assert p.blackholed == ("up", "down")
    before = p.stats()
    with pytest.raises(redis.TimeoutError):  # a hang, not a reset (ConnectionError)
        r.ping()
    with pytest.raises(redis.TimeoutError):  # a new connection hangs as well
        clients(via(server, p), timeout=0.3).ping()
    after = p.stats()
    assert (after["bytes_up"], after["bytes_down"]) == (before["bytes_up"], before["bytes_down"])
    assert after["connections_open"] >= 2  # held open, not closed
    p.heal()
    assert p.blackholed == ()
    assert r.ping() is True  # redis-py reconnects after the timeout
    assert clients(via(server, p)).ping() is True


def test_one_way_partition_runs_the_command_but_loses_the_answer(server, proxy, clients):
    """Down blackholed: the INCR reaches Redis and runs, its reply never comes back. The
    caller cannot tell "not done" from "done, answer lost": the partition's lesson."""
    p = proxy(0)
    direct = clients(server.url)
    r = clients(via(server, p), timeout=0.3)
    direct.delete("lp:oneway")
    r.ping()
    p.blackhole("down")
    with pytest.raises(redis.TimeoutError):
        r.incr("lp:oneway")
    deadline = time.monotonic() + 5
    while direct.get("lp:oneway") is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert direct.get("lp:oneway") == b"1"
    p.heal("down")
    assert r.get("lp:oneway") == b"1"


def test_stop_closes_held_connections_and_the_port(server, clients):
    p = LatencyProxy(redis_target(server.url), 0)
    with p:
        sock = socket.create_connection(p.address, timeout=5)
        try:
            p.blackhole()
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            port = p.port
            p.stop()  # with a connection held in a partition
            assert sock.recv(100) == b""  # closed (FIN), no answer
        finally:
            sock.close()
    assert not proxy_threads()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_context_manager_stops_on_error(server):
    with pytest.raises(RuntimeError, match="boom"):
        with LatencyProxy(redis_target(server.url), "1ms") as p:
            port = p.port
            raise RuntimeError("boom")
    assert not proxy_threads()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    p.stop()  # idempotent


def test_a_refusing_target_closes_the_client():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    with LatencyProxy(("127.0.0.1", dead)) as p:
        with socket.create_connection(p.address, timeout=5) as sock:
            assert sock.recv(10) == b""
        deadline = time.monotonic() + 5
        while p.connections_open and time.monotonic() < deadline:
            time.sleep(0.01)
        assert p.connections_open == 0 and p.connections_total == 1


# --- input -------------------------------------------------------------------------------

@pytest.mark.parametrize("text,seconds", [("5ms", 0.005), ("0.005s", 0.005), ("5", 0.005), ("500us", 0.0005),
                                          (" 20 ms ", 0.020), ("0", 0.0), (0.05, 0.05), (1, 1.0)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text,delay,jitter", [("2ms+-1ms", 0.002, 0.001), ("2ms±1ms", 0.002, 0.001),
                                               ("10ms", 0.010, 0.0), ("5ms+-5ms", 0.005, 0.005)])
def test_latency_specs(text, delay, jitter):
    lat = parse_latency(text)
    assert (lat.delay, lat.jitter) == (pytest.approx(delay), pytest.approx(jitter))
    assert lat.to_dict()["spec"] == text


BAD = ["-5ms", "-1", "fast", "5 parsecs", "", "5ms+-", "+-1ms", "nan", "inf", "fast\nslow", "5ms+-6ms",
       "1ms-", -0.1, float("nan"), float("inf"), True, None, [5]]


@pytest.mark.parametrize("bad", BAD)
def test_bad_latency_is_one_line_naming_the_accepted_forms(bad):
    with pytest.raises(ValueError) as info:
        parse_latency(bad)
    msg = str(info.value)
    assert "\n" not in msg
    assert all(form in msg for form in ('"5ms"', '"0.005s"', '"5" (milliseconds)', '"2ms+-1ms"')), msg


def test_bad_latency_starts_nothing(server):
    with pytest.raises(ValueError, match="negative"):
        LatencyProxy(redis_target(server.url), "-5ms")
    with pytest.raises(ValueError, match="not a duration"):
        CeleryTier(2, latency="soon")
    with pytest.raises(BadInput, match="negative"):  # what the CLI turns into exit 2
        prepare("power-io", {}, "celery", 2, {"latency": "-1ms"})
    assert not proxy_threads()


def test_set_delay_rejects_bad_input_and_keeps_the_delay(server, proxy):
    p = proxy("7ms")
    with pytest.raises(ValueError):
        p.set_delay("-1ms")
    with pytest.raises(ValueError, match="direction"):
        p.blackhole("sideways")
    assert p.latency.delay == pytest.approx(0.007) and p.blackholed == ()


def test_latency_needs_a_tcp_broker_and_own_workers():
    with pytest.raises(ValueError, match="redis:// or rediss://"):
        CeleryTier(1, redis_url="unix:///tmp/redis.sock", latency="5ms")
    with pytest.raises(ValueError, match="external workers"):
        CeleryTier(1, redis_url="redis://127.0.0.1:1/0", external=True, latency="5ms")


def test_through_keeps_credentials_and_database():
    assert through("redis://:pw@10.0.0.5:6380/3?x=1", "127.0.0.1", 4000) == "redis://:pw@127.0.0.1:4000/3?x=1"
    assert through("rediss://u:p@h/0", "127.0.0.1", 9) == "rediss://u:p@127.0.0.1:9/0"
    assert redis_target("redis://h") == ("h", 6379)


# --- as a process of its own (python -m workers.infra.latency_proxy) -------------------------

REPO_ROOT = Path(__file__).resolve().parents[1]


def proxy_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "workers.infra.latency_proxy", *args], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))


@pytest.mark.parametrize("args", [["--latency=-5ms"], ["--latency", "soon"], ["--latency", "1ms+-2ms"],
                                  ["--latency", "-5ms"]])
def test_cli_bad_latency_is_one_line_exit_2(args):
    proc = proxy_cli("--target", "127.0.0.1:1", *args)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "latency" in err, err


def test_cli_proxy_delays_partitions_heals_and_stops(server, clients):
    host, port = redis_target(server.url)
    proc = proxy_cli("--target", f"{host}:{port}", "--latency", "25ms")
    try:
        line = proc.stdout.readline()  # "listening 127.0.0.1:PORT -> ..."
        assert line.startswith("listening 127.0.0.1:"), (line, proc.stderr.read() if proc.poll() is not None else "")
        listen_port = int(line.split()[1].rsplit(":", 1)[1])
        url = through(server.url, "127.0.0.1", listen_port)
        r = clients(url, timeout=0.5)
        assert all(0.050 <= s < 0.050 + SLACK for s in rtts(r, 3))
        proc.send_signal(signal.SIGUSR1)  # blackhole, applied asynchronously: poll until it bites
        deadline = time.monotonic() + 10
        partitioned = False
        while not partitioned and time.monotonic() < deadline:
            try:
                r.ping()
            except redis.TimeoutError:
                partitioned = True
        assert partitioned
        proc.send_signal(signal.SIGUSR2)  # heal
        deadline = time.monotonic() + 10
        healed = False
        while not healed and time.monotonic() < deadline:
            try:
                healed = r.ping()
            except redis.TimeoutError:
                pass
        assert healed
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", listen_port), timeout=5).close()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


# --- the Celery tier through the proxy -----------------------------------------------------

def _our_procs(before: set[int]) -> list:
    return [p for p in descendants() if p.pid not in before and (is_redis_server(p) or is_celery_worker(p))]


def test_celery_run_pays_the_latency_on_the_workers_side():
    """Each task's message reaches its worker through the proxy (>= D after it was
    sent) and its result comes back through it (>= D after it finished): the workers pay,
    the harness talks to Redis directly."""
    require_redis_binary()
    before = {p.pid for p in descendants()}
    sc, tier = prepare("power-io", {"tasks": 4, "sleep": 0}, "celery", 2, {"latency": "20ms"})
    rec = run_one(sc, tier)
    assert rec["verdict"]["ok"], rec["verdict"]
    lat = rec["tier"]["latency"]
    assert (lat["spec"], lat["delay_ms"], lat["jitter_ms"], lat["paid_by"]) == ("20ms", 20.0, 0.0, "workers")
    assert lat["round_trip_added_ms"] == 40.0
    assert lat["connections_total"] >= 2 and lat["bytes_up"] > 0 and lat["bytes_down"] > 0
    waits = rec["repeats"][0]["latencies"]
    assert len(waits["queue_wait"]) == 4 and min(waits["queue_wait"]) >= 0.020, waits
    assert len(waits["return"]) == 4 and min(waits["return"]) >= 0.020, waits
    assert not proxy_threads()
    assert wait_gone([p.pid for p in _our_procs(before)]) == []


def test_celery_explicit_redis_url_through_the_proxy(server):
    before = {p.pid for p in descendants()}
    sc, tier = prepare("power-io", {"tasks": 2, "sleep": 0}, "celery", 1,
                       {"latency": "5ms+-2ms", "redis_url": server.url})
    rec = run_one(sc, tier)
    assert rec["verdict"]["ok"], rec["verdict"]
    assert rec["tier"]["broker"] != "embedded" and server.password not in str(rec["tier"])
    assert rec["tier"]["latency"]["delay_ms"] == 5.0 and rec["tier"]["latency"]["jitter_ms"] == 2.0
    assert min(rec["repeats"][0]["latencies"]["queue_wait"]) >= 0.003  # D - jitter
    assert not proxy_threads()
    assert wait_gone([p.pid for p in descendants() if p.pid not in before and is_celery_worker(p)]) == []


def test_celery_without_latency_records_none():
    assert CeleryTier(1).describe()["latency"] is None
