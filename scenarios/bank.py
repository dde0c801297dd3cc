"""The seed's bank race, and Jepsen-style transfers, under four disciplines.

Seed mode: the balance starts at 200; depositors add 1 a hundred times, withdrawers take
1 a hundred times, each step after a small delay. The final balance must be 200.
Transfers mode (``--mode transfers``): actors move random amounts between ``--accounts``
accounts; money is conserved and no balance may go negative.

Strategies (what the actors do around each read-modify-write):

* ``none``   read, work for ``--race-window`` seconds, write: two actors that read the same
             balance both write, and one update is lost. The seed's ``v.value += 1`` on a
             ``multiprocessing.Value`` is this bug with a window of microseconds; on
             CPython 3.10+ a bare ``+= 1`` between threads rarely races any more, so the
             window is explicit here to make the race visible on every tier.
* ``lock``   the same steps while holding the tier's lock.
* ``atomic`` one operation of the store itself (``Value.get_lock()`` used properly, Redis
             INCRBY / a Lua script); no user code runs inside it, so no window either.
* ``optimistic`` read and think without a lock, then commit only if nobody wrote
             meanwhile (compare-and-set; Redis WATCH/MULTI/EXEC), else retry: no waiting,
             but wasted work under contention (the retry count).
* ``queue``  message passing: actors send operations to one owner that alone holds the
             balances and applies them one by one. No lock anywhere.

Every operation is recorded (what it read, what it wrote, when it wrote, on one host's
monotonic clock). ``audit`` replays that history in write order: an operation that read
a value other than the last one written to that account is a lost update.
"""
from __future__ import annotations

import random
import time

from scenarios.base import Execution, Param, Scenario, Verdict, task_errors
from workers.base import Actor, apply_deltas

STRATEGIES = {
    "none": "read, race window, write: the bug (lost updates)",
    "lock": "the tier's lock around read-modify-write",
    "atomic": "one atomic operation of the store (Value.get_lock(), Redis INCRBY/Lua)",
    "optimistic": "read, think, commit only if unchanged, else retry (CAS; Redis WATCH/MULTI/EXEC)",
    "queue": "message passing to a single owner of the balances; no lock",
}
UNSAFE = {"none"}


def _record(op: dict, before: list[int], after: list[int] | None, t_ns: int) -> dict:
    return {"op": op["op"], "actor": op["actor"], "deltas": op["deltas"], "read": before,
            "wrote": after, "ok": after is not None, "t": t_ns}


def read_modify_write(accounts, op: dict, window_s: float) -> dict:
    """Two separate steps with work between them: safe only under a lock."""
    before = [accounts.read(a) for a, _ in op["deltas"]]
    if window_s:
        time.sleep(window_s)  # computing the new balance; others may write meanwhile
    after = [b + d for b, (_, d) in zip(before, op["deltas"])]
    if op["guard"] and any(v < 0 for v in after):
        return _record(op, before, None, time.monotonic_ns())
    for (account, _), value in zip(op["deltas"], after):
        accounts.write(account, value)
    return _record(op, before, after, time.monotonic_ns())


def client(accounts, lock, channel, ops: list[dict], strategy: str, delay_s: float,
           window_s: float) -> list[dict]:
    """One bank actor: performs (or, under ``queue``, sends) its operations."""
    history = []
    # Each pause is drawn from 0.5-1.5x the delay (seeded, so reproducible). With one
    # fixed period, two actors can fall into lockstep with their read-write windows
    # apart, and then never race at all: seen here in 3 of 10 seed-paced trials.
    jitter = random.Random(ops[0]["op"] if ops else 0)
    for op in ops:
        if delay_s:
            time.sleep(delay_s * jitter.uniform(0.5, 1.5))
        if strategy == "queue":
            channel.put(op)
        elif strategy == "atomic":
            before, after, t_ns = accounts.apply_atomic(op["deltas"], op["guard"])
            history.append(_record(op, before, after, t_ns))
        elif strategy == "optimistic":
            before, after, t_ns, retries = accounts.apply_optimistic(op["deltas"], op["guard"], window_s)
            history.append(dict(_record(op, before, after, t_ns), retries=retries))
        elif strategy == "lock":
            with lock:
                history.append(read_modify_write(accounts, op, window_s))
        else:
            history.append(read_modify_write(accounts, op, window_s))
    if strategy == "queue":
        channel.put(None)  # "this client is done"
    return history


