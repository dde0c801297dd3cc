"""compose/join.yml's join-init on a real Docker engine, followed as docs/lab.md's "No second
computer?" block is typed: JOIN_BIND given to the `up` line only, then the next command
(`docker compose ... run --rm lab`) without it, which recreates join-init with the default
bind. What was handed out (join/worker.env, Redis's certificate) must stay, so a host given
the env file afterwards joins, runs the lab's tasks in the lab's delivery mode (the env
file carries TASKRACE_DELIVERY); a new address is refused in one line.

One compose project of its own (taskrace-test-joininit-<random>), one network-namespace
host (workers.infra.netns), one joined worker: all removed in `finally` whatever happened.
Needs a Docker engine, Compose v2 and root (network namespaces): skipped locally without
them, a failure in CI.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker  # needs a Docker engine (pyproject.toml: markers)

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

try:
    from docker_helpers import Stack, base_env, compose_tools, free_port, unavailable
except ImportError:  # tests/ imported as a package
    from tests.docker_helpers import Stack, base_env, compose_tools, free_port, unavailable

FILES = ["compose/join.yml"]


def _handed_out(s: Stack, join: Path) -> dict[str, bytes]:
    """What worker hosts hold (./join) and the certificate Redis serves from join-state."""
    code, cert = s.containers("redis")[0].exec_run(["cat", "/etc/taskrace/join/redis.crt"])
    assert code == 0, cert
    return {"worker.env": (join / "worker.env").read_bytes(), "ca.crt": (join / "ca.crt").read_bytes(),
            "redis.crt": cert}


def _join_init_log(s: Stack) -> str:
    return s.compose("logs", "--no-log-prefix", "join-init", files=FILES, timeout=60).stdout


def test_join_init_keeps_what_it_handed_out_when_the_docs_commands_are_followed(engine, images, tmp_path):
    from workers.infra.netns import GATEWAY, Host, HostError, require_tools

    tools = compose_tools()
    if "v2" not in tools:
        unavailable("Compose v2 is not installed (compose/install-compose-v2.sh)")
    try:
        require_tools()
    except HostError as exc:
        unavailable(f"no network namespaces here: {exc}")
    results, join = tmp_path / "results", tmp_path / "join"
    results.mkdir()
    s = Stack(tools["v2"], "v2", engine, results)
    s.project = f"taskrace-test-joininit-{secrets.token_hex(3)}"
    # The variables of .env the docs leave as they are, and the lab's delivery mode (late acks:
    # each worker holds one task at a time, so both workers of -n 2 get some)
    s.env = base_env(LAB_RESULTS_DIR=str(results), JOIN_DIR=str(join), WORKER_REPLICAS="1",
                     TASKRACE_DELIVERY="at-least-once")
    on_the_up_line = {**s.env, "JOIN_BIND": GATEWAY, "JOIN_PORT": str(free_port())}
    worker = None
    with Host(f"j{secrets.token_hex(3)}") as host:
        try:
            # JOIN_BIND=10.77.0.1 docker compose -f docker-compose.yml -f compose/join.yml up -d redis wan worker
            s.compose("up", "-d", "redis", "wan", "worker", files=FILES, env=on_the_up_line, timeout=300)
            handed = _handed_out(s, join)
            text = handed["worker.env"].decode()
            assert f"@{GATEWAY}:{on_the_up_line['JOIN_PORT']}/0" in text, text.splitlines()[0]
            assert "TASKRACE_DELIVERY=at-least-once" in text.splitlines()

            # the next command, without the variables: compose recreates join-init with the
            # default bind; it keeps the env file and the certificate, and says so
            first_id = s.containers("join-init")[0].id
            s.compose("run", "--rm", "lab", "taskrace", "list", files=FILES, timeout=300)
            assert s.containers("join-init")[0].id != first_id, "join-init was not recreated: nothing tested"
            assert _handed_out(s, join) == handed
            assert "kept ./join/worker.env as handed out: workers join at " \
                   f"{GATEWAY}:{on_the_up_line['JOIN_PORT']}" in _join_init_log(s)

            # a host given the env file now joins (ip netns exec taskrace-w2 taskrace worker ...)
            log_path = tmp_path / "w2.log"
            with open(log_path, "w") as log:
                worker = subprocess.Popen(host.argv([sys.executable, "-m", "taskrace", "worker", "--env-file",
                                                     str(join / "worker.env"), "--name", "w2"]),
                                          cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
            deadline = time.monotonic() + 90
            while " ready." not in log_path.read_text():
                assert worker.poll() is None, log_path.read_text()[-2000:]
                assert time.monotonic() < deadline, log_path.read_text()[-2000:]
                time.sleep(0.2)
            assert "delivery at-least-once" in log_path.read_text()

            # and the lab's run (still without the variables) uses it, in the lab's mode
            s.compose("run", "--rm", "lab", "taskrace", "run", "power-io", "-b", "celery", "-n", "2",
                      "--tasks", "4", "--sleep", "0.3", "--json", "results/join.json", files=FILES, timeout=300)
            record = json.loads((results / "join.json").read_text())["runs"][0]
            assert record["verdict"]["ok"], record["verdict"]
            assert record["tier"]["delivery"]["mode"] == "at-least-once"
            assert any(node.startswith("w2@") for node in record["nodes"]), record["nodes"]
            assert _handed_out(s, join) == handed

            # an address the certificate does not name: join-init refuses in one line, keeps all
            s.compose("up", "-d", "join-init", files=FILES, env={**s.env, "JOIN_BIND": "192.0.2.7"},
                      timeout=120, check=False)
            init = s.containers("join-init")[0]
            deadline = time.monotonic() + 60
            while init.status != "exited":
                assert time.monotonic() < deadline, "join-init did not end on a refused address"
                time.sleep(0.5)
                init.reload()
            assert init.attrs["State"]["ExitCode"] == 2
            said = [line for line in _join_init_log(s).splitlines() if line.strip()]
            assert len(said) == 1 and "not 192.0.2.7" in said[0] and "JOIN_REISSUE=1" in said[0], said
            assert _handed_out(s, join) == handed
        finally:
            if worker is not None and worker.poll() is None:
                os.killpg(worker.pid, 15)  # its own session: the joiner and its pool children
                try:
                    worker.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, 9)
                    worker.wait(10)
            s.down()
            s.sweep()
            assert s.leftovers() == {"containers": [], "networks": [], "volumes": []}
