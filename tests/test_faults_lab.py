"""`taskrace faults --lab`: the fault lab on the compose stack's containers, on a real
Docker engine.

The runs use the session's lab (fixture ``compose_lab``, conftest.py: one bring-up for
this module, tests/test_compose.py and the live view's test), its broker above all; the
harness runs inside it as `compose run --rm --no-deps lab` with compose/faults.yml (the
Docker socket), starts worker containers and a ledger container of its own on a private
queue, injects the faults through the Docker SDK and removes all of it. No host process
talks to a container: the test reads results from a folder and inspects containers
through the engine. Stacks that must be something else (no broker at all, a harness
killed mid-run) are compose projects of their own (taskrace-faults-<random>), with only
`redis` up; `down -v` and a sweep by label run in a finalizer whatever happened.

Skipped only where no Docker engine answers and CI is unset; in CI a missing engine or
Compose fails. Images: the session's (conftest.py ``images``: offline, local Debian base
images).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker  # needs a Docker engine (pyproject.toml: markers)

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

try:
    from celery_procs import wait_for
    from docker_helpers import base_env, compose_tools as _compose_tools, sh as _sh, sweep_project, unavailable as _unavailable
except ImportError:  # tests/ imported as a package
    from tests.celery_procs import wait_for
    from tests.docker_helpers import (base_env, compose_tools as _compose_tools, sh as _sh, sweep_project,
                                      unavailable as _unavailable)

from taskrace.faultlab.lab import LABEL_ROLE, LABEL_RUN, NO_PERSISTENCE_CHOICE, node_of  # noqa: E402
from taskrace.lab.cluster import LABEL_PROJECT, LABEL_SERVICE  # noqa: E402

FAULTS_YML = "compose/faults.yml"
SMALL = ["--ops", "16", "--work", "0.2", "--no-contrast", "--no-progress"]


def _base_env(**extra) -> dict:
    return base_env(COLUMNS="120", **extra)


# Compose's own progress on stderr (v2: " Network x  Creating", v1: "Creating network x").
COMPOSE_PROGRESS = re.compile(r"\s*(Network|Volume|Container|Creating|Starting|Removing|Pulling)\b")


def _one_line(text: str) -> str:
    """The harness's error: one line, whatever Compose printed around it."""
    lines = [line for line in text.strip().splitlines() if line.strip() and not COMPOSE_PROGRESS.match(line)]
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture(scope="module")
def tool():
    tools = _compose_tools()
    if not tools:
        _unavailable("neither docker compose nor docker-compose is installed")
    return tools.get("v2") or tools["v1"]


