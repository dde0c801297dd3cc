"""Joining a running lab from another host: `taskrace worker` in a network namespace, over
TLS, as the Redis ACL user `worker` (issue 11, points 1 and 2).

Everything is real: a netns host on bridge trlab0 (workers.infra.netns), Debian's redis-server
with TLS and join mode's users (EmbeddedRedis(acl=True, tls=True)), `taskrace worker`
started with `ip netns exec` as a user would, `celery worker`, `taskrace run`. Needs root,
iproute2 and Debian's TLS-built redis-server: skipped locally without them, a failure
with CI=true. Every host, Redis and process is removed in `finally`.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from celery_fixtures import IN_CI, REPO_ROOT, kill_tree, require_tls_redis_binary
from workers.infra.acl import worker_rules
from workers.infra.netns import BRIDGE, GATEWAY, Host, HostError, list_hosts, require_tools
from workers.infra.redis_server import EmbeddedRedis
from workers.infra.tls import make_ca, sans

# `taskrace` as a user types it: this interpreter's console script (pip install -e .)
_SCRIPT = Path(sys.executable).with_name("taskrace")
TASKRACE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "taskrace"]
HOSTNAME = socket.gethostname()


def require_netns() -> None:
    """The hosts' own requirements (iproute2, root): skip locally without them, fail in CI."""
    try:
        require_tools()
    except HostError as exc:
        pytest.fail(str(exc)) if IN_CI else pytest.skip(str(exc))


def run(argv, timeout=120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT, **kw)


def write_env(path: Path, url: str, ca: str = "ca.crt", delivery: str = "at-least-once") -> Path:
    path.write_text(f"# handed out by the lab\nTASKRACE_BROKER_URL={url}\nTASKRACE_CA_FILE={ca}\n"
                    f"TASKRACE_QUEUE=taskrace\nTASKRACE_DELIVERY={delivery}\n")
    return path


@dataclass
class Lab:
    host: Host
    redis: EmbeddedRedis
    dir: Path
    env_file: Path

    @property
    def tls_port(self) -> int:
        return self.redis.tls_address[1]

    def url(self, user="worker", password=None, scheme="rediss", host=GATEWAY, port=None) -> str:
        password = self.redis.worker_password if password is None else password
        userinfo = f"{user}:{password}@" if user is not None else f":{password}@"
        return f"{scheme}://{userinfo}{host}:{port or self.tls_port}/0"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Host `j<pid>` (netns, 10.77.0.N) and a TLS+ACL Redis whose TLS port is on the
    bridge at 10.77.0.1 (a forwarding proxy there; the plain port stays on loopback)."""
    require_netns()
    binary = require_tls_redis_binary()
    host = Host(f"j{os.getpid()}")
    server = EmbeddedRedis(binary, acl=True, tls=True, tls_host=GATEWAY)
    entered = False
    try:
        host.__enter__()
        entered = True
        server.start()
        d = tmp_path_factory.mktemp("join")
        shutil.copy(server.ca_file, d / "ca.crt")
        lab = Lab(host, server, d, d / "worker.env")
        write_env(lab.env_file, lab.url())
        yield lab
    finally:
        server.stop()
        if entered:
            host.__exit__(None, None, None)


def _wait_ready(proc, log: Path, timeout=90.0) -> None:
    deadline = time.monotonic() + timeout
    while " ready." not in log.read_text(errors="replace"):
        assert proc.poll() is None, f"worker exited {proc.returncode}: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"worker not ready: {log.read_text()[-2000:]}"
        time.sleep(0.1)


def _cmdlines(pid: int) -> list[str]:
    import psutil

    procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    return [" ".join(p.cmdline()) for p in procs]


def test_a_worker_in_a_netns_joins_over_tls_and_runs_the_harness_tasks(lab):
    # Given a host in its own network namespace, which reaches Redis only over the bridge
    plain = run(lab.host.argv([sys.executable, "-c", f"""
import socket
for addr in (("127.0.0.1", {lab.redis.port}), ("{GATEWAY}", {lab.redis.port})):
    try:
        socket.create_connection(addr, timeout=2).close(); print("reached", addr)
    except OSError:
        pass
