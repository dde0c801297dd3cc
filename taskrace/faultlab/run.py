"""One fault run: plan the operations, publish them, inject the fault when k of them have
started, heal it, wait until nothing more can happen (or the deadline), count.

    plan ──send_task──> broker ──> workers ──EVAL──> ledger (state Redis)
                                       ▲                  │ progress, every 50 ms
                        nemesis ───────┘   <──────────────┘ watch loop (this module)

"Nothing more can happen" is checked, not guessed: the queue is empty, no operation is
running in a live process, and every unacknowledged message left in the broker would be
restored only after the deadline (at-most-once's are parked for kombu's hour). Then the
run ends at once; otherwise at the deadline, derived from the work, the fault's hold and
the mode's visibility timeout, never the 600 s task timeout.
"""
from __future__ import annotations

import random
import secrets
import time
from dataclasses import asdict, dataclass

from redis.exceptions import RedisError

from scenarios import ledger
from taskrace import events as stream
from taskrace.faultlab.checker import count_against_plan, promise_kept, summary
from taskrace.faultlab.nemesis import FAULTS, Victim
from workers.base import TierFailure
from workers.delivery import ENV as DELIVERY_ENV, MODES, get_mode
from workers.infra.redact import redact_text

APPLY_FN = "scenarios.ledger:apply"
WORKLOADS = {"bank": "transfers between accounts: money is the unit of loss",
             "jobs": "uniquely numbered jobs: lost = never ran, duplicated = ran twice"}
POLL_S = 0.05
ARMED_POLL_S = 0.01  # waiting for the victim: look often, a young operation is what we want
QUIET_S = 0.5  # nothing may move for this long before the run is called finished