# a stack: the session's lab, or one with only its broker up ---------------------------------
class Stack:
    def __init__(self, tool, client, results: Path, name: str = "taskrace-faults"):
        self.tool, self.client, self.results = tool, client, results
        self.project = f"{name}-{secrets.token_hex(3)}"
        self.password = f"faultlab{secrets.token_hex(8)}"
        self.env = _base_env(REDIS_PASSWORD=self.password, LAB_RESULTS_DIR=str(results), WORKER_REPLICAS="0")

    @classmethod
    def on(cls, lab) -> "Stack":
        """The session's lab (conftest.py ``compose_lab``): its project, password, results
        folder and environment, driven by the Compose that brought it up."""
        s = cls.__new__(cls)
        s.tool, s.client, s.results = lab.tool, lab.client, lab.results
        s.project, s.password, s.env = lab.project, lab.password, lab.env
        return s

    def compose(self, *args, files=(), timeout=300, check=True, popen=False):
        f = ["-f", "docker-compose.yml", *[x for name in files for x in ("-f", name)]] if files else []
        cmd = [*self.tool, *f, "-p", self.project, *args]
        if popen:
            return subprocess.Popen(cmd, cwd=REPO_ROOT, env=self.env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        return _sh(cmd, env=self.env, timeout=timeout, check=check)

    def faults(self, *args, files=(FAULTS_YML,), popen=False, timeout=600, check=False):
        """``taskrace faults`` in a one-off lab container of this stack (no dependencies
        started: the broker is up, the results folder is writable)."""
        return self.compose("run", "--rm", "-T", "--no-deps", "lab", "taskrace", "faults", *args,
                            files=files, popen=popen, timeout=timeout, check=check)

    def containers(self, *labels: str, all=True):
        f = {"label": [f"{LABEL_PROJECT}={self.project}", *labels]}
        return self.client.containers.list(all=all, ignore_removed=True, filters=f)

    def broker(self):
        return self.containers(f"{LABEL_SERVICE}=redis", all=False)[0]

    def up_broker(self):
        self.compose("up", "-d", "redis", timeout=300)
        c = [c for c in self.containers(f"{LABEL_SERVICE}=redis") if LABEL_RUN not in c.labels][0]

        def healthy():
            c.reload()
            assert c.status in ("created", "running"), c.logs()[-2000:]
            return (c.attrs["State"].get("Health") or {}).get("Status") == "healthy"

        wait_for(healthy, 120, "the broker to be healthy", 0.25)

    def unacked(self) -> set[str]:
        """The delivery tags in kombu's ``unacked`` hash of the stack's broker."""
        code, out = self.broker().exec_run(["redis-cli", "hkeys", "unacked"])
        assert code == 0, out
        return set(out.decode().split())

    def broker_keys(self, pattern: str) -> list[str]:
        """Keys in the stack's broker, asked inside its container (REDISCLI_AUTH is set there)."""
        code, out = self.broker().exec_run(["redis-cli", "--scan", "--pattern", pattern])
        assert code == 0, out
        return out.decode().split()

    def down(self):
        self.compose("down", "-v", "--remove-orphans", "--timeout", "5", timeout=180, check=False)

    def sweep(self):
        sweep_project(self.client, self.project)

    def leftovers(self) -> dict:
        f = {"label": f"{LABEL_PROJECT}={self.project}"}
        containers = self.client.containers.list(all=True, ignore_removed=True, filters=f)
        return {"containers": [c.name for c in containers],
                "networks": [n.name for n in self.client.networks.list(filters=f)],
                "volumes": [v.name for v in self.client.volumes.list(filters=f)]}


def _results_dir(tmp_path_factory, name: str) -> Path:
    d = tmp_path_factory.mktemp(name)
    d.chmod(0o777)  # the lab's user (TASKRACE_UID) writes here; no results-init with --no-deps
    return d


@pytest.fixture(scope="module")
def stack(compose_lab):
    """The session's lab as the fault lab's recipe has it (docs/lab.md, step 5): its broker
    up and healthy, no worker of its own consuming. The lab's workers are stopped meanwhile,
    not only idle: kombu's ``unacked`` index is one per Redis database, and a worker whose
    mode restores after 4 s (an earlier test leaves them at-least-once) would hand the fault
    runs' unacknowledged messages back early, so an at-most-once run would see duplicates."""
    s = Stack.on(compose_lab)
    assert (s.broker().attrs["State"].get("Health") or {}).get("Status") == "healthy"
    s.compose("stop", "--timeout", "5", "worker", timeout=120)
    try:
        yield s
    finally:
        s.compose("start", "worker", timeout=120)


# no Docker needed ----------------------------------------------------------------------------
def test_node_of_maps_every_generation_back_to_its_node():
    assert node_of("worker@fault-ab12cd-w1-g1:8") == "fault-ab12cd-w1"
    assert node_of("worker@fault-ab12cd-w2-g3:11") == "fault-ab12cd-w2"
    assert node_of("worker@fault-ab12cd-w1-g1:8") != node_of("worker@fault-ab12cd-w2-g1:8")


def _host_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "taskrace", "faults", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120,
                          env=env or dict(os.environ, COLUMNS="120"))


def test_lab_refuses_a_broker_persistence_it_does_not_have():
    out = _host_cli("--lab", "--fault", "restart-broker", "--broker-persistence", "none")
    assert out.returncode == 2, out
    assert NO_PERSISTENCE_CHOICE in _one_line(out.stderr)


def test_lab_without_an_engine_is_one_line():
    out = _host_cli("--lab", "--fault", "kill-worker",
                    env=dict(os.environ, DOCKER_HOST="unix:///nonexistent/docker.sock", COLUMNS="120"))
    assert out.returncode == 2, out
    assert "no Docker engine answers" in _one_line(out.stderr)


def test_partition_needs_the_lab():
    out = _host_cli("--fault", "partition-worker")
    assert out.returncode == 2, out
    assert "needs the compose lab: add --lab" in _one_line(out.stderr)


