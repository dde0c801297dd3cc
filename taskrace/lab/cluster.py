"""The compose lab's worker containers, driven through the Docker SDK.

``taskrace cluster status``       the worker containers: node name, processes, CPU, memory
``taskrace cluster scale N``      exactly N running worker containers
``taskrace cluster kill-worker``  SIGKILL one worker container (for the fault labs)

and :func:`scale_workers`, the celery tier's ``scaler`` (``--scale-workers docker``):
``taskrace compare --backend celery -n 1,2,4`` inside the lab resizes the ``worker``
service before each point.

Containers are found by the labels Compose puts on them (both v1 and v2):
``com.docker.compose.project`` and ``com.docker.compose.service=worker``. A replica
added here is a clone of an existing worker container (same image, command,
environment, host config, networks and labels, the next container number), so Compose
treats it as one of its own afterwards (``docker compose down`` removes it, ``up
--scale`` counts it). The only thing not cloned is the hostname: each replica keeps its
own (its short id), which is what makes its Celery node name ``worker@<hostname>`` unique.

The Compose CLI is never called: everything here is the Engine API.
"""
from __future__ import annotations

import os
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from workers.base import TierFailure

LABEL_PROJECT = "com.docker.compose.project"
LABEL_SERVICE = "com.docker.compose.service"
LABEL_NUMBER = "com.docker.compose.container-number"
LABEL_ONEOFF = "com.docker.compose.oneoff"
WORKER_SERVICE = os.environ.get("TASKRACE_WORKER_SERVICE", "worker")
NODE_PREFIX = "worker"  # compose/taskrace-worker names its node worker@%h
EXIT_USAGE = 2


class ClusterError(TierFailure):
    """No engine, no stack, no such worker: printed as one line."""


# engine and project ---------------------------------------------------------------
def engine():
    """A Docker SDK client that has answered a ping, or ClusterError in one line."""
    try:
        import docker
    except ModuleNotFoundError:
        raise ClusterError("the cluster commands need the Docker SDK: pip install docker") from None
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - DockerException, requests' errors, PermissionError
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ClusterError(f"no Docker engine answers ({reason[:160]}); is dockerd running, "
                           f"may this user use its socket (DOCKER_HOST)?") from None
    return client


def _normalize(name: str) -> str:
    # What Compose does to a directory name (v1 and v2 agree on this subset).
    return re.sub(r"[^-_a-z0-9]", "", name.lower())


def _dotenv_project(directory: Path) -> str | None:
    try:
        for line in (directory / ".env").read_text().splitlines():
            key, eq, value = line.strip().partition("=")
            if eq and key.strip() == "COMPOSE_PROJECT_NAME" and value.strip():
                return value.strip().strip("'\"")
    except OSError:
        pass
    return None


def _own_project(client) -> str | None:
    """Inside a container of the stack (the lab): the project on our own labels."""
    if not Path("/.dockerenv").exists():
        return None
    try:
        labels = client.containers.get(socket.gethostname()).labels
    except Exception:  # noqa: BLE001 - not a container we can see
        return None
    return labels.get(LABEL_PROJECT)


def project_name(client, explicit: str | None = None) -> str:
    """--project, else $COMPOSE_PROJECT_NAME, else this container's own project (in
    the lab), else COMPOSE_PROJECT_NAME in ./.env, else the directory's name: the order
    in which Compose itself would decide."""
    return (explicit or os.environ.get("COMPOSE_PROJECT_NAME") or _own_project(client)
            or _dotenv_project(Path.cwd()) or _normalize(Path.cwd().name))


def _number(container) -> int:
    try:
        return int(container.labels.get(LABEL_NUMBER, "0"))
    except ValueError:
        return 0


def worker_containers(client, project: str, running_only: bool = False) -> list:
    """The project's worker containers (not `compose run` one-offs), by container number."""
    filters = {"label": [f"{LABEL_PROJECT}={project}", f"{LABEL_SERVICE}={WORKER_SERVICE}"]}
    if running_only:
        filters["status"] = "running"
    found = [c for c in client.containers.list(all=True, filters=filters)
             if c.labels.get(LABEL_ONEOFF, "False") != "True"]
    return sorted(found, key=lambda c: (_number(c), c.name))