@dataclass
class FaultSpec:
    fault: str
    mode: str
    workload: str = "bank"
    persistence: str = "aof"
    workers: int = 2
    ops: int = 60
    work_s: float = 0.05
    at: int | None = None  # inject after this many operations started (default: a third)
    accounts: int = 8
    balance: int = 1000
    seed: int = 0
    hold_s: float | None = None  # pause/partition length (default: past the visibility timeout)

    def validate(self) -> None:
        """Raise ValueError with one line for the user."""
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; choose from: {', '.join(FAULTS)}")
        get_mode(self.mode)
        if self.workload not in WORKLOADS:
            raise ValueError(f"unknown workload {self.workload!r}; choose from: {', '.join(WORKLOADS)}")
        from workers.infra.redis_server import PERSISTENCE
        if self.persistence not in PERSISTENCE:
            raise ValueError(f"unknown --broker-persistence {self.persistence!r}; "
                             f"choose from: {', '.join(PERSISTENCE)}")
        if not 2 <= self.workers <= 16:
            raise ValueError(f"-n must be between 2 and 16 for the fault lab (a survivor must take "
                             f"over the work), got {self.workers}")
        if self.hold_s is not None and not 0 <= self.hold_s <= 600:
            raise ValueError(f"--hold must be between 0 and 600 seconds, got {self.hold_s}")
        if not 1 <= self.ops <= 100_000:
            raise ValueError(f"--ops must be between 1 and 100000, got {self.ops}")
        if self.at is not None and not 1 <= self.at <= self.ops:
            raise ValueError(f"--at must be between 1 and --ops ({self.ops}), got {self.at}")
        if not 0 <= self.work_s <= 10:
            raise ValueError(f"--work must be between 0 and 10 seconds, got {self.work_s}")

    @property
    def trigger(self) -> int:
        return self.at or max(1, self.ops // 3)


def plan(spec: FaultSpec) -> tuple[list[dict], list[int]]:
    """The planned operations (ids, and for the bank the money they move) and the
    initial balances. Transfers carry no guard: no overdraft check means the final
    balances follow from the applied operations alone, in any order."""
    rng = random.Random(spec.seed)
    if spec.workload == "jobs":
        return [{"op": f"j{k}", "deltas": []} for k in range(spec.ops)], []
    ops = []
    for k in range(spec.ops):
        src, dst = rng.sample(range(spec.accounts), 2)
        amount = rng.randint(1, max(1, spec.balance // 20))
        ops.append({"op": f"t{k}", "deltas": [[src, -amount], [dst, amount]]})
    return ops, [spec.balance] * spec.accounts


def default_hold(mode_name: str) -> float:
    """A pause that outlasts at-least-once's visibility timeout and one restore sweep."""
    late = MODES["at-least-once"]
    return late.visibility_timeout_s + late.restore_period_s + 3


def deadline_s(spec: FaultSpec, hold_s: float) -> float:
    mode = get_mode(spec.mode)
    work = spec.ops * spec.work_s / spec.workers
    # A redelivery can take a visibility timeout plus a sweep; at-most-once's hour is
    # beyond any run, so its unacked messages are reported as parked instead.
    redelivery = mode.visibility_timeout_s + mode.restore_period_s if mode.visibility_timeout_s < 600 else 0
    return 3 * work + hold_s + redelivery + 10


def _server_time(r) -> float:
    sec, usec = r.time()
    return sec + usec / 1e6


class _Watch:
    """What the loop knows about the broker: the queue, and the unacknowledged
    messages with the time each would be restored."""

    def __init__(self, cluster, mode) -> None:
        self.cluster, self.mode = cluster, mode

    def broker_state(self) -> dict | None:
        try:
            r = self.cluster.broker_client()
            with r.pipeline(transaction=False) as pipe:
                pipe.llen(self.cluster.queue)
                pipe.zrange("unacked_index", 0, -1, withscores=True)
                pipe.time()
                queued, unacked, (sec, usec) = pipe.execute()
        except Exception:  # noqa: BLE001 - a broker being restarted: ask again next poll
            return None
        now = sec + usec / 1e6
        back = self.mode.visibility_timeout_s + self.mode.restore_period_s
        return {"queued": queued, "unacked": [now - score for _, score in unacked],
                "restore_in": [max(0.0, score + back - now) for _, score in unacked]}


def run_fault(spec: FaultSpec, cluster_factory=None, on_event=None, apply_fn: str = APPLY_FN,
              worker_env: dict | None = None) -> dict:
    """Run one fault under one delivery mode; return its record (JSON-able).

    ``apply_fn`` and ``worker_env``: someone else's operation in place of the ledger's (a
    student's task: exercises/idempotent-task/hidden/idem_adapter.py). The workers call
    ``apply_fn(store, op, idempotent, work_s, redelivered=, worker=)`` for each planned
    operation; ``worker_env`` is added to their environment (TASKRACE_TASK_MODULES and a
    PYTHONPATH that lets them import it). Its effect is the transfer itself, so the record
    also keeps the balances, initial and final, the truth a checker reads the plan against."""
    spec.validate()
    mode = get_mode(spec.mode)
    hold = spec.hold_s if spec.hold_s is not None else default_hold(spec.mode)
    fault = FAULTS[spec.fault](mode, hold)
    ops, initial = plan(spec)
    run_id = secrets.token_hex(3)
    env = {DELIVERY_ENV: mode.name, "TASKRACE_PREFETCH": "1", **(worker_env or {})}
    if cluster_factory is None:
        from taskrace.faultlab.local import LocalCluster
        cluster_factory = LocalCluster
    cluster = cluster_factory(run_id, spec.workers, spec.persistence, env)
    say = on_event or (lambda text: None)
    app = None
    store = f"taskrace:fault:{run_id}"
    try:
        say("starting workers and brokers")
        cluster.start()
        state = cluster.state_client()
        ledger.create(state, store, initial)
        from workers.celery_app import TASK_OP, make_app

        app = make_app(cluster.broker_url, mode.name)
        t0 = _server_time(state)
        with app.producer_or_acquire() as producer:
            for op in ops:
                app.send_task(TASK_OP, args=[apply_fn, [store, op, mode.idempotent, spec.work_s]],
                              queue=cluster.queue, task_id=f"{run_id}.{op['op']}", producer=producer)
        say(f"{len(ops)} operations published; fault after {spec.trigger} have started")
        events = _watch(spec, cluster, mode, fault, state, store, t0, hold, say, ops)
        snap = ledger.snapshot(state, store, len(initial))
        logs = cluster.logs()
        ledger.clear(state, store, len(initial))
    except (RuntimeError, TimeoutError, OSError, RedisError) as exc:
        # a worker that would not start, a broker that would not come back: one line
        raise TierFailure(redact_text(f"fault lab, {spec.fault} under {spec.mode}: "
                                      f"{type(exc).__name__}: {exc}".splitlines()[0])) from None
    finally:
        if app is not None:
            app.close()
        cluster.close()
    record = _record(spec, mode, fault, ops, initial, snap, events, logs, t0, hold, cluster.where)
    if apply_fn != APPLY_FN:
        record.update(apply_fn=apply_fn, balances={"initial": initial, "final": snap["balances"]})
    return record


class _OpTeller:
    """The operations as task events (the live view draws them where they ran): a start
    when the ledger shows an operation running, a finish per execution in its log, a
    second execution of an operation told as ``duplicate``. Only while someone listens
    to task events; a poll costs one LRANGE of the log's new entries."""

    def __init__(self, state, store: str, ops: list[dict]) -> None:
        self.state, self.log_key = state, ledger.keys(store)["log"]
        self.index = {op["op"]: i for i, op in enumerate(ops)}
        self.started: dict[str, float] = {}
        self.applied: dict[str, int] = {}
        self.told = 0

    def poll(self, progress: dict) -> None:
        for op, (worker, t) in progress["running"].items():
            if self.started.get(op) != t and op in self.index:
                self.started[op] = t
                stream.emit("task.started", backend="celery", index=self.index[op], op=op, started=t, worker=worker)
        if progress["executions"] > self.told:
            import json

            entries = self.state.lrange(self.log_key, self.told, -1)
            self.told += len(entries)
            for entry in entries:
                t, op, kind, worker = json.loads(entry)
                if op not in self.index:
                    continue
                self.applied[op] = self.applied.get(op, 0) + (kind == "applied")
                stream.emit("task.finished", backend="celery", index=self.index[op], op=op,
                            started=min(self.started.get(op, t), t), finished=t, worker=worker, ok=True,
                            effect=kind, duplicate=self.applied[op] > 1)


def _watch(spec, cluster, mode, fault, state, store, t0, hold, say, ops) -> dict:
    watch = _Watch(cluster, mode)
    teller = _OpTeller(state, store, ops) if stream.wants_tasks() else None
    deadline = t0 + deadline_s(spec, hold)
    ev = {"fired_at": None, "healed_at": None, "victims": [], "timed_out": False, "parked": 0,
          "queued_at_end": 0, "fault_info": {}}
    quiet_since = None
    while True:
        now = _server_time(state)
        progress = ledger.progress(state, store)
        if teller:
            teller.poll(progress)
        running = {op: (w, t) for op, (w, t) in progress["running"].items() if cluster.alive(w)}
        # The victim: the operation with the most work still ahead of it, and only if at
        # least 40 % is (else the next poll): a fault must hit work in flight, not work
        # that finishes while the signal is on its way.
        ahead = 0.6 * spec.work_s if spec.work_s else float("inf")
        newest = sorted((t, op, w) for op, (w, t) in running.items())
        fresh = [c for c in newest if time.time() - c[0] < ahead]
        armed = ev["fired_at"] is None and progress["started"] >= spec.trigger
        # A loaded host may poll too slowly to catch an operation that young: after a few
        # more starts (or once every operation has started), take the newest one running,
        # so a fault never fails to fire while there is work in flight.
        late = progress["started"] >= min(spec.ops, spec.trigger + 2 * spec.workers)
        pick = fresh or (newest if late else [])
        if armed and pick:
            _, op, worker = pick[-1]
            say(f"{fault.name}: {op} running on {worker}")
            fired_at = _server_time(state)  # when the fault starts to land (a Docker call takes a while)
            fault.inject(cluster, Victim(op, worker))
            ev.update(fired_at=fired_at, victims=[op], fault_info=fault.info, victim_worker=worker)
            stream.emit("fault.fired", fault=fault.name, mode=mode.name, victim=op, worker=worker,
                        at_s=round(fired_at - t0, 3))
            continue
        if ev["fired_at"] is not None and ev["healed_at"] is None:
            done = all(state.hget(ledger.keys(store)["applied"], v) for v in ev["victims"])
            if fault.heal_due(now - ev["fired_at"], done):
                fault.heal(cluster)
                ev["healed_at"] = _server_time(state)
                say(f"{fault.name}: healed")
                stream.emit("fault.healed", fault=fault.name, mode=mode.name, at_s=round(ev["healed_at"] - t0, 3))
            time.sleep(POLL_S)
            continue
        broker = watch.broker_state()
        if broker is not None:
            stream.emit("queue.depth", queue=cluster.queue, depth=broker["queued"], unacked=len(broker["unacked"]),
                        applied=progress["applied_distinct"], planned=spec.ops)
        remaining = deadline - now
        quiet = (broker is not None and broker["queued"] == 0 and not running
                 and all(t > remaining for t in broker["restore_in"]))
        if quiet and (ev["fired_at"] is not None or progress["applied_distinct"] >= spec.ops):
            quiet_since = quiet_since or now
            if now - quiet_since >= QUIET_S:
                ev["parked"] = len(broker["restore_in"])
                if teller:
                    teller.poll(ledger.progress(state, store))
                return ev
        else:
            quiet_since = None
        if now > deadline:
            ev["timed_out"] = True
            if broker is not None:
                ev["parked"], ev["queued_at_end"] = len(broker["restore_in"]), broker["queued"]
            if teller:
                teller.poll(ledger.progress(state, store))
            return ev
        time.sleep(ARMED_POLL_S if armed else POLL_S)


def _timeline(log: list, ops: list[dict], t0: float) -> dict:
    """Operations and money over time, from the ledger's own log (Redis's clock)."""
    amount = {op["op"]: sum(d for _, d in op["deltas"] if d > 0) for op in ops}
    seen: set = set()
    points, executions, money = [], 0, 0
    for t, op, kind, _worker in sorted(log, key=lambda e: e[0]):
        executions += 1
        if kind == "applied":
            money += amount.get(op, 0)
            seen.add(op)
        points.append([round(t - t0, 4), len(seen), executions, money])
    return {"columns": ["t_s", "ops_applied", "executions", "money_moved"], "points": points,
            "money_planned": sum(amount.values())}


def _first_applied_after(log, op_ids, t) -> float | None:
    times = [e[0] for e in log if e[2] == "applied" and e[1] in op_ids and e[0] >= t]
    return min(times) if times else None


def _record(spec, mode, fault, ops, initial, snap, ev, logs, t0, hold, where) -> dict:
    counts = count_against_plan(ops, snap["applied"], initial, snap["balances"], snap["skipped"],
                                snap["redelivered"])
    durable = spec.persistence != "none" or not fault.restarts_broker
    fired = ev["fired_at"] is not None
    kept, why = promise_kept(mode, counts, durable, fired)
    log = snap["log"]
    recovery = None
    if fired:
        victims_back = _first_applied_after(log, set(ev["victims"]), ev["fired_at"])
        resumed = _first_applied_after(log, {op["op"] for op in ops}, ev["healed_at"] or ev["fired_at"])
        recovery = {"victim_applied_s": None if victims_back is None else round(victims_back - ev["fired_at"], 3),
                    "progress_resumed_s": None if resumed is None else round(resumed - ev["fired_at"], 3),
                    "fault_held_s": round((ev["healed_at"] or ev["fired_at"]) - ev["fired_at"], 3)}
    return {
        "fault": spec.fault, "mode": mode.name, "workload": spec.workload,
        "broker_persistence": spec.persistence, "where": where,
        "spec": asdict(spec), "delivery": mode.describe(), "hold_s": hold,
        "fault_info": ev["fault_info"], "victims": ev["victims"],
        "fired": fired,
        "fired_at_s": round(ev["fired_at"] - t0, 3) if fired else None,
        "healed_at_s": round(ev["healed_at"] - t0, 3) if ev["healed_at"] else None,
        "timed_out": ev["timed_out"], "deadline_s": round(deadline_s(spec, hold), 1),
        "parked_unacked": ev["parked"], "queued_at_end": ev["queued_at_end"],
        "counts": counts, "worker_lost_errors": logs.count("WorkerLostError('"),
        "recovery": recovery,
        "promise": mode.promise, "kept": kept, "verdict": why,
        "summary": summary(counts, money=spec.workload == "bank"),
        "timeline": _timeline(log, ops, t0),
        "fault_window": [round(ev["fired_at"] - t0, 3), round((ev["healed_at"] or ev["fired_at"]) - t0, 3)]
        if fired else None,
    }