# on the engine ---------------------------------------------------------------------------------
def _inspect_while_running(stack, proc) -> dict:
    """The run's containers as the engine sees them, caught while the run is going."""
    seen: dict = {}

    def look():
        for c in stack.containers(LABEL_RUN):
            try:
                c.reload()
            except Exception:  # noqa: BLE001 - removed meanwhile (a killed node)
                continue
            seen.setdefault(c.labels[LABEL_ROLE], c.attrs)
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before its containers were seen: {proc.communicate()}")
        return {"worker", "ledger"} <= set(seen)

    wait_for(look, 180, "the run's worker and ledger containers", 0.2)
    return seen


def _assert_hardened(attrs: dict, project: str, image_user: str):
    host = attrs["HostConfig"]
    where = attrs["Name"]
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd"), where
    assert "no-new-privileges:true" in (host.get("SecurityOpt") or []), where
    assert host["ReadonlyRootfs"] is True and host["Init"] is True, where
    assert not host.get("Privileged") and not host.get("GroupAdd"), where
    assert not host.get("Binds") and not attrs.get("Mounts"), (where, attrs.get("Mounts"))  # no socket
    assert not host.get("PortBindings") and not host.get("PublishAllPorts"), where
    assert list(attrs["NetworkSettings"]["Networks"]) == [host["NetworkMode"]], where
    assert host["NetworkMode"].startswith(project), where
    user = attrs["Config"].get("User") or image_user
    assert user and user.split(":")[0] not in ("0", "root"), (where, user)


def test_kill_and_pause_in_the_lab_keep_each_modes_promise(stack):
    # kombu's restore mutex as a worker killed inside its sweep leaves it (held 100 s of its
    # 300): no worker of the stack would restore anything, and at-least-once would lose.
    code, out = stack.broker().exec_run(["redis-cli", "set", "unacked_mutex", "stale-by-test", "EX", "200"])
    assert code == 0 and b"OK" in out, out
    # The lab's own containers and unacked messages, if any: the runs must add none.
    containers, unacked = {c.id: c.name for c in stack.containers()}, stack.unacked()
    proc = stack.faults("--lab", "--fault", "kill-worker,pause-worker", "--mode", "at-most-once,at-least-once",
                        *SMALL, "--json", "results/f.json", popen=True)
    try:
        seen = _inspect_while_running(stack, proc)
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, (out[-3000:], err[-3000:])
    # Worker and ledger containers: the stack's hardening, no socket, no port, non-root.
    for role, attrs in seen.items():
        image_user = stack.client.images.get(attrs["Image"]).attrs["Config"].get("User")
        _assert_hardened(attrs, stack.project, image_user)
    assert seen["worker"]["Config"]["Cmd"] == ["taskrace-worker"]
    env = dict(e.split("=", 1) for e in seen["worker"]["Config"]["Env"])
    assert env["TASKRACE_QUEUE"].startswith("taskrace.fault.") and env["TASKRACE_DELIVERY"]
    assert seen["worker"]["Config"]["Labels"][LABEL_SERVICE] == "worker"

    doc = json.loads((stack.results / "f.json").read_text())
    runs = {(r["fault"], r["mode"]): r for r in doc["runs"]}
    assert set(runs) == {(f, m) for f in ("kill-worker", "pause-worker")
                         for m in ("at-most-once", "at-least-once")}, sorted(runs)
    for key, r in runs.items():
        assert r["where"] == "lab" and r["fired"] and r["kept"] is True, (key, r["verdict"])
        assert r["fault_info"]["container"].startswith(f"{stack.project}-fault-"), r["fault_info"]
        assert r["counts"]["planned"] == 16
    amo, alo = runs[("kill-worker", "at-most-once")]["counts"], runs[("kill-worker", "at-least-once")]["counts"]
    assert amo["lost"] >= 1 and amo["duplicated"] == 0, amo
    assert alo["lost"] == 0, alo
    paused = runs[("pause-worker", "at-least-once")]["counts"]
    assert paused["lost"] == 0 and paused["duplicated"] >= 1, paused
    assert "kill-worker" in out and "pause-worker" in out and "at-least-once" in out  # the tables

    # No secret printed or written: the stack's password, the ledger's URL.
    written = (stack.results / "f.json").read_text()
    for text in (out, err, written):
        assert stack.password not in text and "redis://:" not in text
    # Nothing of the runs is left: no container, no key in the shared broker, no message
    # taken and not acknowledged.
    assert stack.containers(LABEL_RUN) == []
    assert {c.id: c.name for c in stack.containers()} == containers
    assert stack.broker_keys("*taskrace.fault.*") == []
    assert stack.unacked() <= unacked, stack.unacked() - unacked
    code, mutex = stack.broker().exec_run(["redis-cli", "get", "unacked_mutex"])
    assert code == 0 and b"stale-by-test" not in mutex, mutex