"""]))
    assert plain.returncode == 0 and "reached" not in plain.stdout  # the plain port is loopback-only
    # When `taskrace worker --env-file` is started there, as a user would
    name = f"j{os.getpid()}"
    log = lab.dir / "worker.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(lab.host.argv([*TASKRACE, "worker", "--env-file", str(lab.env_file),
                                               "--name", name]),
                                stdout=out, stderr=subprocess.STDOUT, cwd=lab.dir, start_new_session=True)
    try:
        _wait_ready(proc, log)
        node = f"{name}@{HOSTNAME}"
        assert f"taskrace worker: {node} joins rediss://worker:***@{GATEWAY}:{lab.tls_port}/0" in log.read_text()
        assert "delivery at-least-once; worker rights checked" in log.read_text()  # the env file's mode
        assert lab.redis.tls_proxy.connections_total > 0  # its connections crossed the bridge
        assert not any(lab.redis.worker_password in c for c in _cmdlines(proc.pid))  # not in ps
        # and the harness, on loopback as the taskrace user, runs power-io on external workers
        # in the lab's delivery mode (it refuses workers that run another: late acks act there)
        result = lab.dir / "run.json"
        harness = run([*TASKRACE, "run", "power-io", "-b", "celery", "--external-workers", "-n", "1",
                       "--sleep", "0.2", "--json", str(result)],
                      env=dict(os.environ, REDIS_URL=lab.redis.url, TASKRACE_QUEUE="taskrace",
                               TASKRACE_DELIVERY="at-least-once"), timeout=180)
        # Then its tasks ran on the joined worker, in the env file's mode, and the record's nodes name it
        assert harness.returncode == 0, harness.stderr[-1500:]
        record = json.loads(result.read_text())["runs"][0]
        assert record["tier"]["delivery"]["mode"] == "at-least-once"
        assert list(record["nodes"]) == [node], record["nodes"]
        assert sum(record["nodes"].values()) == 2  # both of power-io's tasks
        # Ctrl-C's twin, SIGTERM, stops it with Celery's warm shutdown
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert "Warm shutdown" in log.read_text()
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
            proc.wait(10)
    assert lab.redis.worker_password not in log.read_text()
    assert "insecure" not in log.read_text().lower()  # kombu warns when rediss:// verifies nothing


def test_worker_with_latency_runs_beside_its_proxy_and_stops_cleanly(lab):
    log = lab.dir / "latency.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(lab.host.argv([*TASKRACE, "worker", "--env-file", str(lab.env_file),
                                               "--name", "slow", "--latency", "2ms"]),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_ready(proc, log)
        assert "through a 2ms proxy" in log.read_text()
        import psutil

        children = psutil.Process(proc.pid).children(recursive=True)
        assert children  # the celery worker runs as a child of the process holding the proxy
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
            proc.wait(10)


@pytest.fixture
def lacking_user(lab):
    """An ACL user with every worker right but BRPOP."""
    admin = redis.Redis.from_url(lab.redis.url)
    admin.execute_command("ACL", "SETUSER", "lacking", "reset", "on", ">lackpw", *worker_rules().split(), "-brpop")
    try:
        yield "lacking"
    finally:
        admin.acl_deluser("lacking")
        admin.close()


def _refusal_cases(lab, lacking_user, tmp: Path):
    from cryptography.hazmat.primitives.serialization import Encoding

    (tmp / "other-ca.crt").write_bytes(make_ca()[0].public_bytes(Encoding.PEM))  # not the lab's
    env = lambda name, url, ca="ca.crt": ["--env-file", str(write_env(tmp / f"{name}.env", url, ca))]  # noqa: E731
    shutil.copy(lab.dir / "ca.crt", tmp / "ca.crt")
    return {
        # case: (argv after `taskrace worker`, run in the netns?, what the one line says)
        "wrong password": (env("wrongpw", lab.url(password="not-the-password")), True, "wrong password"),
        "plain redis:// over the network": (env("plain", lab.url(scheme="redis")), True,
                                            "joining over the network needs rediss://"),
        "plaintext to the TLS port": (env("plaintls", lab.url(scheme="redis", host="127.0.0.1",
                                                              port=lab.redis.tls_port)), False,
                                      "accepts TLS only"),
        "no user": (env("nouser", lab.url(user=None)), True, "join as the worker user"),
        "default user": (env("default", lab.url(user="default")), True, "join as the worker user"),
        "missing CA file": (env("noca", lab.url(), ca="missing-ca.crt"), True, "missing-ca.crt does not exist"),
        "missing env file": (["--env-file", str(tmp / "nowhere.env")], True, "nowhere.env does not exist"),
        "ACL user without a right": (env("lacking", lab.url(user=lacking_user, password="lackpw")), True,
                                     "may not run BRPOP on 'taskrace*'"),
        "password on argv": (["--redis-url", lab.url(), "--ca-file", str(tmp / "ca.crt")], True,
                             "carries a password"),
        "wrong CA": (env("wrongca", lab.url(), ca="other-ca.crt"), True, "does not verify"),
        "negative latency": (["--env-file", str(lab.env_file), "--latency=-5ms"], True, "negative"),
        "unknown delivery mode": (["--env-file", str(write_env(tmp / "nomode.env", lab.url(), delivery="sometimes"))],
                                  True, "TASKRACE_DELIVERY=sometimes is not a delivery mode"),
        # --redis-url without a password takes it from $TASKRACE_REDIS_PASSWORD (here a wrong one)
        "password from the environment": (["--redis-url", lab.url().replace(f":{lab.redis.worker_password}@", "@"),
                                           "--ca-file", str(tmp / "ca.crt")], True, "wrong password"),
    }


def test_refusals_are_one_line_and_exit_2(lab, lacking_user, tmp_path):
    cases = _refusal_cases(lab, lacking_user, tmp_path)
    started = {}
    for case, (argv, in_netns, _) in cases.items():  # all at once: each waits on its own
        cmd = [*TASKRACE, "worker", *argv, "--name", "refused"]
        started[case] = subprocess.Popen(lab.host.argv(cmd) if in_netns else cmd, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                                         env=dict(os.environ, TASKRACE_REDIS_PASSWORD="not-the-password"))
    failures = []
    try:
        for case, proc in started.items():
            stdout, stderr = proc.communicate(timeout=120)
            lines = [line for line in stderr.splitlines() if line.strip()]
            expected = cases[case][2]
            if not (proc.returncode == 2 and len(lines) == 1 and expected in lines[0]
                    and "Traceback" not in stderr and lab.redis.worker_password not in stderr + stdout
                    and "lackpw" not in stderr):
                failures.append(f"{case}: exit {proc.returncode}, wanted {expected!r}, got {stderr.strip()!r}")
    finally:
        for proc in started.values():
            if proc.poll() is None:
                kill_tree(proc.pid)
                proc.wait(10)
    assert not failures, "\n".join(failures)


def test_tls_cli_writes_ca_and_server_certificate_with_the_sans(tmp_path):
    from cryptography import x509

    out = tmp_path / "tls"
    argv = [sys.executable, "-m", "workers.infra.tls", str(out), "--hosts", "redis,localhost,127.0.0.1,10.77.0.1"]
    first = run(argv)
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in out.iterdir()) == ["ca.crt", "ca.key", "redis.crt", "redis.key"]
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in out.iterdir()}
    assert modes == {"ca.crt": "0o644", "ca.key": "0o600", "redis.crt": "0o644", "redis.key": "0o640"}
    assert len(first.stdout.splitlines()) == 4 and "PRIVATE KEY" not in first.stdout + first.stderr
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((out / "redis.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert sans(cert) == {"DNS:redis", "DNS:localhost", "IP:127.0.0.1", "IP:10.77.0.1"}
    # again with the same hosts: nothing to write
    ca_bytes, cert_bytes = (out / "ca.crt").read_bytes(), (out / "redis.crt").read_bytes()
    again = run(argv)
    assert again.returncode == 0 and again.stdout == ""
    assert (out / "redis.crt").read_bytes() == cert_bytes
    # other hosts: the CA is kept, the server certificate re-issued with the new names
    changed = run(argv[:-1] + ["redis,10.77.0.9"])
    assert changed.returncode == 0 and len(changed.stdout.splitlines()) == 2
    assert (out / "ca.crt").read_bytes() == ca_bytes
    cert = x509.load_pem_x509_certificate((out / "redis.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert sans(cert) == {"DNS:redis", "IP:10.77.0.9"}
    # bad input: one line, exit 2
    (tmp_path / "afile").write_text("")
    for bad in ([str(out), "--hosts", " , "], [str(tmp_path / "afile"), "--hosts", "redis"],
                [str(tmp_path / "no" / "such"), "--hosts", "redis"], [str(out), "--hosts", "bad host"]):
        proc = run([sys.executable, "-m", "workers.infra.tls", *bad])
        assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, (bad, proc.stderr)


def _links() -> set[str]:
    return {link["ifname"] for link in json.loads(run(["ip", "-j", "link", "show"]).stdout)}


def _netns() -> set[str]:
    return {ns["name"] for ns in json.loads(run(["ip", "-j", "netns", "list"]).stdout or "[]")}


def test_host_add_rm_leaves_nothing_behind():
    require_netns()
    name = f"h{os.getpid()}"
    try:
        add = run([*TASKRACE, "host", "add", name])
        assert add.returncode == 0, add.stderr
        address = add.stdout.strip()
        assert address.startswith("10.77.0.") and address != GATEWAY
        veth = f"trv{address.rsplit('.', 1)[1]}"
        assert f"taskrace-{name}" in _netns() and {veth, BRIDGE} <= _links()
        inside = run(["ip", "-n", f"taskrace-{name}", "-j", "route", "show", "default"])
        assert json.loads(inside.stdout)[0]["gateway"] == GATEWAY
        again = run([*TASKRACE, "host", "add", name])  # idempotent
        assert again.returncode == 0 and again.stdout.strip() == address
        listed = run([*TASKRACE, "host", "list"])
        assert any(line.split()[:2] == [name, address] for line in listed.stdout.splitlines())
        rm = run([*TASKRACE, "host", "rm", name])
        assert rm.returncode == 0, rm.stderr
        assert f"taskrace-{name}" not in _netns() and veth not in _links()
        assert (BRIDGE in _links()) == bool(list_hosts())  # the bridge goes with the last host
        assert run([*TASKRACE, "host", "rm", name]).returncode == 0  # nothing to remove: fine
        # bad input, one line each: a bad name, a name taken by a namespace not ours
        foreign = f"taskrace-f{os.getpid()}"
        run(["ip", "netns", "add", foreign])
        try:
            for argv, expected in ((["add", "Bad Name"], "bad host name"),
                                   (["add", foreign[len("taskrace-"):]], "name taken")):
                proc = run([*TASKRACE, "host", *argv])
                assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1 and expected in proc.stderr
        finally:
            run(["ip", "netns", "del", foreign])
    finally:
        run([*TASKRACE, "host", "rm", name])
    assert f"taskrace-{name}" not in _netns()


# join-init (compose/join.yml: python -m taskrace.lab.join init): what the lab hands out --------
def _init(state: Path, out: Path, **env) -> subprocess.CompletedProcess:
    """join-init's command as compose/join.yml runs it, with only these settings in its environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JOIN_", "TASKRACE_"))}
    return run([sys.executable, "-m", "taskrace.lab.join", "init", str(state), str(out)], env={**base, **env})