def _projects_with_workers(client) -> list[str]:
    found = client.containers.list(all=True, filters={"label": f"{LABEL_SERVICE}={WORKER_SERVICE}"})
    return sorted({c.labels.get(LABEL_PROJECT, "?") for c in found})


def _no_stack(client, project: str) -> ClusterError:
    others = [p for p in _projects_with_workers(client) if p != project]
    hint = f" (projects with workers: {', '.join(others)}; pass --project)" if others else \
        " (start it: docker compose up -d worker)"
    return ClusterError(f"no worker containers in compose project {project!r}{hint}")


def node_name(container) -> str:
    return f"{NODE_PREFIX}@{container.attrs['Config'].get('Hostname') or container.id[:12]}"


# scaling ---------------------------------------------------------------------------
def _replica_name(template, project: str, number: int) -> str:
    # v1: <project>_worker_<n>, v2: <project>-worker-<n>: keep whichever the stack uses.
    match = re.fullmatch(r"(.*[-_])\d+", template.name)
    return f"{match.group(1)}{number}" if match else f"{project}-{WORKER_SERVICE}-{number}"


def _clone(client, template, project: str, number: int):
    """A new worker container configured like ``template``, started."""
    attrs = template.attrs
    cfg, host = attrs["Config"], dict(attrs["HostConfig"])
    api = client.api
    image = attrs["Image"]  # the exact image the template runs
    try:  # show the tag, not a sha, when the tag still names that image
        if cfg.get("Image") and client.images.get(cfg["Image"]).id == image:
            image = cfg["Image"]
    except Exception:  # noqa: BLE001 - the id always works
        pass
    labels = dict(cfg.get("Labels") or {}, **{LABEL_NUMBER: str(number)})
    networks = list((attrs.get("NetworkSettings") or {}).get("Networks") or {})
    aliases = [template.labels.get(LABEL_SERVICE, WORKER_SERVICE)]
    networking = None
    if networks and host.get("NetworkMode") in networks:  # the primary network first
        networks.remove(host["NetworkMode"])
        networks.insert(0, host["NetworkMode"])
    if networks:
        networking = api.create_networking_config(
            {networks[0]: api.create_endpoint_config(aliases=aliases)})
    created = api.create_container(
        image=image, command=cfg.get("Cmd"), entrypoint=cfg.get("Entrypoint"),
        environment=cfg.get("Env"), user=cfg.get("User") or None,
        working_dir=cfg.get("WorkingDir") or None, labels=labels,
        stop_signal=cfg.get("StopSignal"), healthcheck=cfg.get("Healthcheck"),
        tty=bool(cfg.get("Tty")), stdin_open=bool(cfg.get("OpenStdin")),
        name=_replica_name(template, project, number),
        host_config=host,  # caps, read-only rootfs, tmpfs, init, mounts: all as the template
        networking_config=networking)
    for net in networks[1:]:
        api.connect_container_to_network(created["Id"], net, aliases=aliases)
    api.start(created["Id"])
    return client.containers.get(created["Id"])


def _stop_remove(container, timeout: int) -> None:
    try:
        container.stop(timeout=timeout)  # SIGTERM: celery's warm shutdown
        container.remove(v=True)
    except Exception as exc:  # noqa: BLE001 - already gone is fine
        if getattr(exc, "status_code", None) != 404:
            raise


def scale(client, project: str, n: int, stop_timeout: int = 15) -> dict:
    """Make exactly ``n`` worker containers of ``project`` run. Stopped replicas are
    started first (lowest number first), then clones are added; scaling down stops and
    removes the highest-numbered ones, as Compose does. Returns what changed."""
    if n < 0:
        raise ClusterError(f"cannot scale to {n} workers")
    everyone = worker_containers(client, project)
    if not everyone:
        raise _no_stack(client, project)
    running = [c for c in everyone if c.status == "running"]
    stopped = [c for c in everyone if c.status != "running"]
    started, added, removed = [], [], []
    if len(running) > n:
        extra = running[n:]
        with ThreadPoolExecutor(max_workers=len(extra)) as pool:
            list(pool.map(lambda c: _stop_remove(c, stop_timeout), extra))
        removed = [c.name for c in extra]
    while len(running) + len(started) < n and stopped:
        c = stopped.pop(0)
        c.start()
        started.append(c.name)
    missing = n - len(running) - len(started)
    if missing > 0:
        template = (running or everyone)[0]
        template.reload()
        top = max(_number(c) for c in everyone)
        for k in range(1, missing + 1):
            added.append(_clone(client, template, project, top + k).name)
    return {"project": project, "workers": n, "started": started, "added": added, "removed": removed}


