"""The compose lab on a real Docker engine: images built offline, the whole lab run by
`compose up`, the stack scaled, inspected and torn down, with Compose v1 and v2.

Skipped only where no Docker engine answers and CI is unset; in CI a missing engine or
Compose version fails. Images come from compose/build-base-images.sh (local Debian base
images: no registry is ever asked) and compose/build-wheels.sh; both skip work already
done, so only the first session on a machine pays for them (~4 minutes).

The lab is brought up once for the session (fixture ``compose_lab``, conftest.py and
docker_helpers.py: Compose v2, the live profile on), and shared with the live view's and
the fault lab's tests: every test here that needs Compose v1 and v2 drives that one
project with each (``stack``), and re-`up`s only the services its configuration changes
(the workers). Stacks of another configuration (`up --exit-code-from`, the opt-in Redis
port, the join) are compose projects of their own (taskrace-test-<random>). Each is
removed with `down -v` in a finalizer whatever happened, then swept by label.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
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
    from docker_helpers import TAG, Stack, base_env as _base_env, compose_tools as _compose_tools, \
        free_port as _free_port, sh as _sh, unavailable as _unavailable
except ImportError:  # tests/ imported as a package
    from tests.docker_helpers import (TAG, Stack, base_env as _base_env, compose_tools as _compose_tools,
                                      free_port as _free_port, sh as _sh, unavailable as _unavailable)

from scenarios import SCENARIOS  # noqa: E402
from taskrace.lab.cluster import LABEL_SERVICE, node_name  # noqa: E402
from workers import TIERS as TIER_REGISTRY  # noqa: E402

TIERS = ["sequential", "threads", "processes", "celery"]  # the lab's own; compare runs every registered tier
SAFE_STRATEGIES = ["lock", "atomic", "optimistic", "queue"]


def test_compose_config_validates_with_v1_and_v2():
    tools = _compose_tools()
    for version in ("v1", "v2"):
        if version not in tools:
            _unavailable(f"Compose {version} is not installed (compose/install-compose-v2.sh for v2)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "LAB_"))}
    env["DOCKER_GID"] = "999"
    for version, tool in tools.items():
        for files in ([], ["-f", "docker-compose.yml", "-f", "compose/scaling.yml"],
                      ["-f", "docker-compose.yml", "-f", "compose/redis-port.yml"],
                      ["-f", "docker-compose.yml", "-f", "compose/join.yml"]):
            _sh([*tool, *files, "config", "-q"], env=env, timeout=60)
        services = _sh([*tool, "config", "--services"], env=env, timeout=60).stdout.split()
        assert {"redis", "worker", "lab"} <= set(services), (version, services)
        assert "- monitoring" in _sh([*tool, "--profile", "monitoring", "config"], env=env, timeout=60).stdout
        live = _sh([*tool, "--profile", "live", "config"], env=env, timeout=60).stdout
        assert "- live" in live and "env:TASKRACE_BROKER_URL" in live, live
        if version == "v2":  # v1 lists every service whatever the profile; v2 filters
            assert "flower" not in services and "live" not in services
            for profile, service in (("monitoring", "flower"), ("live", "live")):
                with_profile = _sh([*tool, "--profile", profile, "config", "--services"], env=env,
                                   timeout=60).stdout.split()
                assert service in with_profile, (profile, with_profile)
    # The scaling override refuses to run without the socket's group.
    env.pop("DOCKER_GID")
    proc = _sh([*tools["v1"], "-f", "docker-compose.yml", "-f", "compose/scaling.yml", "config", "-q"],
               env=env, timeout=60, check=False)
    assert proc.returncode != 0 and "DOCKER_GID" in proc.stderr


# the lab, up once (conftest.py: compose_lab), driven by Compose v1 and v2 ----------------
@pytest.fixture(params=["v1", "v2"])
def stack(request, compose_lab):
    """The session's lab, driven by Compose ``request.param`` (v1 and v2 both manage a
    project either one made, by its labels)."""
    return compose_lab.using(request.param)


def test_lab_runs_every_scenario_on_every_tier(compose_lab):
    stack = compose_lab  # the run of the bring-up itself: whichever Compose drives it later
    assert stack.lab_exit == 0, stack.lab_log[-3000:]
    assert "taskrace compare" in stack.lab_log  # the table went to the logs
    doc = json.loads((stack.results / "compare.json").read_text())
    runs = doc["runs"]
    seen = {(r["scenario"], r["backend"]) for r in runs}
    assert seen >= {(s, t) for s in SCENARIOS for t in TIERS}, sorted(seen)
    # and every other tier that loads in the lab image's Python ran too (interpreters needs 3.14+)
    loads = _sh(["docker", "run", "--rm", "--network", "none", f"taskrace/lab:{TAG}", "python", "-c",
                 "from workers import available_tiers; print(*available_tiers())"], timeout=60).stdout.split()
    assert set(loads) <= set(TIER_REGISTRY) and set(TIERS) <= set(loads), loads
    assert {t for _, t in seen} == set(loads), sorted(seen)
    for r in runs:
        where = f"{r['scenario']} {r['strategy'] or ''} on {r['backend']} -n {r['workers']}"
        assert r.get("agrees_with_sequential") is not False, where
        if r["scenario"] == "bank" and r["backend"] != "sequential":
            if r["strategy"] == "none":
                assert not r["verdict"]["ok"] and r["verdict"]["unsafe"], f"{where}: no lost update"
            else:
                assert r["verdict"]["ok"], f"{where}: {r['verdict']}"
        elif r["scenario"] != "bank":
            assert r["verdict"]["ok"], f"{where}: {r['verdict']}"
    strategies = {r["strategy"] for r in runs if r["scenario"] == "bank" and r["backend"] == "celery"}
    assert strategies == {"none", *SAFE_STRATEGIES}
    # The celery tier used the worker service, not workers of its own.
    nodes = {node_name(c) for c in stack.containers("worker")}
    for r in runs:
        if r["backend"] == "celery":
            assert r["tier"]["external_workers"] is True
            assert r["nodes"] and set(r["nodes"]) <= nodes, (r["nodes"], nodes)
    # Per worker container, measured inside it: tasks, CPU seconds, peak memory.
    for r in runs:
        if r["backend"] == "celery":
            assert set(r["node_metrics"]) == set(r["nodes"]), r["scenario"]
            assert all(m["max_rss_bytes"] > 0 for m in r["node_metrics"].values())
    assert "Per worker node" in (stack.results / "report" / "index.html").read_text()
    # Plain tasks met exactly -n workers, though the stack runs one replica more.
    for r in runs:
        if r["backend"] == "celery" and r["scenario"] in ("power-io", "power-cpu", "mapreduce", "globals"):
            assert len(r["nodes"]) <= r["workers"], (r["scenario"], r["nodes"])
    # The lab always writes the report beside the JSON.
    html = (stack.results / "report" / "index.html").read_text()
    assert all(f">{t}<" in html or t in html for t in TIERS)
    assert list((stack.results / "report").glob("*.png"))
    # Results are not root's on the host.
    assert (stack.results / "compare.json").stat().st_uid != 0


def test_scaling_to_two_workers_uses_both(stack):
    """The lab resizes the worker service itself (compose/scaling.yml: Docker socket), in a
    one-off lab container of each Compose."""
    out = stack.compose("run", "--rm", "lab", "taskrace", "compare", "--backend", "celery", "-n", "2",
                        "--scenario", "mapreduce", "--set", "mapreduce.size=200000", "--repeat", "1",
                        "--warmup", "0", "--no-progress", "--json", "results/scale.json",
                        files=["compose/scaling.yml"], timeout=300)
    assert "results:" in out.stdout, out.stdout[-2000:]
    record = next(r for r in json.loads((stack.results / "scale.json").read_text())["runs"]
                  if r["backend"] == "celery")
    workers = stack.running_workers()
    assert len(workers) == 2, [c.name for c in workers]
    assert sorted(record["nodes"]) == sorted(node_name(c) for c in workers), record["nodes"]
    assert all(count > 0 for count in record["nodes"].values())
    assert sorted(record["tier"]["nodes_up"]) == sorted(record["nodes"])


def test_cluster_status_scale_and_kill_worker(stack):
    # The workers as this Compose makes them (v1 names replicas <project>_worker_<n>, v2
    # <project>-worker-<n>): `taskrace cluster scale` names its clones after them.
    stack.compose("up", "-d", "--no-deps", "--force-recreate", "--timeout", "5", "--scale", "worker=2", "worker",
                  timeout=180)
    sep = "_" if stack.version == "v1" else "-"
    names = [c.name for c in stack.running_workers()]
    assert len(names) == 2 and all(re.fullmatch(rf"{stack.project}{sep}worker{sep}\d+", n) for n in names), names
    p = ["cluster", "--project", stack.project]
    scaled = stack.cli(*p, "scale", "3")
    assert scaled.returncode == 0, scaled.stderr
    assert len(stack.running_workers()) == 3
    time.sleep(2)  # let the new workers boot before we look at their processes
    st = stack.cli(*p, "status", "--json")
    assert st.returncode == 0, st.stderr
    rows = json.loads(st.stdout)
    running = [r for r in rows if r["status"] == "running"]
    assert len(running) == 3
    for r in running:
        assert r["node"].startswith("worker@")
        assert any("celery" in proc["command"] for proc in r["processes"]), r["processes"]
        assert r["memory_bytes"] and r["memory_bytes"] > 0 and r["cpu_percent"] is not None
    table = stack.cli(*p, "status")
    assert table.returncode == 0 and "worker containers" in table.stdout and "python3 -m celery worker" in table.stdout
    killed = stack.cli(*p, "kill-worker")
    assert killed.returncode == 0, killed.stderr
    assert len(stack.running_workers()) == 2
    victim = next(c for c in stack.containers("worker") if c.status != "running")
    assert victim.name in killed.stdout and victim.attrs["State"]["ExitCode"] == 137  # SIGKILL
    by_name = stack.cli(*p, "kill-worker", "no-such-worker")
    assert by_name.returncode == 2 and len(by_name.stderr.strip().splitlines()) == 1
    back = stack.cli(*p, "scale", "2")  # restarts the killed one
    assert back.returncode == 0 and len(stack.running_workers()) == 2, back.stderr
    # Errors are one line and exit 2: no such stack, no engine.
    missing = stack.cli("cluster", "--project", "taskrace-no-such-project", "status")
    assert missing.returncode == 2 and "no worker containers" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    no_engine = stack.cli(*p, "status", env=dict(os.environ, DOCKER_HOST="unix:///nonexistent/docker.sock"))
    assert no_engine.returncode == 2 and "no Docker engine" in no_engine.stderr, no_engine.stderr
    assert len(no_engine.stderr.strip().splitlines()) == 1


def test_redis_is_private_persistent_and_not_evicting(compose_lab):
    stack = compose_lab
    redis_c = stack.containers("redis")[0]
    redis_c.reload()
    assert not redis_c.attrs["HostConfig"]["PortBindings"], redis_c.attrs["HostConfig"]["PortBindings"]
    assert all(not bound for bound in (redis_c.attrs["NetworkSettings"]["Ports"] or {}).values())
    for key, want in (("appendonly", "yes"), ("maxmemory-policy", "noeviction"), ("protected-mode", "yes")):
        code, out = redis_c.exec_run(["redis-cli", "--no-raw", "config", "get", key])
        assert code == 0 and want in out.decode(), (key, out)
    code, out = redis_c.exec_run(["sh", "-c", "REDISCLI_AUTH= redis-cli ping"])
    assert b"NOAUTH" in out, out  # no password, no service
    assert redis_c.attrs["State"]["Health"]["Status"] == "healthy"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_redis_opt_in_port_is_loopback_only(version, engine, images, tmp_path):
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    tools = _compose_tools()
    if version not in tools:
        _unavailable(f"Compose {version} is not installed")
    port = _free_port()
    extra = Stack(tools[version], version, engine, tmp_path, name="taskrace-test-port")
    extra.env = _base_env(REDIS_HOST_PORT=str(port), REDIS_PASSWORD="optinportcheck123")
    try:
        extra.compose("up", "-d", "redis", files=["compose/redis-port.yml"], timeout=180)
        c = extra.containers("redis")[0]
        bindings = c.attrs["HostConfig"]["PortBindings"]["6379/tcp"]
        assert [b["HostIp"] for b in bindings] == ["127.0.0.1"], bindings
        deadline = time.monotonic() + 60
        while True:
            try:
                assert redis.Redis(port=port, password="optinportcheck123", socket_timeout=5).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, socket_timeout=5, retry=Retry(NoBackoff(), 0)).ping()  # no backoff: ~8 s
    finally:
        extra.down()
        extra.sweep()


def test_containers_do_not_run_as_root(stack):
    checked = []
    for c in stack.containers(all=False):
        service = c.labels[LABEL_SERVICE]
        if service == "results-init":
            continue  # the one documented exception, checked below
        code, out = c.exec_run(["id", "-u"])
        assert code == 0 and out.decode().strip() != "0", (service, out)
        checked.append(service)
    assert {"redis", "worker", "live"} <= set(checked), checked
    # results-init: root for one chown, with that capability alone, no network, a read-only
    # root filesystem; then it only idles (so that `up --exit-code-from lab` can work).
    init = stack.containers("results-init")[0]
    init.reload()
    host = init.attrs["HostConfig"]
    assert init.status == "running" and init.attrs["State"]["Health"]["Status"] == "healthy"
    assert host["CapDrop"] == ["ALL"] and [c.removeprefix("CAP_") for c in host["CapAdd"]] == ["CHOWN"], host
    assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True
    assert "no-new-privileges:true" in host["SecurityOpt"]
    commands = [row[-1] for row in init.top()["Processes"]]
    assert len(commands) == 2 and "sleep infinity" in commands[-1], commands  # tini + sleep
    lab = stack.containers("lab")[0]
    assert lab.attrs["Config"]["User"].split(":")[0] not in ("", "0", "root")
    out = stack.compose("run", "--rm", "--no-deps", "lab", "id", "-u", timeout=120).stdout
    assert out.strip().splitlines()[-1].strip() not in ("", "0"), out


# the idioms Compose users reach for ------------------------------------------------------
# A light lab: the actor scenarios (pipeline; bank, whose `queue` strategy has an owner
# beside its n actors) and power-cpu, one measured run each.
LIGHT_LAB = ("--scenario pipeline,bank,power-cpu --repeat 1 --warmup 0 --set bank.trials=1 "
             "--set bank.steps=20 --set power-cpu.size=1000 --set pipeline.items=40")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_up_scale_worker_2_exit_code_from_lab(version, engine, images, tmp_path):
    """`docker compose up --scale worker=2 --exit-code-from lab`: two workers for the lab's
    -n 2, the stack stopped when the lab ends, the lab's exit code as compose's own. The
    one-shot results-init must not end the stack, and the actor that has no worker slot
    (pipeline's producer, bank queue's owner) runs in the lab container."""
    tools = _compose_tools()
    if version not in tools:
        _unavailable(f"Compose {version} is not installed")
    results = tmp_path / "results"  # absent: the engine creates it, root's, and results-init hands it over
    s = Stack(tools[version], version, engine, results, name="taskrace-test-up")
    s.env = _base_env(LAB_ARGS=LIGHT_LAB, LAB_RESULTS_DIR=str(results), LAB_JSON="results/compare.json",
                      LAB_WORKERS="2")
    try:
        proc = s.compose("up", "--scale", "worker=2", "--exit-code-from", "lab", timeout=600, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]
        assert "taskrace compare" in out and "results: " in out, out[-3000:]  # the table, in the logs
        workers = s.containers("worker")
        assert len(workers) == 2, [c.name for c in workers]
        # --exit-code-from stops the stack once the lab is done: nothing is left running.
        assert s.containers(all=False) == [], [c.name for c in s.containers(all=False)]
        lab = s.containers("lab")[0]
        assert lab.attrs["State"]["ExitCode"] == 0
        doc = json.loads((results / "compare.json").read_text())
        runs = {(r["scenario"], r["strategy"], r["backend"]): r for r in doc["runs"]}
        assert set(TIERS) <= {b for (_, _, b) in runs}
        for r in doc["runs"]:
            where = f"{r['scenario']} {r['strategy'] or ''} on {r['backend']}"
            assert r.get("agrees_with_sequential") is not False, where
            assert r["verdict"]["ok"] or (r["strategy"] == "none" and r["verdict"]["unsafe"]), where
        worker_nodes = {node_name(c) for c in workers}
        for key in (("pipeline", None, "celery"), ("bank", "queue", "celery")):
            r = runs[key]
            harness = [n for n in r["nodes"] if n.startswith("harness@")]
            # n + 1 actors on 2 one-slot workers: one ran in the lab container, the rest on both workers.
            assert len(harness) == 1 and set(r["nodes"]) - set(harness) == worker_nodes, (key, r["nodes"])
            assert r["metrics"]["actors_in_harness"] == 1, key
            assert r["metrics"]["source"] == "worker nodes (2) + harness (1 actor)", key
            assert r["tier"]["actor_slots"] == 2 and r["tier"]["extra_actor_workers"] == 0, key
        # Two actors fit two workers: none in the harness.
        none = runs[("bank", "none", "celery")]
        assert none["metrics"]["actors_in_harness"] == 0 and set(none["nodes"]) == worker_nodes
        # CPU %, peak RSS and processes of the celery rows are the workers', measured in them.
        cpu = runs[("power-cpu", None, "celery")]
        m = cpu["metrics"]
        assert m["source"] == f"worker nodes ({len(cpu['nodes'])})" and set(cpu["nodes"]) <= worker_nodes
        assert m["cpu_seconds"] == pytest.approx(sum(x["cpu_s"] for x in cpu["node_metrics"].values()), abs=0.002)
        assert m["cpu_seconds"] > 0 and m["os_processes"] == len(cpu["node_metrics"])
        assert m["peak_rss_bytes"] == sum(x["max_rss_bytes"] for x in cpu["node_metrics"].values())
        assert m["harness"]["source"] == "harness process tree"  # the lab container's own, kept beside
        assert runs[("power-cpu", None, "processes")]["metrics"]["source"] == "harness process tree"
        # The CPU capacity it printed is a ceiling: never above the CPUs it had.
        for c in doc["environment"]["cpu_capacity"].values():
            assert c["capacity"] <= c["cpus"] and c["capacity"] == round(min(c["ratio"], c["cpus"]), 2)
        assert (results / "compare.json").stat().st_uid != 0
        # Redis has no port on the host, as this Compose made it.
        redis_c = s.containers("redis")[0]
        assert not redis_c.attrs["HostConfig"]["PortBindings"]
        # The lab relayed its run through Redis (the stream taskrace:events, kept in the AOF)
        # point by point; with no live view following (no `live` profile), not one per-task event.
        redis_c.start()
        deadline = time.monotonic() + 60
        while b"PONG" not in redis_c.exec_run(["redis-cli", "ping"])[1]:  # the AOF loaded
            assert time.monotonic() < deadline, redis_c.logs()[-2000:]
            time.sleep(0.5)
        code, out = redis_c.exec_run(["redis-cli", "--raw", "XRANGE", "taskrace:events", "-", "+"])
        assert code == 0, out
        relayed = out.decode()
        assert '"kind":"point.' in relayed, relayed[-2000:]
        assert '"kind":"task.' not in relayed, [line for line in relayed.splitlines() if '"kind":"task.' in line][:3]
        # `down -v` with this Compose removes every container, the network and the volume.
        assert s.leftovers()["volumes"], "the stack should have its redis volume before down"
        s.compose("down", "-v", "--remove-orphans", "--timeout", "5", timeout=180)
        assert s.leftovers() == {"containers": [], "networks": [], "volumes": []}
    finally:
        s.down()
        s.sweep()
        assert s.leftovers() == {"containers": [], "networks": [], "volumes": []}
        shutil.rmtree(results, ignore_errors=True)


# Sequential (the baseline, always run) 4 x 1.5 s, then celery -n 2: each worker holds a task
# when one is killed (running under late acks; running and one prefetched under early acks).
KILL_LAB = ["--scenario", "power-io", "--backend", "celery", "-n", "2", "--set", "power-io.tasks=4",
            "--set", "power-io.sleep=1.5", "--repeat", "1", "--warmup", "0", "--no-progress"]
# The kill is the celery tier's business, not Compose's: one delivery mode per Compose, so each
# half runs once (Compose v1's one-off lab: at-most-once, v2's: at-least-once), on the lab already up.
KILL_MODE = {"v1": "at-most-once", "v2": "at-least-once"}


def test_docker_kill_of_a_worker_ends_the_labs_compare(stack):
    """`docker kill` of the worker container that took a task, during the lab's compare: the
    compare ends by itself (the tier pings its external workers once results stall), within
    the bound its record states. Under at-most-once: exit 1, the lost tasks named (stderr and
    the record); under at-least-once (TASKRACE_DELIVERY for the workers and the lab alike):
    the task comes back, every task done, exit 0. Nothing is left running: no one-off lab
    container, the run's queue gone from Redis."""
    import datetime

    mode = KILL_MODE[stack.version]
    env = dict(stack.env, TASKRACE_DELIVERY=mode)
    # Two workers in this mode (recreated when it changes the service's environment).
    stack.compose("up", "-d", "--no-deps", "--timeout", "5", "--scale", "worker=2", "worker", env=env,
                  timeout=180)
    assert len(stack.running_workers()) == 2, [c.name for c in stack.containers("worker")]
    since = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
    out, err = (stack.results / f"kill-{mode}.out").open("w+"), (stack.results / f"kill-{mode}.err").open("w+")
    proc = subprocess.Popen([*stack.tool, "-p", stack.project, "run", "--rm", "--no-deps", "lab", "taskrace",
                             "compare", *KILL_LAB, "--json", f"results/kill-{mode}.json"],
                            cwd=REPO_ROOT, env=env, stdout=out, stderr=err, text=True)
    victim = None
    try:
        while victim is None and proc.poll() is None:  # the first worker to receive a task
            victim = next((c for c in stack.running_workers() if b"] received" in c.logs(since=since)), None)
            time.sleep(0.1)
        assert victim is not None, "the compare ended before a worker received a task"
        victim.kill()
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out.seek(0), err.seek(0)
    text = out.read() + err.read()
    doc = json.loads((stack.results / f"kill-{mode}.json").read_text())
    record = next(r for r in doc["runs"] if r["backend"] == "celery")
    incident = record["tier"]["dead_workers"][0]
    victim.reload()
    assert victim.status == "exited" and victim.attrs["State"]["ExitCode"] == 137
    assert record["tier"]["delivery"]["mode"] == mode and incident["mode"] == mode
    assert node_name(victim) in record["tier"]["nodes_for_tasks"], record["tier"]
    if mode == "at-most-once":
        assert code == 1, text[-3000:]
        assert incident["lost"] and incident["would_have_saved"] == "at-least-once", incident
        assert [d["node"] for d in incident["died"]] == [node_name(victim)], incident
        assert "pings" in incident["died"][0]["how"], incident
        assert incident["verdict"] in text and "lost" in incident["verdict"], text[-3000:]  # tasks named
        assert not record["verdict"]["ok"] and record["tasks"] == 4
    else:
        assert code == 0, text[-3000:]
        assert record["verdict"]["ok"] and record["tasks"] == 4, record["verdict"]
        assert incident["lost"] == [] and incident["redelivered"], incident  # the victim's task came back
    # the bound the record states, from the work and the visibility timeout
    assert incident["within_bound"] is not False, incident
    if incident["noticed_s"] is not None:
        assert incident["ended_after_notice_s"] <= incident["bound_s"], incident
    # nothing left running: the one-off lab container is gone, and so is the run's queue
    assert [c.name for c in stack.containers("lab") if c.labels.get("com.docker.compose.oneoff") == "True"] == []
    redis_c = stack.containers("redis")[0]
    code, keys = redis_c.exec_run(["redis-cli", "--scan", "--pattern", f"*{record['tier']['queue']}*"])
    assert code == 0 and keys.strip() == b"", keys


