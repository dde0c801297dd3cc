"""The compose lab as a fault-lab cluster: worker containers, a ledger container and the
stack's own Redis, driven through the Docker SDK. Same verbs as the embedded cluster
(:mod:`taskrace.faultlab.local`), so every nemesis runs unchanged; plus a network
partition, which only containers can have.

    lab container: this harness, on the stack's network (Docker socket: compose/faults.yml)
      │ publish                         │ watch, every 50 ms
      ▼                                 ▼
    `redis` service          ledger container (private Redis, random password, never faulted)
    (the broker, AOF)                   ▲ EVAL
      ▲ BRPOP                           │
      └──── worker containers of this run: <project>-fault-<run>-w1-g1, -w2-g1, ...

    faults: docker kill / pause / unpause of a worker, exec `kill -9` of its pool child,
    network disconnect / connect (partition-worker), docker kill / start of `redis`.

Why the harness must run inside the lab: it reaches the broker, the ledger and nothing
else by name on the stack's network, exactly as the workers do; no port is published and
no host process talks to a container's address.

Worker containers are made here, not cloned from the ``worker`` service, so that nothing
of the lab container (the Docker socket, its group) can leak into them: the lab's image
(the workers' image too: one task registry), ``taskrace-worker`` consuming only the run's
private queue, the stack's hardening (no capabilities, no-new-privileges, read-only root
with a private /tmp, tini as PID 1, the image's non-root user). Their hostname is
``fault-<run>-w<k>-g<generation>``: the Celery node is ``worker@<hostname>``, so an
operation's worker id ``worker@fault-ab12cd-w1-g1:8`` (pid inside the container) names
exactly one container, and a node restarted by a fault (generation 2) never inherits the
stale entries of the one it replaces.

The compose labels make ``docker compose down`` remove whatever a harness killed mid-run
could leave: the workers carry the ``worker`` service's labels, the ledger the ``redis``
service's (Compose v2 removes only non-one-off containers with a config hash; v1 any of
a known service), and ``io.taskrace.faults.run`` tells them from the stack's own.
:meth:`LabCluster.close` removes them all whatever happened (a warm shutdown first),
restarts the broker if a fault left it down, and deletes the run's keys from the shared
broker. The broker outlives the run, so whatever a killed worker leaves in it outlives the
run too: kombu's restore mutex, left by a worker killed inside its sweep, would stop every
redelivery in the stack for five minutes; :meth:`LabCluster.start` deletes it when it is
stale.
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from taskrace.lab.cluster import LABEL_NUMBER, LABEL_ONEOFF, LABEL_PROJECT, LABEL_SERVICE, ClusterError, engine

LABEL_RUN = "io.taskrace.faults.run"
LABEL_ROLE = "io.taskrace.faults.role"
LABEL_CONFIG_HASH = "com.docker.compose.config-hash"
BROKER_SERVICE = os.environ.get("TASKRACE_BROKER_SERVICE", "redis")
WORKER_SERVICE = os.environ.get("TASKRACE_WORKER_SERVICE", "worker")
RUN_HINT = ("docker compose -f docker-compose.yml -f compose/faults.yml run --rm lab "
            "taskrace faults --lab ...")
NO_PERSISTENCE_CHOICE = "the lab's broker keeps AOF; none/rdb run on the embedded cluster (without --lab)"
# exec'd in a worker container: SIGKILL $1 only if it is a celery process of that container.
KILL_CELERY_PROCESS = 'grep -qa celery "/proc/$1/cmdline" 2>/dev/null && kill -9 "$1"'
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 10  # warm shutdown of a worker at close, then SIGKILL
STALE_MUTEX_S = 10
PING_TIMEOUT_S = 60.0
PIDS_TTL_S = 1.0  # how old a container's process list may be when it says "alive"
STATUS_TTL_S = 0.5  # how old a container's running/exited state may be


def node_of(worker_id: str) -> str:
    """'worker@fault-ab12cd-w1-g2:8' -> 'fault-ab12cd-w1' (the node, any generation)."""
    host = _host_of(worker_id)
    return host.rsplit("-g", 1)[0] if "-g" in host else host


def _host_of(worker_id: str) -> str:
    return worker_id.rsplit(":", 1)[0].split("@", 1)[-1]


def _pid_of(worker_id: str) -> int | None:
    tail = worker_id.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _gone(exc: Exception) -> bool:
    return getattr(exc, "status_code", None) == 404


# where are we ---------------------------------------------------------------------------
def _own_container(client):
    """The container this harness runs in, or None on a host."""
    if not Path("/.dockerenv").exists():
        return None
    try:
        return client.containers.get(socket.gethostname())
    except Exception:  # noqa: BLE001 - not a container this engine knows
        return None


def _broker_container(client, project: str):
    labels = [f"{LABEL_PROJECT}={project}", f"{LABEL_SERVICE}={BROKER_SERVICE}"]
    found = client.containers.list(all=True, ignore_removed=True, filters={"label": labels})
    found = [c for c in found if LABEL_RUN not in c.labels and c.labels.get(LABEL_ONEOFF) != "True"]
    return found[0] if found else None


def locate(persistences=("aof",)) -> dict:
    """Everything ``--lab`` needs, checked before any run starts; ClusterError (one line)
    otherwise: no engine, not inside the lab, no stack, no broker, a persistence the lab's
    broker does not have."""
    if any(p != "aof" for p in persistences):
        raise ClusterError(NO_PERSISTENCE_CHOICE)
    in_container = Path("/.dockerenv").exists()
    try:
        client = engine()
    except ClusterError as exc:
        if in_container:  # the lab without compose/faults.yml: no socket in here
            raise ClusterError(f"no Docker engine answers in this container: --lab drives the lab's "
                               f"containers through the Docker socket, add -f compose/faults.yml "
                               f"({RUN_HINT})") from None
        raise exc
    me = _own_container(client)
    if me is None:
        from taskrace.lab.cluster import project_name

        project = project_name(client)
        up = _broker_container(client, project)
        where = (f"compose project {project!r} is up" if up is not None and up.status == "running"
                 else f"no stack of compose project {project!r} is up (docker compose up -d redis)")
        raise ClusterError(f"--lab runs inside the lab's network, not on the host ({where}): {RUN_HINT}")
    project = me.labels.get(LABEL_PROJECT)
    if not project:
        raise ClusterError(f"this container ({me.name}) is not part of a compose stack: {RUN_HINT}")
    broker = _broker_container(client, project)
    if broker is None or broker.status != "running":
        state = "none" if broker is None else broker.status
        raise ClusterError(f"the {BROKER_SERVICE!r} service of compose project {project!r} is not running "
                           f"({state}): docker compose up -d {BROKER_SERVICE}")
    url = os.environ.get("TASKRACE_BROKER_URL")
    if not url:
        raise ClusterError("TASKRACE_BROKER_URL is not set: run the harness as the lab service "
                           f"({RUN_HINT})")
    networks = list((me.attrs.get("NetworkSettings") or {}).get("Networks") or {})
    mode = me.attrs["HostConfig"].get("NetworkMode")
    network = mode if mode in networks else (networks[0] if networks else None)
    if network is None:
        raise ClusterError(f"this container ({me.name}) is on no network")
    return {"client": client, "me": me, "project": project, "broker": broker, "broker_url": url,
            "network": network}


# the cluster -----------------------------------------------------------------------------
class _Node:
    """One worker container of the run (one generation of a node)."""

    def __init__(self, name: str, container, host: str) -> None:
        self.name, self.container, self.host = name, container, host
        self.paused = False
        self.dead = False  # killed by a fault, or found exited
        self.pids: set[int] = set()
        self.pids_at = -1e9
        self.status_at = -1e9
        self.killed: set[int] = set()


class LabCluster:
    where = "lab"
    node_of = staticmethod(node_of)

    def __init__(self, run_id: str, workers: int, persistence: str, env: dict) -> None:
        if persistence != "aof":
            raise ClusterError(NO_PERSISTENCE_CHOICE)
        self.run_id, self.count, self.env = run_id, workers, dict(env)
        self.queue = f"taskrace.fault.{run_id}"
        self.prefix = f"fault-{run_id}"
        self.lab: dict | None = None
        self.nodes: dict[str, _Node] = {}  # node name -> its live generation
        self.by_host: dict[str, _Node] = {}  # every generation, by hostname
        self.generation: dict[str, int] = {}
        self.ledger = None
        self._state_url: str | None = None
        self._broker_killed = False
        self.stale_mutex_cleared = False
        self._lock = threading.Lock()

    # lifecycle -------------------------------------------------------------------------
    def start(self) -> "LabCluster":
        self.lab = locate()
        self.stale_mutex_cleared = _clear_stale_mutex(self.broker_client())
        self._start_ledger()
        batch = [self._spawn(f"{self.prefix}-w{k + 1}") for k in range(self.count)]
        self._wait_ready(batch)
        return self

    @property
    def client(self):
        return self.lab["client"]

    def _labels(self, service: str, role: str, number: int) -> dict:
        """Compose's labels for ``service`` (so ``down`` removes the container), ours on top."""
        me = self.lab["me"].labels
        labels = {k: v for k, v in me.items() if k.startswith("com.docker.compose.project")
                  or k in ("com.docker.compose.version", LABEL_CONFIG_HASH)}
        labels.setdefault(LABEL_CONFIG_HASH, "taskrace-faults")
        labels.update({LABEL_PROJECT: self.lab["project"], LABEL_SERVICE: service, LABEL_ONEOFF: "False",
                       LABEL_NUMBER: str(number), LABEL_RUN: self.run_id, LABEL_ROLE: role})
        return labels

    def _number(self, service: str) -> int:
        """The next free container number of ``service`` in the project, as a clone gets."""
        found = self.client.containers.list(all=True, ignore_removed=True, filters={"label": [
            f"{LABEL_PROJECT}={self.lab['project']}", f"{LABEL_SERVICE}={service}"]})
        numbers = [int(c.labels.get(LABEL_NUMBER, "0") or 0) for c in found
                   if (c.labels.get(LABEL_NUMBER) or "0").isdigit()]
        return max(numbers, default=0) + 1

    def _create(self, *, image, name, hostname, command, environment, labels, user=None, tmpfs=None,
                aliases=()):
        """A hardened container on the lab's network, started: the stack's x-hardening."""
        api = self.client.api
        host = api.create_host_config(
            cap_drop=["ALL"], security_opt=["no-new-privileges:true"], read_only=True,
            tmpfs=tmpfs or {"/tmp": ""}, init=True, network_mode=self.lab["network"],
            restart_policy={"Name": "no"})
        networking = api.create_networking_config(
            {self.lab["network"]: api.create_endpoint_config(aliases=list(aliases) or None)})
        created = api.create_container(image=image, command=command, name=name, hostname=hostname,
                                       environment=environment, labels=labels, user=user,
                                       host_config=host, networking_config=networking)
        container = self.client.containers.get(created["Id"])
        try:
            container.start()
        except Exception:
            container.remove(force=True)
            raise
        return container

    def _start_ledger(self) -> None:
        """A private Redis for the ledger, from the broker's image: a broker restart cannot
        lose the evidence. No persistence, no port, a password nobody prints."""
        password = secrets.token_hex(16)
        alias = f"{self.prefix}-ledger"
        broker = self.lab["broker"]
        self.ledger = self._create(
            image=broker.attrs["Image"], name=f"{self.lab['project']}-{alias}", hostname=alias,
            command=["--appendonly", "no", "--save", ""],
            environment={"REDIS_PASSWORD": password, "REDIS_MAXMEMORY": "64mb"},
            labels=self._labels(BROKER_SERVICE, "ledger", self._number(BROKER_SERVICE)),
            user=broker.attrs["Config"].get("User") or None,
            tmpfs={"/run/redis": "", "/tmp": ""}, aliases=[alias])
        self._state_url = f"redis://:{password}@{alias}:6379/0"
        _wait_ping(self._state_url, self.ledger, "the ledger")

    def _spawn(self, name: str) -> _Node:
        gen = self.generation.get(name, 0) + 1
        self.generation[name] = gen
        host = f"{name}-g{gen}"
        me = self.lab["me"]
        env = {"TASKRACE_BROKER_URL": self.lab["broker_url"], "TASKRACE_STATE_URL": self._state_url,
               "TASKRACE_QUEUE": self.queue, "WORKER_CONCURRENCY": "1", "WORKER_POOL": "prefork",
               **self.env}
        container = self._create(
            image=me.attrs["Image"], name=f"{self.lab['project']}-{host}", hostname=host,
            command=["taskrace-worker"], environment=env,
            labels=self._labels(WORKER_SERVICE, "worker", self._number(WORKER_SERVICE)))
        node = _Node(name, container, host)
        with self._lock:
            self.nodes[name] = node
            self.by_host[host] = node
        return node

    def _wait_ready(self, nodes: list[_Node]) -> None:
        """Until every node logged '<node> ready.' (what the embedded cluster waits for)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        pending = list(nodes)
        while pending:
            for n in list(pending):
                log = n.container.logs().decode(errors="replace")
                if f"@{n.host} ready." in log:
                    pending.remove(n)
                    continue
                n.container.reload()
                if n.container.status not in ("created", "running"):
                    tail = " | ".join(log.strip().splitlines()[-3:])
                    raise ClusterError(f"worker container {n.container.name} {n.container.status}: {tail[:300]}")
            if pending and time.monotonic() > deadline:
                raise ClusterError(f"worker containers {[n.container.name for n in pending]} "
                                   f"not ready after {READY_TIMEOUT_S:.0f} s")
            if pending:
                time.sleep(0.1)

    def close(self) -> None:
        """Remove every container of the run, bring the broker back if a fault left it
        down, delete the run's keys from the broker. Each step runs whatever the one
        before it did; the first error is raised at the end."""
        if self.lab is None:
            return
        errors: list[Exception] = []
        containers = [n.container for n in self.by_host.values()]

        def remove(c):
            try:
                c.reload()
                if c.status == "paused":  # a frozen container cannot act on a signal
                    c.unpause()
                if c.status in ("running", "paused"):
                    # SIGTERM: celery's warm shutdown. A SIGKILL could land inside kombu's
                    # restore sweep and leave its mutex in the shared broker for 5 minutes.
                    c.stop(timeout=STOP_TIMEOUT_S)
                c.remove(force=True, v=True)
            except Exception as exc:  # noqa: BLE001
                if not _gone(exc):
                    errors.append(exc)

        if containers:
            with ThreadPoolExecutor(max_workers=min(8, len(containers))) as pool:
                list(pool.map(remove, containers))
        if self._broker_killed:
            try:
                self.start_broker()
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
        try:
            self._scrub_broker()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        if self.ledger is not None:
            remove(self.ledger)
        self.nodes, self.by_host, self.ledger = {}, {}, None
        self.lab = None
        if errors:
            raise errors[0]

    def _scrub_broker(self) -> None:
        """The broker is shared with the stack: leave nothing of this run in it (the queue
        and kombu's keys named after it, unacknowledged messages parked for kombu's hour)."""
        r = self.broker_client()
        mine = list(r.scan_iter(match=f"*{self.queue}*", count=1000))  # queue, bindings
        if mine:
            r.delete(*mine)

        tags = []
        for tag, raw in (r.hgetall("unacked") or {}).items():
            try:
                message, _exchange, routing_key = json.loads(raw)
            except (ValueError, TypeError):
                continue
            task_id = ((message or {}).get("headers") or {}).get("id", "")
            if routing_key == self.queue or str(task_id).startswith(f"{self.run_id}."):
                tags.append(tag)
        if tags:
            r.hdel("unacked", *tags)
            r.zrem("unacked_index", *tags)

    # what the harness reads --------------------------------------------------------------
    @property
    def broker_url(self) -> str:
        return self.lab["broker_url"]

    def state_client(self):
        from workers.redis_state import client

        return client(self._state_url)

    def broker_client(self):
        from workers.redis_state import client

        return client(self.lab["broker_url"])

    def alive(self, worker_id: str) -> bool:
        """Is the process that claimed an operation still there? Called every poll for every
        running operation, so it answers from a per-container cache: the container's state
        (at most STATUS_TTL_S old), its process ids (at most PIDS_TTL_S old, refreshed at
        once when a pid is missing), and what this cluster itself killed."""
        node = self.by_host.get(_host_of(worker_id))
        pid = _pid_of(worker_id)
        if node is None or pid is None or node.dead or pid in node.killed:
            return False
        now = time.monotonic()
        if node.paused:  # frozen processes are alive; exec cannot enter a paused container
            return pid in node.pids if node.pids else True
        if now - node.status_at > STATUS_TTL_S:
            try:
                node.container.reload()
            except Exception as exc:  # noqa: BLE001
                if _gone(exc):
                    node.dead = True
                    return False
                raise
            node.status_at = now
            if node.container.status not in ("running", "paused"):
                node.dead = True
                return False
        if pid not in node.pids or now - node.pids_at > PIDS_TTL_S:
            if now - node.pids_at > 0.2:  # a miss refreshes, but not more than 5 times a second
                self._refresh_pids(node)
        return pid in node.pids

    def _refresh_pids(self, node: _Node) -> None:
        try:
            code, out = node.container.exec_run(["sh", "-c", "cd /proc && echo [0-9]*"])
        except Exception as exc:  # noqa: BLE001 - died meanwhile (409: not running)
            if getattr(exc, "status_code", None) in (404, 409):
                node.dead = _gone(exc) or node.dead
                node.pids, node.pids_at = set(), time.monotonic()
                return
            raise
        node.pids = {int(p) for p in out.split() if p.isdigit()} if code == 0 else set()
        node.pids_at = time.monotonic()

    def logs(self) -> str:
        out = []
        for n in list(self.by_host.values()):
            try:
                out.append(n.container.logs().decode(errors="replace"))
            except Exception as exc:  # noqa: BLE001 - removed already
                if not _gone(exc):
                    raise
        return "\n".join(out)

    # what the nemeses do -----------------------------------------------------------------
    def _node(self, name: str) -> _Node:
        node = self.nodes.get(name)
        if node is None:
            raise ClusterError(f"{name} is not a worker node of this run")  # never touch a stranger
        return node

    def kill_node(self, name: str) -> dict:
        node = self._node(name)
        node.container.kill()  # SIGKILL to tini (PID 1): the whole container, pool included
        node.dead = True
        node.container.wait(timeout=30)
        del self.nodes[name]
        return {"node": name, "container": node.container.name}

    def start_node(self, name: str) -> None:
        """A supervisor's restart: a fresh container under the same node name (the next
        generation's hostname)."""
        self._wait_ready([self._spawn(name)])

    def pause_node(self, name: str) -> dict:
        node = self._node(name)
        node.container.pause()  # cgroup freezer: docker pause (alive() keeps the pids it saw)
        node.paused = True
        return {"node": name, "container": node.container.name}

    def resume_node(self, name: str) -> None:
        node = self._node(name)
        node.container.unpause()
        node.paused = False

    def kill_process(self, worker_id: str) -> dict:
        """SIGKILL one process inside its container (the pool child running a task), as
        the container's own user: ``kill`` can reach nothing outside that container. One
        exec checks and kills (a task is not waiting for a second round trip): a celery
        process, not PID 1 (tini)."""
        node = self.by_host.get(_host_of(worker_id))
        pid = _pid_of(worker_id)
        if node is None or self.nodes.get(node.name) is not node or pid is None or pid <= 1:
            raise ClusterError(f"{worker_id} is not a process of this run")
        code, out = node.container.exec_run(["sh", "-c", KILL_CELERY_PROCESS, "kill", str(pid)])
        if code != 0:
            raise ClusterError(f"kill -9 {pid} in {node.container.name}: "
                               f"{out.decode(errors='replace').strip()[:200] or 'not a celery process'}")
        node.killed.add(pid)
        return {"node": node.name, "container": node.container.name, "pids": [pid]}

    def kill_broker(self) -> dict:
        broker = self.lab["broker"]
        broker.kill()
        self._broker_killed = True
        broker.wait(timeout=30)
        return {"broker_container": broker.name}

    def start_broker(self) -> None:
        """Start the stack's Redis container again and wait until it answers PING (it has
        loaded its append-only file by then)."""
        broker = self.lab["broker"]
        broker.reload()
        if broker.status != "running":
            broker.start()
        _wait_ping(self.lab["broker_url"], broker, "the broker")
        self._broker_killed = False

    def drop_connections(self) -> dict:
        killed = self.broker_client().client_kill_filter(_type="normal", skipme=True)
        return {"connections_killed": killed}

    def partition_node(self, name: str) -> dict:
        """Cut a worker container off the lab's network (its connections to the broker and
        the ledger go nowhere); heal_partition connects it again."""
        node = self._node(name)
        self.client.networks.get(self.lab["network"]).disconnect(node.container)
        return {"node": name, "container": node.container.name, "network": self.lab["network"]}

    def heal_partition(self, name: str) -> None:
        node = self._node(name)
        self.client.networks.get(self.lab["network"]).connect(node.container)


