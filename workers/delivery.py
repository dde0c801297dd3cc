"""Delivery modes: what a Celery queue promises about a task when something breaks.

Each mode is a set of Celery settings plus kombu transport options, applied by
``workers.celery_app.make_app`` when ``TASKRACE_DELIVERY`` names the mode (the harness
and every worker of a fault run set it, so both sides agree). The fault lab prints the
settings beside each row and records them in the JSON, so what was measured is exactly
what a reader can copy into their own app.

* at-most-once: Celery's defaults. A task is acknowledged when a worker *starts* it, so
  a worker that dies mid-task takes the task with it. Messages a worker had prefetched
  but not started are unacknowledged: kombu's Redis transport gives them back only
  after ``visibility_timeout`` (one hour by default), far beyond any run here.
* at-least-once: ``task_acks_late`` (acknowledge when the task *ends*) and
  ``task_reject_on_worker_lost`` (a killed pool child sends its task back at once).
  A worker that stalls past ``visibility_timeout`` has its task given to another
  worker, and when it wakes up it runs the task too: a duplicate.
* effectively-once: at-least-once plus an idempotency key per operation, written in the
  same atomic step as the effect (``scenarios.ledger``): the second execution finds the
  key and changes nothing.

The same modes are the celery tier's ``--delivery`` (``run``/``compare``), resolved once
by ``resolve`` into a ``DeliveryMode``; what effectively-once means there depends on what
the tasks touch, see ``EFFECTIVELY_ONCE``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

ENV = "TASKRACE_DELIVERY"

# Short enough that a run sees a redelivery within seconds, long enough that no task of
# the fault lab (tens of milliseconds of work) is redelivered just for being slow.
VISIBILITY_TIMEOUT_S = 4
# kombu 5.7: sweep the unacked index every second, and scan on every sweep (the defaults,
# 10 s x every 10th sweep, would restore ~100 s after the timeout instead of ~1 s).
RESTORE_INTERVAL_S = 1
RESTORE_THROTTLE = 1
KOMBU_DEFAULT_VISIBILITY_S = 3600


@dataclass(frozen=True)
class DeliveryMode:
    name: str
    promise: str  # what the mode promises, in one line
    may_lose: bool
    may_duplicate: bool  # an operation's effect applied twice
    settings: dict = field(default_factory=dict)  # Celery app.conf
    transport_options: dict = field(default_factory=dict)  # broker_transport_options
    idempotent: bool = False  # the task skips an operation id it already applied

    @property
    def visibility_timeout_s(self) -> float:
        return self.transport_options.get("visibility_timeout", KOMBU_DEFAULT_VISIBILITY_S)

    @property
    def restore_period_s(self) -> float:
        """How often, at worst, a sweep looks for messages past their timeout."""
        return (self.transport_options.get("unacked_restore_interval", 10)
                * self.transport_options.get("unacked_restore_throttle", 10))

    def describe(self) -> dict:
        return {"mode": self.name, "promise": self.promise, "celery_settings": dict(self.settings),
                "broker_transport_options": dict(self.transport_options),
                "idempotency_key": self.idempotent,
                "visibility_timeout_s": self.visibility_timeout_s}

    def settings_text(self) -> str:
        parts = [f"{k}={v}" for k, v in self.settings.items()]
        parts += [f"{k}={v}" for k, v in self.transport_options.items()]
        if self.idempotent:
            parts.append("idempotency key (HSETNX in the apply script)")
        return ", ".join(parts) or "Celery defaults: early ack, visibility_timeout=3600 (kombu)"


_LATE = {"task_acks_late": True, "task_reject_on_worker_lost": True}
_RESTORE = {"visibility_timeout": VISIBILITY_TIMEOUT_S, "unacked_restore_interval": RESTORE_INTERVAL_S,
            "unacked_restore_throttle": RESTORE_THROTTLE}

MODES: dict[str, DeliveryMode] = {
    "at-most-once": DeliveryMode(
        "at-most-once", "may lose a task, never runs one twice", may_lose=True, may_duplicate=False),
    "at-least-once": DeliveryMode(
        "at-least-once", "never loses a task, may run one twice", may_lose=False, may_duplicate=True,
        settings=_LATE, transport_options=_RESTORE),
    "effectively-once": DeliveryMode(
        "effectively-once", "never loses a task, never applies one twice", may_lose=False,
        may_duplicate=False, settings=_LATE, transport_options=_RESTORE, idempotent=True),
    # The common half-measure, for the lesson: late acks alone. A pool child killed mid-task
    # makes Celery fail the task with WorkerLostError and acknowledge it anyway, so the
    # task is lost although "acks_late" reads like "never lose".
    "acks-late-only": DeliveryMode(
        "acks-late-only", "never loses a task (as people read acks_late), may run one twice",
        may_lose=False, may_duplicate=True, settings={"task_acks_late": True},
        transport_options=_RESTORE),
}
DEFAULT_MODES = ("at-most-once", "at-least-once", "effectively-once")

# What "effectively-once" means on the celery tier of run/compare, per kind of work (the
# tier knows tasks from actors; scenarios declare no more than that):
# * plain tasks (power-io, power-cpu, mapreduce, globals with store=module) have no effect
#   outside their result: results are keyed by task id (the result backend's
#   celery-task-meta-<id>, and the harness keeps one outcome per id), so a second
#   execution writes the same value under the same key and the caller sees it once.
# * actors (bank, pipeline, globals with store=shared) change shared state (balances, a
#   channel, a store) with no idempotency key: a redelivered actor would apply its effects
#   again. They are refused under effectively-once rather than pretend; the fault lab's
#   ledger (``taskrace faults``) is the workload that carries the keys.
EFFECTIVELY_ONCE = {
    "tasks": "results keyed by task id: a redelivered task writes the same result under the same "
             "id (celery-task-meta-<id>) and the caller keeps one outcome per task",
    "actors": None,  # refused: see ACTORS_REFUSED
}
ACTORS_REFUSED = ("--delivery effectively-once: this scenario's actors change shared state (balances, "
                  "a channel, a store) without idempotency keys, so a redelivered actor would apply its "
                  "effects twice; use --delivery at-least-once (may apply twice), or taskrace faults, "
                  "whose ledger carries the keys")


def resolve(name: str | None, acks_late: bool = False) -> DeliveryMode:
    """The celery tier's --delivery, resolved once. No name: Celery's defaults
    (at-most-once), or late acks alone when --acks-late was given."""
    if name is None:
        return MODES["acks-late-only" if acks_late else "at-most-once"]
    mode = get_mode(name)
    if acks_late and not mode.settings.get("task_acks_late"):
        raise ValueError(f"--acks-late contradicts --delivery {name} (early acks); give --delivery "
                         f"acks-late-only, at-least-once or effectively-once instead")
    return mode


def redelivers_after_worker_death(mode: DeliveryMode) -> bool:
    """Does a task held by a worker whose main process died come back within a run?
    Its message stays unacknowledged only under late acks, and kombu restores it after
    the visibility timeout (one hour under Celery's defaults: not within a run)."""
    return bool(mode.settings.get("task_acks_late")) and mode.visibility_timeout_s < 600


def saving_mode(mode: DeliveryMode, pool_child: bool) -> str | None:
    """The mode that would have kept a task lost under ``mode``: a killed main process
    needs late acks and a short visibility timeout, a killed pool child also
    task_reject_on_worker_lost (late acks alone mark it failed and acknowledge it)."""
    if pool_child and not mode.settings.get("task_reject_on_worker_lost"):
        return "at-least-once"
    if not pool_child and not redelivers_after_worker_death(mode):
        return "at-least-once"
    return None


def get_mode(name: str) -> DeliveryMode:
    if name not in MODES:
        raise ValueError(f"unknown delivery mode {name!r}; choose from: {', '.join(MODES)}")
    return MODES[name]
