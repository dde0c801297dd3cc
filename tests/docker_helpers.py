"""Shared helpers for the tests that drive the real Docker engine and Compose
(test_compose.py, test_compose_live.py, test_faults_lab.py, test_interpreters_tier.py).

Plain module, imported explicitly. Missing Docker or Compose skips locally and fails in
CI (``unavailable``): such tests must never skip with CI=true.

The lab's first ``up`` is the slowest set-up of the suite, so one bring-up serves every
test that can use it (``bring_up_lab``, the session fixture ``compose_lab`` in conftest.py): the
compose tests, the lab kill test, the live profile's page and the fault lab, each driving
that one project with the Compose version it tests. conftest.py runs those tests one
after another and the one that takes the stack down (marker ``lab_down``) last.
"""
from __future__ import annotations

import copy
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from taskrace.lab.cluster import LABEL_PROJECT, LABEL_SERVICE, node_name

REPO_ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Built by compose/build-base-images.sh from Debian packages (no registry here).
PYTHON_BASE = "taskrace/python-base:bookworm"
REDIS_BASE = "taskrace/redis-base:bookworm"
# This session's image tag: another session building from another checkout (or the same
# one, changed) must not swap the images under this one's stacks. Untagged at the end.
TAG = f"test-{secrets.token_hex(3)}"
# What keeps the layers for the next session: the classic builder (docker-compose 1.29)
# caches in the images themselves, so removing the last tag of a build removed its cache
# too, and every session rebuilt the dependency layer (~45 s of the ~75 s build here).
CACHE_TAG = "test-cache"
# Every scenario on every tier, small: one measured run per point, short pauses.
QUICK_LAB = ("--repeat 1 --warmup 0 --set bank.trials=2 --set power-io.sleep=0.1 "
             "--set power-cpu.size=1000 --set mapreduce.size=200000")


def unavailable(msg: str):
    """Skip on a laptop without the service; fail in CI."""
    pytest.fail(msg) if IN_CI else pytest.skip(msg)


def compose_tools() -> dict[str, list[str]]:
    """The Compose CLIs installed here: v2 (the docker plugin) and/or Debian's 1.29."""
    tools = {}
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True).returncode == 0:
        tools["v2"] = ["docker", "compose"]
    if shutil.which("docker-compose"):
        tools["v1"] = ["docker-compose"]
    return tools


def sh(cmd, env=None, timeout=300, check=True, cwd=REPO_ROOT) -> subprocess.CompletedProcess:
    """Run a command; with ``check``, a non-zero exit fails the test with its output's tail."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def socket_gid() -> int:
    try:
        return os.stat("/var/run/docker.sock").st_gid
    except OSError:
        return 0


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range: a port picked now may be
    bound by Docker minutes later (the notebook profile's), and the ephemeral range is
    where every other test's connections and embedded Redis servers take theirs."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randint(max(1024, low - 12000), low - 1)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port below {low}")


def base_env(**extra) -> dict:
    """The host's environment without Compose, lab or taskrace settings, then this
    session's images (offline base images, ``TAG``) and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "LAB_", "TASKRACE_"))}
    env.update(PYTHON_IMAGE=PYTHON_BASE, REDIS_IMAGE=REDIS_BASE, TASKRACE_TAG=TAG,
               COLUMNS="200", DOCKER_GID=str(socket_gid()))
    if os.getuid() != 0:  # results written as us, so we can read and delete them
        env.update(TASKRACE_UID=str(os.getuid()), TASKRACE_GID=str(os.getgid()))
    env.update(extra)
    return env


def wait_healthy(container, timeout: float = 90) -> None:
    """Until the container's healthcheck says healthy; fails with its logs if it stops
    running or the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        container.reload()
        status = (container.attrs["State"].get("Health") or {}).get("Status")
        if status == "healthy":
            return
        assert container.status == "running", container.logs()[-3000:]
        assert time.monotonic() < deadline, (status, container.attrs["State"].get("Health"), container.logs()[-3000:])
        time.sleep(0.5)


def engine():
    """The Docker engine (SDK client), or unavailable."""
    try:
        import docker

        client = docker.from_env(timeout=60)
        client.ping()
        return client
    except Exception as exc:  # noqa: BLE001
        unavailable(f"no Docker engine answers: {exc}")


def build_images(client):
    """The base images (debootstrap + docker import), the wheels, then the lab images
    through `compose build`: all offline, all skipped when already done. Yields the
    timings; untags this session's images afterwards."""
    tools = compose_tools()
    if not tools:
        unavailable("neither docker-compose nor docker compose is installed")
    timings = {}
    for script, limit in (("compose/build-base-images.sh", 900), ("compose/build-wheels.sh", 600)):
        t0 = time.monotonic()
        sh(["bash", script], timeout=limit, env=base_env())
        timings[script] = round(time.monotonic() - t0, 1)
    build = tools.get("v1") or tools["v2"]  # the classic builder
    t0 = time.monotonic()
    sh([*build, "-p", "taskrace-test-build", "build", "redis", "worker"], timeout=1200, env=base_env())
    timings["compose build"] = round(time.monotonic() - t0, 1)
    for repo in ("taskrace/lab", "taskrace/redis"):  # this build is the next one's cache
        client.images.get(f"{repo}:{TAG}").tag(repo, CACHE_TAG)
    # Rebuilds leave the previous image untagged: remove ours, never anyone else's.
    for label in ("io.taskrace.image=lab", "io.taskrace.image=redis"):
        client.images.prune(filters={"dangling": True, "label": label})
    print(f"image timings (s): {timings}")
    try:
        yield timings
    finally:
        for name in (f"taskrace/lab:{TAG}", f"taskrace/redis:{TAG}"):  # the cache tag keeps the image
            try:
                client.images.remove(name)
            except Exception:  # noqa: BLE001 - already gone, or still used by a leftover
                pass