def _handed_out(state: Path, out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (out / "worker.env", out / "ca.crt", state / "redis.crt", state / "ca.crt")}


def _cert_names(state: Path) -> set[str]:
    from cryptography import x509

    return sans(x509.load_pem_x509_certificate((state / "redis.crt").read_bytes()))


def test_join_init_keeps_what_it_handed_out_while_the_certificate_covers_the_request(tmp_path):
    # Given join-init run as the docs' "No second computer?" block runs it (JOIN_BIND=10.77.0.1)
    state, out = tmp_path / "state", tmp_path / "join"
    state.mkdir()
    first = _init(state, out, JOIN_BIND="10.77.0.1", JOIN_PORT="6390", TASKRACE_DELIVERY="at-least-once")
    assert first.returncode == 0, first.stderr
    text = (out / "worker.env").read_text()
    password = (state / "worker.password").read_text().strip()
    assert f"TASKRACE_BROKER_URL=rediss://worker:{password}@10.77.0.1:6390/0" in text
    assert "TASKRACE_DELIVERY=at-least-once" in text.splitlines()  # the lab's mode, for the joined workers
    assert oct((out / "worker.env").stat().st_mode & 0o777) == "0o600"
    assert _cert_names(state) == {"DNS:redis", "DNS:localhost", "IP:127.0.0.1", "IP:10.77.0.1"}
    assert first.stdout.splitlines()[-1].endswith("ready for worker hosts at 10.77.0.1:6390")
    handed = _handed_out(state, out)
    # When a later command recreates it without the variables exported (the defaults:
    # 127.0.0.1, port 6380, Celery's defaults), or with them again
    later = _init(state, out)
    same = _init(state, out, JOIN_BIND="10.77.0.1", JOIN_PORT="6390", TASKRACE_DELIVERY="at-least-once")
    # Then nothing handed out changed, and the first says what it kept and how to change it
    assert later.returncode == 0 and same.returncode == 0, later.stderr + same.stderr
    assert _handed_out(state, out) == handed
    kept = [line for line in later.stdout.splitlines() if "kept" in line]
    assert len(kept) == 1 and "workers join at 10.77.0.1:6390, delivery at-least-once" in kept[0], later.stdout
    assert "asked now: 127.0.0.1:6380, delivery at-most-once (JOIN_REISSUE=1 rewrites it" in kept[0]
    assert later.stdout.splitlines()[-1].endswith("ready for worker hosts at 10.77.0.1:6390")
    assert "kept" not in same.stdout and "wrote" not in same.stdout, same.stdout
    assert password not in later.stdout + later.stderr + same.stdout + same.stderr
    # a certificate lost from the state is made anew, still naming what was handed out
    (state / "redis.crt").unlink()
    remade = _init(state, out)
    assert remade.returncode == 0 and "IP:10.77.0.1" in _cert_names(state), remade.stdout + remade.stderr
    assert (out / "worker.env").read_bytes() == handed["worker.env"]