def scale_workers(n: int, project: str | None = None) -> None:
    """The celery tier's ``scaler``: exactly ``n`` worker containers before a run. The
    tier then waits until ``n`` nodes answer a ping."""
    client = engine()
    scale(client, project_name(client, project), n)


# kill -----------------------------------------------------------------------------
def kill_worker(client, project: str, name: str | None = None, signal: str = "SIGKILL"):
    """Kill one running worker container: the one called ``name`` (container name, id
    prefix, hostname or node name), else the highest-numbered one. Returns it."""
    running = worker_containers(client, project, running_only=True)
    if not running:
        raise _no_stack(client, project)
    if name is None:
        victim = running[-1]
    else:
        victim = next((c for c in running if name in (c.name, node_name(c))
                       or (len(name) >= 4 and c.id.startswith(name))
                       or name == c.attrs["Config"].get("Hostname")), None)
        if victim is None:
            raise ClusterError(f"no running worker container {name!r} in project {project!r}; "
                               f"running: {', '.join(c.name for c in running)}")
    victim.kill(signal=signal)
    return victim


# status ---------------------------------------------------------------------------
def _cpu_percent(stats: dict) -> float | None:
    cpu, pre = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    try:
        used = cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]
        system = cpu["system_cpu_usage"] - pre["system_cpu_usage"]
    except (KeyError, TypeError):
        return None
    cpus = cpu.get("online_cpus") or len(cpu["cpu_usage"].get("percpu_usage") or []) or 1
    return round(used / system * cpus * 100, 1) if system > 0 and used >= 0 else 0.0


def _memory_bytes(stats: dict) -> int | None:
    mem = stats.get("memory_stats") or {}
    if "usage" not in mem:
        return None
    detail = mem.get("stats") or {}
    # What `docker stats` shows: usage less the page cache (cgroup v2: inactive_file).
    cache = detail.get("inactive_file", detail.get("total_inactive_file", detail.get("cache", 0)))
    return max(mem["usage"] - cache, 0)


def _describe(container) -> dict:
    row = {"name": container.name, "id": container.short_id, "status": container.status,
           "number": _number(container), "node": node_name(container), "processes": [],
           "cpu_percent": None, "memory_bytes": None, "memory_limit_bytes": None}
    if container.status != "running":
        return row
    try:
        top = container.top(ps_args="-o pid,pcpu,rss,args")
        titles = [t.upper() for t in top.get("Titles") or []]
        for proc in top.get("Processes") or []:
            item = dict(zip(titles, proc))
            row["processes"].append({"pid": int(item.get("PID", 0)), "cpu_percent": item.get("%CPU"),
                                     "rss_kb": int(item.get("RSS", 0) or 0),
                                     "command": item.get("COMMAND", item.get("CMD", ""))})
        stats = container.stats(stream=False)
        row["cpu_percent"] = _cpu_percent(stats)
        row["memory_bytes"] = _memory_bytes(stats)
        row["memory_limit_bytes"] = (stats.get("memory_stats") or {}).get("limit")
    except Exception as exc:  # noqa: BLE001 - it may have died between list and top
        row["status"] = f"{container.status} ({type(exc).__name__})"
    return row


def status(client, project: str) -> list[dict]:
    """One row per worker container, running or not; the stats calls run in parallel
    (each takes about a second: the engine samples CPU twice)."""
    containers = worker_containers(client, project)
    if not containers:
        raise _no_stack(client, project)
    with ThreadPoolExecutor(max_workers=min(8, len(containers))) as pool:
        return list(pool.map(_describe, containers))


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f} MiB"


def short_command(command: str) -> str:
    """``/opt/taskrace/bin/python3 -m celery -A ... worker ...`` -> ``python3 -m celery worker``."""
    parts = command.split()
    if not parts:
        return command
    head = os.path.basename(parts[0])
    if "-m" in parts[1:-1]:
        module = parts[parts.index("-m") + 1]
        head += f" -m {module}" + (" worker" if module == "celery" and "worker" in parts else "")
    else:
        head += "".join(f" {os.path.basename(p)}" for p in parts[1:3])
    return head