def owner(accounts, channel, clients: int, window_s: float) -> list[dict]:
    """The single owner of the balances under ``queue``: applies operations in arrival
    order, one at a time, so nothing can interleave. The work each operation needs
    (the race window) is done here, serially: message passing is safe, not free."""
    balances = accounts.snapshot()
    history, done = [], 0
    while done < clients:
        op = channel.get()
        if op is None:
            done += 1
            continue
        if window_s:
            time.sleep(window_s)
        before, after = apply_deltas(balances, op["deltas"], op["guard"])
        history.append(_record(op, before, after, time.monotonic_ns()))
    for account, value in enumerate(balances):
        accounts.write(account, value)
    return history


def audit(initial: list[int], history: list[dict], final: list[int]) -> dict:
    """Judge one trial from its history. Pure function: tests feed it broken histories.

    Replays the successful operations in write order. A lost update is an operation whose
    read of an account differs from the last value written there; a negative balance is
    a write below zero; drift is (money in the accounts) - (money there should be).
    """
    last = list(initial)
    expected_total = sum(initial)
    violations = []
    for position, rec in enumerate(sorted(history, key=lambda r: r["t"])):
        if not rec["ok"]:
            continue
        stale = [a for (a, _), seen in zip(rec["deltas"], rec["read"]) if seen != last[a]]
        for (account, delta), value in zip(rec["deltas"], rec["wrote"]):
            last[account] = value
            expected_total += delta
        negative = [a for (a, _), v in zip(rec["deltas"], rec["wrote"]) if v < 0]
        if stale or negative:
            violations.append({"op": rec["op"], "position": position, "stale_accounts": stale,
                               "negative_accounts": negative, "drift": sum(last) - expected_total})
    drift = sum(final) - expected_total
    return {
        "lost_updates": sum(1 for v in violations if v["stale_accounts"]),
        "negative_writes": sum(1 for v in violations if v["negative_accounts"]),
        "negative_final": [a for a, v in enumerate(final) if v < 0],
        "expected_total": expected_total, "final_total": sum(final), "drift": drift,
        "first": violations[0] if violations else None,
        "worst": max(violations, key=lambda v: abs(v["drift"])) if violations else None,
        "last": violations[-1] if violations else None,
        "violated": bool(violations) or drift != 0 or any(v < 0 for v in final),
    }


