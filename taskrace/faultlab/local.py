"""The embedded cluster: real ``celery worker`` processes and two private Redis servers on
this host, no Docker. What the fault lab's nemeses act on, by PID.

    harness ──publish──> broker Redis (persistence as asked) <──BRPOP── worker nodes w1..wN
       │                                                               (prefork children)
       └──watch──> state Redis (the ledger; never faulted) <──EVAL────────────┘

Every process here was started by this module and is stopped by it, also on errors:
workers by their process trees, the servers by their own PIDs.
"""
from __future__ import annotations

import os
import signal
import tempfile
import shutil

import psutil

from workers.celery_workers import start_worker, stop_workers, wait_ready
from workers.infra.redis_server import EmbeddedRedis
from workers.redis_state import client


def node_of(worker_id: str) -> str:
    """'fault-ab12-w1@host:4242' -> 'fault-ab12-w1' (the name we started it under)."""
    return worker_id.rsplit(":", 1)[0].split("@", 1)[0]


def pid_of(worker_id: str) -> int | None:
    tail = worker_id.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None


class LocalCluster:
    where = "embedded"
    node_of = staticmethod(node_of)

    def __init__(self, run_id: str, workers: int, persistence: str, env: dict) -> None:
        self.run_id, self.count, self.env = run_id, workers, env
        self.queue = f"taskrace.fault.{run_id}"
        self.broker = EmbeddedRedis(persistence=persistence)
        self.state = EmbeddedRedis()
        self.logdir: str | None = None
        self.workers: dict[str, object] = {}  # name -> CeleryWorker (the live one)
        self.retired: list = []  # killed or replaced, kept to be reaped

    # lifecycle -------------------------------------------------------------------
    def start(self) -> "LocalCluster":
        self.broker.start()
        self.state.start()
        self.logdir = tempfile.mkdtemp(prefix="taskrace-faults-")
        batch = [self._spawn(f"fault-{self.run_id}-w{k + 1}") for k in range(self.count)]
        wait_ready(batch)
        return self

    def _spawn(self, name: str):
        worker = start_worker(self.broker.url, name, self.logdir,
                              env={**self.env, "TASKRACE_STATE_URL": self.state.url},
                              queues=self.queue, concurrency=1, pool="prefork")
        self.workers[name] = worker
        return worker

    def close(self) -> None:
        everyone = list(self.workers.values()) + self.retired
        for w in everyone:  # a paused worker cannot act on SIGTERM: wake it first
            for pid in w.tree_pids():
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        stop_workers(everyone, timeout=3)
        self.workers, self.retired = {}, []
        self.broker.stop()
        self.state.stop()
        if self.logdir:
            shutil.rmtree(self.logdir, ignore_errors=True)
            self.logdir = None

    # what the harness reads ----------------------------------------------------------
    @property
    def broker_url(self) -> str:
        return self.broker.url

    def state_client(self):
        return client(self.state.url)

    def broker_client(self):
        return client(self.broker.url)

    def alive(self, worker_id: str) -> bool:
        """Is the process that claimed to run an operation still there?"""
        pid = pid_of(worker_id)
        try:
            return pid is not None and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def logs(self) -> str:
        return "\n".join(w.log() for w in list(self.workers.values()) + self.retired)

    # what the nemeses do -------------------------------------------------------------
    def _signal_tree(self, name: str, sig: int) -> list[int]:
        worker = self.workers[name]
        pids = sorted(worker.tree_pids())
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        return pids

    def kill_node(self, name: str) -> dict:
        pids = self._signal_tree(name, signal.SIGKILL)
        worker = self.workers.pop(name)
        worker.proc.wait(10)
        self.retired.append(worker)
        return {"node": name, "pids": pids}

    def start_node(self, name: str) -> None:
        """A supervisor's restart: a fresh node under the same name."""
        wait_ready([self._spawn(name)])

    def pause_node(self, name: str) -> dict:
        return {"node": name, "pids": self._signal_tree(name, signal.SIGSTOP)}

    def resume_node(self, name: str) -> None:
        self._signal_tree(name, signal.SIGCONT)

    def kill_process(self, worker_id: str) -> dict:
        pid = pid_of(worker_id)
        name = node_of(worker_id)
        if name not in self.workers or pid not in self.workers[name].tree_pids():
            raise RuntimeError(f"{worker_id} is not a process of this run")  # never kill a stranger
        os.kill(pid, signal.SIGKILL)
        return {"node": name, "pids": [pid]}

    def kill_broker(self) -> dict:
        pid = self.broker.pid
        self.broker.kill()
        return {"broker_pid": pid}

    def start_broker(self) -> None:
        self.broker.restart()

    def drop_connections(self) -> dict:
        killed = self.broker_client().client_kill_filter(_type="normal", skipme=True)
        return {"connections_killed": killed}