def test_join_init_refuses_a_new_address_in_one_line_and_moves_only_when_told(tmp_path):
    state, out = tmp_path / "state", tmp_path / "join"
    state.mkdir()
    assert _init(state, out, JOIN_BIND="10.77.0.1").returncode == 0
    handed = _handed_out(state, out)
    # A host the certificate does not name: refused, one line saying how to move; nothing changed
    refused = _init(state, out, JOIN_BIND="192.0.2.7")
    assert refused.returncode == 2 and refused.stdout == "", refused.stdout
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "sends workers to 10.77.0.1:6380" in lines[0] and "not 192.0.2.7" in lines[0], lines
    assert "JOIN_REISSUE=1 docker compose -f docker-compose.yml -f compose/join.yml up -d" in lines[0]
    assert "restart redis" in lines[0]
    assert _handed_out(state, out) == handed
    # JOIN_REISSUE=1: the certificate for exactly the new names, the env file for them, the
    # same CA and password; announced, with Redis's restart
    moved = _init(state, out, JOIN_BIND="192.0.2.7", JOIN_REISSUE="1")
    assert moved.returncode == 0, moved.stderr
    assert _cert_names(state) == {"DNS:redis", "DNS:localhost", "IP:127.0.0.1", "IP:192.0.2.7"}
    now = _handed_out(state, out)
    assert now["ca.crt"] == handed["ca.crt"] and now["worker.env"] != handed["worker.env"]
    assert b"@192.0.2.7:6380/0" in now["worker.env"]
    assert "wrote ./join/worker.env (re-issued): workers join at 192.0.2.7:6380" in moved.stdout
    assert "restart redis" in moved.stdout and "server certificate for" in moved.stdout
    # and from then on the new address is what is kept
    assert _init(state, out).returncode == 0 and _handed_out(state, out) == now


def test_join_init_rewrites_an_env_file_of_another_lab_and_refuses_bad_settings(tmp_path):
    state, out = tmp_path / "state", tmp_path / "join"
    state.mkdir()
    assert _init(state, out, JOIN_BIND="10.77.0.1").returncode == 0
    old = (out / "worker.env").read_bytes()
    shutil.rmtree(state)  # `down -v`: a new join-state volume, a new password and CA
    state.mkdir()
    again = _init(state, out, JOIN_BIND="10.77.0.1")
    assert again.returncode == 0, again.stderr
    assert (out / "worker.env").read_bytes() != old and "was not this lab's" in again.stdout
    assert (out / "ca.crt").read_bytes() == (state / "ca.crt").read_bytes()
    for env, says in (({"TASKRACE_DELIVERY": "sometimes"}, "unknown delivery mode 'sometimes'"),
                      ({"JOIN_PORT": "http"}, "JOIN_PORT=http is not a number"),
                      ({"JOIN_BIND": "bad host"}, "neither an IP address nor a DNS name")):
        proc = _init(state, out, **env)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and says in proc.stderr, \
            (env, proc.stderr)