def print_status(rows: list[dict], project: str, console) -> None:
    """Two tables: the containers (CPU and memory as the engine accounts them), then the
    processes inside each one, as the seed listed its worker processes. Both fit the
    console (taskrace.reporting.tables): a long name wraps onto a second line, never cut."""
    from taskrace.reporting.tables import Spec, fitted

    specs = [Spec("container"), Spec("status"), Spec("celery node"), Spec("procs", "right"),
             Spec("CPU %", "right"), Spec("memory", "right")]
    cells = [[r["name"], r["status"], r["node"], str(len(r["processes"]) or "-"),
              "-" if r["cpu_percent"] is None else f"{r['cpu_percent']:.0f}", _mib(r["memory_bytes"])]
             for r in rows]
    console.print(fitted(f"worker containers of compose project {project!r}", specs, cells, console.width))
    specs = [Spec("container"), Spec("pid (host)", "right"), Spec("%CPU", "right"), Spec("RSS", "right"),
             Spec("command")]
    cells = [[r["name"], str(p["pid"]), str(p["cpu_percent"]), f"{p['rss_kb'] / 1024:.0f} MiB",
              short_command(p["command"])] for r in rows for p in r["processes"]]
    if cells:
        console.print(fitted("processes in the running worker containers", specs, cells, console.width))
    running = sum(r["status"] == "running" for r in rows)
    console.print(f"{running} running of {len(rows)} worker containers")


# command line ------------------------------------------------------------------------
def add_cluster_parser(sub) -> None:
    """``taskrace cluster ...``, registered by taskrace.cli.build_parser."""
    cluster = sub.add_parser("cluster", help="the compose lab's worker containers (Docker SDK)")
    cluster.add_argument("--project", default=None, help="compose project name (default: "
                         "$COMPOSE_PROJECT_NAME, else the directory's name, as compose does)")
    verbs = cluster.add_subparsers(dest="cluster_command", parser_class=type(cluster))
    st = verbs.add_parser("status", help="worker containers, their processes, CPU and memory")
    st.add_argument("--json", action="store_true", help="print the rows as JSON")
    sc = verbs.add_parser("scale", help="run exactly N worker containers")
    sc.add_argument("workers", type=int, metavar="N")
    kw = verbs.add_parser("kill-worker", help="SIGKILL one worker container (fault labs)")
    kw.add_argument("name", nargs="?", default=None,
                    help="container name, id, hostname or node name (default: the newest)")
    kw.add_argument("--signal", default="SIGKILL", help="signal to send (default SIGKILL)")


def cmd_cluster(args, console) -> int:
    import json
    import sys

    from rich.console import Console

    err = Console(stderr=True)
    try:
        if not args.cluster_command:
            raise ClusterError("choose: taskrace cluster status | scale N | kill-worker [NAME]")
        client = engine()
        project = project_name(client, args.project)
        if args.cluster_command == "status":
            rows = status(client, project)
            if args.json:
                sys.stdout.write(json.dumps(rows, indent=2) + "\n")
            else:
                print_status(rows, project, console)
        elif args.cluster_command == "scale":
            t0 = time.monotonic()
            change = scale(client, project, args.workers)
            what = ", ".join(f"{k} {', '.join(v)}" for k, v in change.items()
                             if k in ("started", "added", "removed") and v) or "nothing to change"
            console.print(f"{project}: {args.workers} worker containers ({what}) "
                          f"in {time.monotonic() - t0:.1f} s", highlight=False)
        elif args.cluster_command == "kill-worker":
            victim = kill_worker(client, project, args.name, args.signal)
            console.print(f"{project}: sent {args.signal} to {victim.name} ({node_name(victim)})",
                          highlight=False)
    except ClusterError as exc:
        err.print(f"taskrace: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - an engine error mid-way: still one line
        if type(exc).__module__.startswith(("docker", "requests", "urllib3")):
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            err.print(f"taskrace: error: docker: {first[:200]}", markup=False, highlight=False,
                      soft_wrap=True)
            return EXIT_USAGE
        raise
    return 0