# kombu's restore sweep (every unacked_restore_interval in at-least-once) holds this lock
# for milliseconds, with a 300 s expiry. Held for longer than STALE_MUTEX_S, its holder
# died or froze inside the sweep (a kill or pause of an earlier run, or the stack's own
# `cluster kill-worker`), and no worker of the stack restores anything until it expires:
# the next run would show no redelivery at all. Deleted only if it is still that old
# (one script: a lock taken meanwhile by a live sweep is never touched).
_CLEAR_STALE = """
local ttl = redis.call('TTL', KEYS[1])
if ttl >= 0 and tonumber(ARGV[1]) - ttl > tonumber(ARGV[2]) then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _clear_stale_mutex(r) -> bool:
    from kombu.transport.redis import Channel

    return bool(r.eval(_CLEAR_STALE, 1, Channel.unacked_mutex_key, Channel.unacked_mutex_expire,
                       STALE_MUTEX_S))


def _wait_ping(url: str, container, what: str) -> None:
    """Until the Redis at ``url`` answers PING; fails at once if its container exits."""
    import redis

    deadline = time.monotonic() + PING_TIMEOUT_S
    r = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        while True:
            try:
                if r.ping():
                    return
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                pass
            container.reload()
            if container.status in ("exited", "dead"):
                raise ClusterError(f"{what} ({container.name}) exited: "
                                   f"{container.logs(tail=3).decode(errors='replace').strip()[:300]}")
            if time.monotonic() > deadline:
                raise ClusterError(f"{what} ({container.name}) does not answer PING after {PING_TIMEOUT_S:.0f} s")
            time.sleep(0.1)
    finally:
        r.close()