def test_partition_and_broker_restart_in_the_lab_lose_nothing_at_least_once(stack):
    # restart-broker kills the stack's own redis container and starts it again: its AOF
    # (named volume) brings the queue back, and its tmpfs config dir must be writable again.
    out = stack.faults("--lab", "--fault", "partition-worker,restart-broker", "--mode", "at-least-once",
                       *SMALL, "--json", "results/p.json")
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    runs = {r["fault"]: r for r in json.loads((stack.results / "p.json").read_text())["runs"]}
    assert set(runs) == {"partition-worker", "restart-broker"}, sorted(runs)
    for fault, r in runs.items():
        assert r["where"] == "lab" and r["fired"], (fault, r["verdict"])
        assert r["healed_at_s"] is not None and r["counts"]["lost"] == 0, (fault, r["counts"])
        assert r["kept"] is True, (fault, r["verdict"])
    assert runs["partition-worker"]["fault_info"]["network"].startswith(stack.project)
    assert runs["restart-broker"]["broker_persistence"] == "aof"
    assert stack.containers(LABEL_RUN) == []
    assert stack.broker().status == "running"  # the stack's broker is back, as we found it


def test_lab_errors_are_one_line(stack, tool, tmp_path_factory):
    # Inside the lab without compose/faults.yml: no socket, so no engine.
    out = stack.faults("--lab", "--fault", "kill-worker", *SMALL, files=())
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "compose/faults.yml" in _one_line(out.stderr)
    # On the host: the harness belongs inside the lab's network.
    host = _host_cli("--lab", "--fault", "kill-worker",
                     env=dict(os.environ, COMPOSE_PROJECT_NAME=stack.project, COLUMNS="120"))
    assert host.returncode == 2 and "inside the lab" in _one_line(host.stderr), host
    # A stack whose broker is not up.
    results = _results_dir(tmp_path_factory, "faults-lab-nobroker")
    empty = Stack(tool, stack.client, results, name="taskrace-faults-empty")
    try:
        out = empty.faults("--lab", "--fault", "kill-worker", *SMALL)
        assert out.returncode == 2, (out.stdout, out.stderr)
        assert "'redis' service" in _one_line(out.stderr) and "not running" in out.stderr
    finally:
        empty.down()
        empty.sweep()
        shutil.rmtree(results, ignore_errors=True)
    assert empty.leftovers() == {"containers": [], "networks": [], "volumes": []}


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_down_removes_what_a_killed_harness_left(version, engine, images, tmp_path_factory):
    """The harness dies by SIGKILL mid-run (no clean-up code runs): its worker and ledger
    containers carry the compose labels, so `down -v` removes them with the stack."""
    tools = _compose_tools()
    if version not in tools:
        _unavailable(f"Compose {version} is not installed")
    results = _results_dir(tmp_path_factory, f"faults-lab-kill-{version}")
    s = Stack(tools[version], engine, results, name=f"taskrace-faults-{version}")
    proc = None
    try:
        s.up_broker()
        proc = s.faults("--lab", "--fault", "pause-worker", "--mode", "at-least-once", *SMALL, popen=True)
        _inspect_while_running(s, proc)
        harness = wait_for(lambda: s.containers(f"{LABEL_SERVICE}=lab", all=False), 60, "the harness container")
        for c in harness:
            c.kill()
        proc.communicate(timeout=120)
        assert s.containers(LABEL_RUN), "the killed harness should have left its containers"
        s.compose("down", "-v", "--timeout", "5", timeout=180)
        assert s.leftovers() == {"containers": [], "networks": [], "volumes": []}
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()
        s.down()
        s.sweep()
        shutil.rmtree(results, ignore_errors=True)