@pytest.mark.lab_down  # the last test on the session's lab (conftest.py orders it so)
def test_down_removes_every_container_network_and_volume(compose_lab):
    stack = compose_lab
    assert stack.leftovers()["volumes"], "the stack should have its redis volume before down"
    assert stack.containers("live"), "the live profile's service should be there before down"
    stack.compose("down", "-v", "--remove-orphans", "--timeout", "5", timeout=180)
    assert stack.leftovers() == {"containers": [], "networks": [], "volumes": []}


# a worker on another host joins over TLS (compose/join.yml) -------------------------------
def test_a_host_joins_the_lab_over_tls_as_the_worker_user(engine, images, tmp_path):
    """The README's join, by hand: a host in its own network namespace (taskrace host add)
    reaches the lab's one published port (the wan proxy, then Redis's TLS port) over the
    bridge, not loopback; `taskrace worker --env-file join/worker.env` joins as the ACL user
    `worker`; the lab's compare runs its share there, and the record's nodes name it. The
    same worker with a wrong password, no TLS or the default user is refused in one line.
    Redis logged no ACL denial: the worker user's rights were enough for a real race."""
    from workers.infra.netns import GATEWAY, Host, HostError, require_tools

    tools = _compose_tools()
    if "v2" not in tools:
        _unavailable("Compose v2 is not installed (compose/install-compose-v2.sh)")
    try:
        require_tools()
    except HostError as exc:
        _unavailable(f"no network namespaces here: {exc}")
    results, join = tmp_path / "results", tmp_path / "join"
    results.mkdir()
    s = Stack(tools["v2"], "v2", engine, results)
    s.project = f"taskrace-test-join-{secrets.token_hex(3)}"
    s.env = _base_env(LAB_RESULTS_DIR=str(results), JOIN_DIR=str(join), JOIN_BIND=GATEWAY,
                      JOIN_PORT=str(_free_port()), WORKER_REPLICAS="1", LAB_WORKERS="2")
    files = ["compose/join.yml"]
    worker = None
    with Host(f"j{secrets.token_hex(3)}") as host:
        try:
            # The bridge exists now (Host made it): the port can be published on its address.
            s.compose("up", "-d", "redis", "wan", "worker", files=files, timeout=300)
            env_file = join / "worker.env"
            text = env_file.read_text()
            assert "TASKRACE_BROKER_URL=rediss://worker:" in text and (join / "ca.crt").is_file()
            assert oct(env_file.stat().st_mode & 0o777) == "0o600"
            wan = s.containers("wan")[0]
            bindings = wan.attrs["HostConfig"]["PortBindings"]["6380/tcp"]
            assert [b["HostIp"] for b in bindings] == [GATEWAY], bindings  # only where asked
            assert not (s.containers("redis")[0].attrs["HostConfig"]["PortBindings"] or {})

            def joiner(env_path: Path, name: str, **kw):
                argv = host.argv([sys.executable, "-m", "taskrace", "worker", "--env-file", str(env_path),
                                  "--name", name])
                return subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, **kw)

            # Refused in one line each, exit 2, nothing started.
            password = text.split("rediss://worker:", 1)[1].split("@", 1)[0]
            for label, changed in (("wrong password", text.replace(password, "not" + password[3:])),
                                   ("no TLS", text.replace("rediss://", "redis://")),
                                   ("default user", text.replace("rediss://worker:", "rediss://:"))):
                bad = join / f"{label.replace(' ', '-')}.env"
                bad.write_text(changed)
                proc = joiner(bad, "refused")
                assert proc.returncode == 2, (label, proc.stdout, proc.stderr)
                lines = proc.stderr.strip().splitlines()
                assert len(lines) == 1 and "Traceback" not in proc.stderr, (label, proc.stderr)
                assert password not in proc.stderr + proc.stdout, label

            # Those refusals are in Redis's ACL log (auth failures): start it afresh, so that
            # what it holds at the end is what the real worker was denied.
            redis_c = s.containers("redis")[0]
            code, out = redis_c.exec_run(["redis-cli", "--user", "taskrace", "ACL", "LOG", "RESET"])
            assert code == 0 and b"OK" in out, out
            log = open(tmp_path / "remote.log", "w")
            worker = subprocess.Popen(host.argv([sys.executable, "-m", "taskrace", "worker", "--env-file",
                                                 str(env_file), "--name", "remote"]),
                                      cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
            deadline = time.monotonic() + 90
            while " ready." not in (tmp_path / "remote.log").read_text():
                assert worker.poll() is None, (tmp_path / "remote.log").read_text()[-2000:]
                assert time.monotonic() < deadline, (tmp_path / "remote.log").read_text()[-2000:]
                time.sleep(0.2)
            assert f"rediss://worker:**@{GATEWAY}:" in (tmp_path / "remote.log").read_text()

            s.compose("run", "--rm", "lab", "taskrace", "compare", "--scenario", "power-io", "-b", "celery",
                      "-n", "2", "--repeat", "1", "--warmup", "0", "--set", "power-io.sleep=0.1",
                      "--json", "results/join.json", files=files, timeout=300)
            doc = json.loads((results / "join.json").read_text())
            celery = [r for r in doc["runs"] if r["backend"] == "celery"]
            assert celery and all(r["verdict"]["ok"] for r in celery)
            nodes = set().union(*(r["nodes"] for r in celery))
            remote = [n for n in nodes if n.startswith("remote@")]
            local = {node_name(c) for c in s.containers("worker")}
            assert remote and local & nodes, (nodes, local)  # both hosts ran a share
            code, out = redis_c.exec_run(["redis-cli", "--user", "taskrace", "ACL", "LOG"])
            assert code == 0 and out.strip() == b"", out  # no command of the worker was denied

            # wan is the link: SIGUSR1 cuts it (a new client's TLS handshake hangs, nothing is
            # reset), SIGUSR2 heals it. From this side of the bridge, as a worker would.
            import redis

            url = text.split("TASKRACE_BROKER_URL=", 1)[1].split()[0]

            def ping() -> bool:
                client = redis.Redis.from_url(url, ssl_ca_certs=str(join / "ca.crt"), socket_timeout=3,
                                              socket_connect_timeout=3, retry_on_timeout=False)
                try:
                    return client.ping()
                except (redis.TimeoutError, redis.ConnectionError):
                    return False
                finally:
                    client.close()

            assert ping()
            s.compose("kill", "-s", "SIGUSR1", "wan", files=files, timeout=60)
            assert not ping(), "the link was cut: no answer expected"
            s.compose("kill", "-s", "SIGUSR2", "wan", files=files, timeout=60)
            assert ping(), "the link healed: Redis answers again"
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
