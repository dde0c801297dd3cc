"""The faults (Jepsen calls the thing that injects them a nemesis).

Each fault is injected at a point chosen by progress (after k operations have started,
on a *victim*: an operation that is running right now, so there is always something in
flight to lose), and may be healed later. A fault acts only through the cluster's own
verbs (kill, pause, restart...), so the same fault runs on the embedded cluster (PIDs)
and in the compose lab (containers).
"""
from __future__ import annotations

from dataclasses import dataclass

from workers.delivery import DeliveryMode


@dataclass
class Victim:
    op: str  # the operation running when the fault hit
    worker: str  # "node@host:pid" of the process running it


class Fault:
    name = ""
    help = ""
    lab_only = False
    # restart-broker: the broker stops and starts again, so what it keeps across that (its
    # --broker-persistence) decides what survives. A fault that leaves it running (drop-connections)
    # does not depend on its persistence: it runs once, on aof, and promises hold.
    restarts_broker = False
    held = False  # a state held until healed (a pause, a partition), not a one-off blow

    def __init__(self, mode: DeliveryMode, hold_s: float) -> None:
        self.mode, self.hold_s = mode, hold_s
        self.info: dict = {}

    def inject(self, cluster, victim: Victim | None) -> None:
        raise NotImplementedError

    def heal_due(self, since_s: float, victims_done: bool) -> bool:
        """Whether to heal now, ``since_s`` after the fault; ``victims_done``: every
        victim operation has been applied (by someone else). A held fault ends once its
        victim was redelivered and applied elsewhere (that makes the duplicate certain),
        or after the hold: longer than at-least-once's visibility timeout plus a sweep,
        far shorter than at-most-once's hour."""
        return not self.held or victims_done or since_s >= self.hold_s

    def heal(self, cluster) -> None:
        """Undo what can be undone (restart, resume). Default: nothing to undo."""


class KillWorker(Fault):
    name = "kill-worker"
    help = "SIGKILL a whole worker node (main process and pool), then start a new one"

    def inject(self, cluster, victim):
        self.info = cluster.kill_node(cluster.node_of(victim.worker))

    def heal(self, cluster):  # what a supervisor (systemd, compose restart:) does
        cluster.start_node(self.info["node"])


class KillChild(Fault):
    name = "kill-child"
    help = "SIGKILL the prefork child running a task (Celery: WorkerLostError)"

    def inject(self, cluster, victim):
        self.info = cluster.kill_process(victim.worker)


class PauseWorker(Fault):
    name = "pause-worker"
    help = "SIGSTOP a worker node past the visibility timeout, then SIGCONT"
    held = True

    def inject(self, cluster, victim):
        self.info = cluster.pause_node(cluster.node_of(victim.worker))

    def heal(self, cluster):
        cluster.resume_node(self.info["node"])


class RestartBroker(Fault):
    name = "restart-broker"
    help = "SIGKILL the broker and start it again (--broker-persistence aof|rdb|none)"
    restarts_broker = True

    def inject(self, cluster, victim):
        self.info = cluster.kill_broker()

    def heal(self, cluster):
        cluster.start_broker()


class DropConnections(Fault):
    name = "drop-connections"
    help = "CLIENT KILL TYPE normal on the broker: every client reconnects"

    def inject(self, cluster, victim):
        self.info = cluster.drop_connections()


class PartitionWorker(Fault):
    name = "partition-worker"
    help = "disconnect a worker container from the lab's network, then reconnect it (lab only)"
    lab_only = True
    held = True

    def inject(self, cluster, victim):
        self.info = cluster.partition_node(cluster.node_of(victim.worker))

    def heal(self, cluster):
        cluster.heal_partition(self.info["node"])


FAULTS: dict[str, type[Fault]] = {cls.name: cls for cls in
                                  (KillWorker, KillChild, PauseWorker, RestartBroker, DropConnections,
                                   PartitionWorker)}