class Bank(Scenario):
    name = "bank"
    summary = "shared balances under concurrent updates: none / lock / atomic / queue"
    params = (
        Param("mode", str, "seed", "seed: +1/-1 on one balance; transfers: between accounts",
              choices=("seed", "transfers")),
        Param("strategy", str, "none", "how updates are made safe", choices=tuple(STRATEGIES)),
        Param("trials", int, 10, "independent repetitions", min=1, max=10_000),
        Param("steps", int, 100, "seed mode: deposits and withdrawals, each", min=1, max=1_000_000),
        Param("balance", int, 200, "starting balance of every account", min=0, max=10**12),
        Param("accounts", int, 8, "transfers mode: how many accounts", min=2, max=100_000),
        Param("ops", int, 50, "transfers mode: transfers per actor", min=1, max=1_000_000),
        Param("delay", float, 0.01, "seconds an actor waits before each step (the seed's)", min=0, max=60),
        Param("race_window", float, 0.001, "seconds between read and write", min=0, max=60),
    )

    def supported_by(self, tier_cls) -> str | None:
        if self.strategy not in tier_cls.bank_strategies:
            return (f"strategy {self.strategy!r} is not available on backend {tier_cls.name!r}; "
                    f"choose from: {', '.join(tier_cls.bank_strategies)}")
        return None

    def actor_count(self, workers: int) -> int:
        return max(2, workers)  # a race needs two sides; -n adds more actors

    def actors_needed(self, workers: int) -> int:
        return self.actor_count(workers) + (self.strategy == "queue")

    def initial(self) -> list[int]:
        n = 1 if self.p["mode"] == "seed" else self.p["accounts"]
        return [self.p["balance"]] * n

    def plan(self, actors: int, trial: int) -> list[list[dict]]:
        """The operations of each actor for one trial, from the seed (reproducible)."""
        plans: list[list[dict]] = [[] for _ in range(actors)]
        if self.p["mode"] == "seed":
            # Even actors deposit, odd actors withdraw; each side's steps are shared out.
            for side, delta in ((0, +1), (1, -1)):
                members = list(range(side, actors, 2))
                for k in range(self.p["steps"]):
                    who = members[k % len(members)]
                    plans[who].append({"op": f"{trial}.{'d' if delta > 0 else 'w'}{k}",
                                       "deltas": [[0, delta]], "guard": False})
        else:
            n, top = self.p["accounts"], max(1, self.p["balance"] // 4)
            for who in range(actors):
                for k in range(self.p["ops"]):
                    src, dst = self.rng.sample(range(n), 2)
                    amount = self.rng.randint(1, top)
                    plans[who].append({"op": f"{trial}.a{who}.{k}",
                                       "deltas": [[src, -amount], [dst, amount]], "guard": True})
        for who, ops in enumerate(plans):
            for op in ops:
                op["actor"] = f"actor-{who}"
        return plans

    def execute(self, tier) -> Execution:
        strategy, delay, window = self.strategy, self.p["delay"], self.p["race_window"]
        actors = self.actor_count(tier.workers)
        outcomes, trials, units = [], [], 0
        for trial in range(self.p["trials"]):
            plans = self.plan(actors, trial)
            accounts = tier.accounts(self.initial())
            lock = tier.lock() if strategy == "lock" else None
            channel = tier.channel() if strategy == "queue" else None
            batch = [Actor(f"actor-{k}", client, (accounts, lock, channel, ops, strategy, delay, window))
                     for k, ops in enumerate(plans)]
            if strategy == "queue":
                # Last, so that the serial baseline runs it after every client has sent.
                batch.append(Actor("owner", owner, (accounts, channel, actors, window)))
            results = tier.run_actors(batch)
            history = [rec for o in results for rec in (o.value or [])]
            trials.append({"history": history, "final": accounts.snapshot(),
                           "errors": task_errors(results)})
            outcomes += results
            units += sum(len(ops) for ops in plans)
        return Execution(outcomes, units=units, data={"trials": trials, "actors": actors})

    def check(self, execution, tier) -> Verdict:
        initial = self.initial()
        audits = [audit(initial, t["history"], t["final"]) for t in execution.data["trials"]]
        errors = [e for t in execution.data["trials"] for e in t["errors"]]
        violated = sum(a["violated"] for a in audits)
        expected_total = sum(initial)
        finals = [t["final"] for t in execution.data["trials"]]
        answer = [f[0] for f in finals] if self.p["mode"] == "seed" else [sum(f) for f in finals]
        details = {
            "trials": len(audits),
            "violating_trials": violated,
            # the seed's figure: trials whose final balance is not what it started at
            "error_count": sum(a["drift"] != 0 for a in audits),
            "lost_updates": sum(a["lost_updates"] for a in audits),
            "lost_updates_per_trial": [a["lost_updates"] for a in audits],
            "money_created": sum(max(a["drift"], 0) for a in audits),
            "money_lost": -sum(min(a["drift"], 0) for a in audits),
            "drift_per_trial": [a["drift"] for a in audits],
            "negative_balances": sum(a["negative_writes"] + len(a["negative_final"]) for a in audits),
            "first_violation": next((a["first"] for a in audits if a["first"]), None),
            "worst_violation": max((a["worst"] for a in audits if a["worst"]),
                                   key=lambda v: abs(v["drift"]), default=None),
            "last_violation": next((a["last"] for a in reversed(audits) if a["last"]), None),
            "actors": execution.data["actors"],
            "retries": sum(r.get("retries", 0) for t in execution.data["trials"] for r in t["history"]),
            "errors": errors,
        }
        ok = violated == 0 and not errors
        expected = (f"balance {expected_total} in every trial" if self.p["mode"] == "seed"
                    else f"total {expected_total}, no negative balance, in every trial")
        actual = f"{violated}/{len(audits)} trials violated" + (f", {len(errors)} errors" if errors else "")
        return Verdict(ok, expected, actual, answer=answer, details=details,
                       unsafe=self.strategy in UNSAFE)

    def history_lines(self, execution, tier_name: str) -> list[dict]:
        """The full operation history, one JSON-able dict per operation."""
        lines = []
        for trial, t in enumerate(execution.data["trials"]):
            for rec in sorted(t["history"], key=lambda r: r["t"]):
                lines.append({"trial": trial, "op": rec["op"], "actor": rec["actor"],
                              "accounts": [a for a, _ in rec["deltas"]],
                              "amounts": [d for _, d in rec["deltas"]],
                              "tier": tier_name, "strategy": self.strategy,
                              "read": rec["read"], "wrote": rec["wrote"],
                              "result": "ok" if rec["ok"] else "refused", "t_ns": rec["t"],
                              **({"retries": rec["retries"]} if "retries" in rec else {})})
        return lines
