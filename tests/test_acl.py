"""The worker ACL user (workers.infra.acl) on Debian's redis-server 7.0: what it may not do,
that it may do what a real worker of this project does, and the rights check.

Real server, real `celery worker` processes, real `taskrace run`s. Debian's TLS-built
redis-server (what the join runs on) is required: skipped locally without it, a failure
with CI=true.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from celery_fixtures import REPO_ROOT, require_tls_redis_binary, start_worker, stop_workers, wait_ready
from workers.celery_workers import CeleryWorker, worker_argv, worker_env
from workers.infra.acl import WORKER_COMMANDS, check_worker_rights, worker_rules
from workers.infra.redis_server import EmbeddedRedis, _free_port


@pytest.fixture(scope="module")
def server():
    """Join mode's users: default off, taskrace (all rights), worker."""
    r = EmbeddedRedis(binary=require_tls_redis_binary(), acl=True)
    try:
        r.start()
        yield r
    finally:
        r.stop()


def admin(server) -> redis.Redis:
    return redis.Redis.from_url(server.url)


def as_worker(server) -> redis.Redis:
    return redis.Redis.from_url(server.worker_url("redis"))


def test_aclfile_cli_writes_three_users_with_hashed_passwords(tmp_path):
    out = tmp_path / "users.acl"
    env = dict(os.environ, REDIS_PASSWORD="lab-secret-1", WORKER_PASSWORD="worker-secret-2")
    proc = subprocess.run([sys.executable, "-m", "workers.infra.acl", str(out)], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert oct(out.stat().st_mode & 0o777) == "0o640"
    lines = text.splitlines()
    assert lines[0].startswith("user default off")
    assert lines[1] == f"user taskrace on #{hashlib.sha256(b'lab-secret-1').hexdigest()} ~* &* +@all"
    assert lines[2].startswith(f"user worker on #{hashlib.sha256(b'worker-secret-2').hexdigest()} ")
    assert lines[2].endswith(worker_rules())
    assert "secret" not in text + proc.stdout + proc.stderr  # hashes only, nothing echoed
    # and redis-server loads it as the compose override hands it over (--aclfile)
    port = _free_port()
    srv = subprocess.Popen([require_tls_redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--aclfile", str(out),
                            "--save", "", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.STDOUT)
    try:
        worker = redis.Redis(port=port, username="worker", password="worker-secret-2")
        deadline = time.monotonic() + 10
        while True:
            try:
                assert worker.ping()
                break
            except redis.ConnectionError:
                assert srv.poll() is None and time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        assert redis.Redis(port=port, username="taskrace", password="lab-secret-1").acl_whoami() in ("taskrace", b"taskrace")
        with pytest.raises(redis.exceptions.NoPermissionError):
            worker.config_get("*")
    finally:
        srv.terminate()
        srv.wait(10)

    env.pop("WORKER_PASSWORD")
    bad = subprocess.run([sys.executable, "-m", "workers.infra.acl", str(tmp_path / "x.acl")], env=env,
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1, bad.stderr
    assert "WORKER_PASSWORD" in bad.stderr and not (tmp_path / "x.acl").exists()


@pytest.mark.parametrize("command", [
    ("CONFIG", "GET", "*"), ("FLUSHALL",), ("FLUSHDB",), ("KEYS", "*"), ("SCAN", "0"),
    ("SHUTDOWN", "NOSAVE"), ("DEBUG", "SLEEP", "0"), ("ACL", "LIST"), ("ACL", "SETUSER", "x"),
    ("CLIENT", "KILL", "TYPE", "normal"), ("CLIENT", "LIST"), ("MONITOR",), ("SCRIPT", "FLUSH"),
    ("GET", "secret:elsewhere"), ("SET", "elsewhere", "1"), ("DEL", "other-app:queue"),
    ("EVAL", "return redis.call('GET', KEYS[1])", "1", "elsewhere"),
    ("PUBLISH", "other-channel", "x"),
])
def test_worker_user_is_denied(server, command):
    # Given the worker user, when it runs an admin command or touches a key or channel
    # outside the project's prefixes, then Redis answers NOPERM and nothing happens.
    # ACL DRYRUN (asked by the admin) checks the rules alone, without running anything
    verdict = admin(server).execute_command("ACL", "DRYRUN", "worker", *command)
    verdict = verdict.decode() if isinstance(verdict, bytes) else verdict
    assert "no permissions" in verdict, verdict
    r = as_worker(server)
    try:
        # DEBUG is refused before the ACL is consulted (enable-debug-command no)
        refused = redis.exceptions.ResponseError if command[0] == "DEBUG" else redis.exceptions.NoPermissionError
        with pytest.raises(refused):
            r.execute_command(*command)
    finally:
        r.close()
    assert admin(server).ping()  # still up (SHUTDOWN did nothing)


def test_default_user_is_off_and_taskrace_has_every_right(server):
    with pytest.raises(redis.exceptions.AuthenticationError):
        # retries=0: redis-py 6+ retries an AuthenticationError (a ConnectionError) with backoff, ~8 s
        redis.Redis(port=server.port, retry=Retry(NoBackoff(), 0)).ping()  # no user: the default user, which is off
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=server.port, username="default", password=server.password, retry=Retry(NoBackoff(), 0)).ping()
    a = admin(server)
    assert a.acl_whoami() in ("taskrace", b"taskrace") and a.config_get("port")["port"] == str(server.port)


def test_check_worker_rights_passes_for_worker_and_names_the_missing_right(server):
    check_worker_rights(server.worker_url("redis"))  # the worker user has them all
    a = admin(server)
    for removed, command in (("-brpop", "BRPOP"), ("-psubscribe", "PSUBSCRIBE"), ("-evalsha", "EVALSHA"),
                             ("-time", "TIME"), ("resetchannels", "PUBLISH")):
        a.execute_command("ACL", "SETUSER", "lacking", "reset", "on", ">pw", *worker_rules().split(), removed)
        with pytest.raises(ValueError) as caught:
            check_worker_rights(f"redis://lacking:pw@127.0.0.1:{server.port}/0")
        message = str(caught.value)
        assert "\n" not in message and f"may not run {command}" in message and "'lacking'" in message
    # keys outside its patterns: the unacked hash is the first met
    a.execute_command("ACL", "SETUSER", "lacking", "reset", "on", ">pw", *worker_rules().replace(
        "~unacked* ", "").split())
    with pytest.raises(ValueError, match=r"may not run HSET on 'unacked\*' \(no key right\)"):
        check_worker_rights(f"redis://lacking:pw@127.0.0.1:{server.port}/0")
    # a chord's join and Celery's events
    for removed, message in (("~celery-taskset-meta-* ", r"SISMEMBER on 'celery-taskset-meta-\*' \(no key right\)"),
                             ("+zcount ", r"ZCOUNT on 'celery-taskset-meta-\*' \(no command right\)"),
                             ("&/0.celeryev/* ", r"PUBLISH on '/0.celeryev/\*' \(no channel right\)")):
        a.execute_command("ACL", "SETUSER", "lacking", "reset", "on", ">pw",
                          *worker_rules().replace(removed, "").split())
        with pytest.raises(ValueError, match=f"may not run {message}: a worker needs it"):
            check_worker_rights(f"redis://lacking:pw@127.0.0.1:{server.port}/0")
    a.acl_deluser("lacking")
    assert not [k for k in a.keys("*") if b"rightscheck" in k and a.ttl(k) == -1]  # nothing left forever


def test_every_scenario_runs_on_workers_as_the_acl_user(server, tmp_path):
    # Given two real workers connected as the worker user on the shared queue, when the
    # harness (the taskrace user) runs every scenario on them, then each run succeeds on
    # those nodes and Redis logged no ACL denial: the rules are what a worker needs.
    # The workers and the harness run late acks with kombu's short restore sweep
    # (acks-late-only): the unacked index is written, acknowledged and swept, the most a
    # worker does to Redis; external workers must run the harness's mode, so both say it.
    a = admin(server)
    a.acl_log_reset()
    queue = "taskrace"
    mode = {"TASKRACE_DELIVERY": "acks-late-only"}
    workers = [start_worker(server.worker_url("redis"), f"acl{i}", tmp_path, queues=queue,
                            concurrency=2, env={"TASKRACE_QUEUE": queue, **mode}) for i in (1, 2)]
    runs = [["power-io", "--sleep", "0.05", "--tasks", "4", "--chunk", "2"],
            ["globals", "--store", "shared"], ["pipeline", "--items", "20"],
            ["mapreduce", "--size", "20000", "--chunksize", "5000", "--acks-late"],
            ["bank", "--mode", "transfers", "--strategy", "lock", "--trials", "1", "--ops", "5"],
            ["bank", "--strategy", "atomic", "--trials", "1", "--steps", "5"],
            ["bank", "--strategy", "optimistic", "--trials", "1", "--steps", "5"],
            ["bank", "--strategy", "queue", "--trials", "1", "--steps", "5"]]
    env = dict(os.environ, TASKRACE_EXTERNAL_WORKERS="1", TASKRACE_QUEUE=queue, **mode)
    seen = set()
    try:
        wait_ready(workers, 60)
        for args in runs:
            out = tmp_path / "run.json"
            proc = subprocess.run([sys.executable, "-m", "taskrace", "run", *args, "-b", "celery", "-n", "2",
                                   "--external-workers", "--redis-url", server.url, "--json", str(out)],
                                  env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
            assert proc.returncode == 0, f"{args}: {proc.stderr[-800:]}"
            record = json.loads(out.read_text())["runs"][0]
            assert not record["verdict"]["details"].get("errors"), args
            seen |= set(record["nodes"])
    finally:
        stop_workers(workers)
    host = socket.gethostname()
    assert {f"acl1@{host}", f"acl2@{host}"} <= seen
    denials = [(e["context"], e["reason"], e["object"], e["username"]) for e in a.acl_log(count=50)]
    assert denials == []
    assert set(WORKER_COMMANDS) >= {"brpop", "publish", "psubscribe"}


def _worker_with_heartbeats(url: str, name: str, log_dir, env: dict) -> CeleryWorker:
    """A worker as start_worker starts one, but with Celery's heartbeats on (worker.heartbeat
    events every 2 s): a worker someone else runs may keep them; this project's run without."""
    argv = [a for a in worker_argv(name, env["TASKRACE_QUEUE"], concurrency=2) if a != "--without-heartbeat"]
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, env=worker_env(url, env), cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return CeleryWorker(name, proc, log_path, time.monotonic())


def test_a_chord_and_celery_events_on_workers_as_the_acl_user(server, tmp_path):
    # Given two real workers connected as the worker user that send Celery's events (ev1: -E;
    # ev2: TASKRACE_TASK_EVENTS=1, so also task-sent for the chord body it sends, and heartbeats),
    # when the harness runs mapreduce as a chord on them with a listener of task events
    # (--events: workers.celery_events.CeleryTaskEvents), then the chord's join (the result
    # backend's keys) and every event went through: the answer is sequential's, each task's
    # start and finish came from those nodes, the events were published on the celeryev
    # fanout (heard here as the admin), and Redis logged no ACL denial.
    a = admin(server)
    a.acl_log_reset()
    queue = "taskrace"
    env = {"TASKRACE_QUEUE": queue, "TASKRACE_DELIVERY": "acks-late-only"}
    heard = a.pubsub()
    heard.psubscribe("/0.celeryev/*")
    workers = [start_worker(server.worker_url("redis"), "ev1", tmp_path, queues=queue, concurrency=2, env=env,
                            events=True),
               _worker_with_heartbeats(server.worker_url("redis"), "ev2", tmp_path,
                                       {**env, "TASKRACE_TASK_EVENTS": "1"})]
    out, events_file = tmp_path / "chord.json", tmp_path / "events.jsonl"
    try:
        wait_ready(workers, 60)
        proc = subprocess.run([sys.executable, "-m", "taskrace", "run", "mapreduce", "--size", "20000",
                               "--chunksize", "5000", "--reduce", "chord", "-b", "celery", "-n", "2",
                               "--external-workers", "--redis-url", server.url, "--json", str(out),
                               "--events", str(events_file)],
                              env=dict(os.environ, TASKRACE_EXTERNAL_WORKERS="1", **env), cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=60)  # ~3 s; a denial: hangs
        time.sleep(2.5)  # a heartbeat (every 2 s) after the run
    finally:
        stop_workers(workers)
    channels = set()
    while (message := heard.get_message(timeout=0.1)) is not None:
        if message["type"] == "pmessage":
            channels.add(message["channel"].decode())
    heard.close()
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-1500:]
    record = json.loads(out.read_text())["runs"][0]
    assert record["verdict"]["ok"] and record["chord"]["ran"], record["verdict"]
    host = socket.gethostname()
    nodes = {f"ev1@{host}", f"ev2@{host}"}
    stream = [json.loads(line) for line in events_file.read_text().splitlines()]
    done = {e["index"]: e for e in stream if e["kind"] == "task.finished"}
    assert sorted(done) == list(range(5)), stream  # 4 map tasks and the reduce
    assert {e["worker"].split(":")[0] for e in done.values()} <= nodes, done
    assert {"/0.celeryev/task.multi", "/0.celeryev/worker.heartbeat"} <= channels, channels
    denials = [(e["context"], e["reason"], e["object"], e["username"]) for e in a.acl_log(count=50)]
    assert denials == []
    assert not [w.name for w in workers if "NOPERM" in w.log() or "NoPermissionError" in w.log()]