def sweep_project(client, project: str) -> None:
    """Every container, network and volume of a compose project, removed by its label."""
    f = {"label": f"{LABEL_PROJECT}={project}"}
    for c in client.containers.list(all=True, ignore_removed=True, filters=f):
        try:
            c.remove(force=True, v=True)
        except Exception as exc:  # noqa: BLE001 - gone meanwhile
            if getattr(exc, "status_code", None) != 404:
                raise
    for n in client.networks.list(filters=f):
        n.remove()
    for v in client.volumes.list(filters=f):
        v.remove(force=True)


class Stack:
    """One compose project (``-p``), driven by one Compose CLI (``tool``, ``version``)."""

    def __init__(self, tool: list[str], version: str, client, results: Path, name: str = "taskrace-test"):
        self.tool, self.version, self.client, self.results = tool, version, client, results
        self.project = f"{name}-{version}-{secrets.token_hex(3)}"
        self.env = base_env(LAB_ARGS=QUICK_LAB, LAB_RESULTS_DIR=str(results),
                            LAB_JSON="results/compare.json", WORKER_REPLICAS="3", LAB_WORKERS="2")

    def using(self, version: str) -> "Stack":
        """The same project, driven by Compose ``version`` (v1 and v2 both manage a
        project either made, by its labels)."""
        tools = compose_tools()
        if version not in tools:
            unavailable(f"Compose {version} is not installed")
        other = copy.copy(self)
        other.tool, other.version = tools[version], version
        return other

    def compose(self, *args, files=(), timeout=300, check=True, env=None):
        f = [x for name in files for x in ("-f", name)]
        if f:
            f = ["-f", "docker-compose.yml", *f]
        return sh([*self.tool, *f, "-p", self.project, *args], env=env or self.env, timeout=timeout,
                  check=check)

    def containers(self, service: str | None = None, all=True):
        labels = [f"{LABEL_PROJECT}={self.project}"] + ([f"{LABEL_SERVICE}={service}"] if service else [])
        return self.client.containers.list(all=all, ignore_removed=True, filters={"label": labels})

    def running_workers(self):
        return [c for c in self.containers("worker", all=False)]

    def cli(self, *args, env=None, timeout=120):
        return subprocess.run([sys.executable, "-m", "taskrace", *args], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=timeout, env=env or dict(os.environ, COLUMNS="200"))

    def leftovers(self) -> dict:
        f = {"label": f"{LABEL_PROJECT}={self.project}"}
        return {"containers": [c.name for c in self.client.containers.list(all=True, ignore_removed=True,
                                                                          filters=f)],
                "networks": [n.name for n in self.client.networks.list(filters=f)],
                "volumes": [v.name for v in self.client.volumes.list(filters=f)]}

    def down(self):
        self.compose("down", "-v", "--remove-orphans", "--timeout", "5", timeout=180, check=False)

    def sweep(self):
        """Whatever `down` left (a crash mid-test, a clone): removed by label."""
        sweep_project(self.client, self.project)


def bring_up_lab(client, results: Path):
    """The lab as `docker compose --profile live up -d` starts it (Compose v2 where
    installed), with the quick lab, three worker replicas, a password of its own and the
    live view on a free loopback port; yields the Stack once the lab has exited (its
    ``lab_exit``, ``lab_log``, ``lab_seconds``, ``worker_nodes``). Taken down and swept afterwards whatever
    happened, also when the bring-up itself failed."""
    tools = compose_tools()
    version = "v2" if "v2" in tools else "v1"
    if version not in tools:
        unavailable("neither docker compose nor docker-compose is installed")
    s = Stack(tools[version], version, client, results, name="taskrace-test-lab")
    s.password = f"lab{secrets.token_hex(8)}"
    s.live_port = free_port()
    # The notebooks folder the workers mount (and the `notebook` profile, which
    # test_compose_notebook.py starts on this stack, writes to, as the lab's user).
    s.notebooks = results.parent / f"{results.name}-notebooks"
    s.notebooks.mkdir()
    if os.getuid() == 0:
        os.chown(s.notebooks, int(s.env.get("TASKRACE_UID", 10001)), int(s.env.get("TASKRACE_GID", 10001)))
    s.notebook_port = free_port()
    s.env.update(REDIS_PASSWORD=s.password, COMPOSE_PROFILES="live", LIVE_PORT=str(s.live_port),
                 NOTEBOOKS_DIR=str(s.notebooks), NOTEBOOK_PORT=str(s.notebook_port))
    try:
        t0 = time.monotonic()
        s.compose("up", "-d", timeout=300)
        lab = s.containers("lab")
        assert len(lab) == 1, [c.name for c in s.containers()]
        status = lab[0].wait(timeout=300)
        s.lab_seconds = round(time.monotonic() - t0, 1)
        s.lab_exit = status["StatusCode"]
        s.lab_log = lab[0].logs().decode(errors="replace")
        # The worker containers that ran it (tests later recreate the service).
        s.worker_nodes = {node_name(c) for c in s.containers("worker")}
        print(f"compose {version}: lab ran in {s.lab_seconds} s")
        yield s
    finally:
        s.down()
        s.sweep()
        shutil.rmtree(results, ignore_errors=True)
        shutil.rmtree(s.notebooks, ignore_errors=True)
