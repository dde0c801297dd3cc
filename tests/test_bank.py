"""The bank: the seed's race shows under `none`, never under a safe strategy (lock, atomic,
optimistic, queue), in both modes; every planned operation runs exactly once on every
tier; the pure `audit` checker catches hand-made broken histories (lost updates, operations
missing, repeated or never planned, balances the operations cannot explain); `--history`
exports every operation. No timing assertions: only counts and verdicts.
"""
from __future__ import annotations

import json
import multiprocessing
import random
from concurrent.futures import ProcessPoolExecutor

import pytest

try:
    from conftest import CONCURRENT_TIERS, cli, run
except ImportError:  # tests/ imported as a package
    from tests.conftest import CONCURRENT_TIERS, cli, run

from scenarios.bank import UNSAFE, Bank, audit, closed_form
from scenarios.base import Execution
from workers import get_tier
from workers.base import apply_deltas

FAST = {"delay": 0.002, "trials": 10}
# Every safe strategy each concurrent tier offers (a strategy or tier added later is
# covered without editing this file).
SAFE_CASES = [(tier, strategy) for tier in CONCURRENT_TIERS
              for strategy in get_tier(tier).bank_strategies if strategy not in UNSAFE]

# Every run on a tier below, (tier, workers, params). Each is a run of its own (its own
# pool, accounts and plan) that spends most of its time in the scenario's sleeps (the
# delay before each step, the race window), so they run side by side, AT_ONCE at a time,
# each in a process of its own (spawned: no fork of this threaded process) exactly as it
# would alone; a test reads its record. Longest first.
RUNS = [
    ("processes", 2, {"strategy": "none"}),  # the seed's pace
    *[("sequential", 1, {"strategy": "lock", "mode": mode, **FAST}) for mode in ("seed", "transfers")],
    *[(tier, 2, {"strategy": strategy, **FAST}) for tier, strategy in SAFE_CASES],
    *[(tier, 2, {"strategy": "none", **FAST}) for tier in CONCURRENT_TIERS],
    *[(tier, 2, {"strategy": strategy, "mode": "transfers", **FAST}) for tier, strategy in SAFE_CASES],
    *[(tier, 2, {"strategy": "none", "mode": "transfers", **FAST}) for tier in CONCURRENT_TIERS],
    ("threads", 3, {"strategy": "lock", "mode": "transfers", **FAST}),
]
AT_ONCE = 6
RUN_TIMEOUT = 600


def _key(tier: str, workers: int, params: dict) -> tuple:
    return tier, workers, tuple(sorted(params.items()))


def _bank(tier: str, workers: int, params: dict) -> dict:
    """One run, in a process of the pool: the record conftest's run gives."""
    return run("bank", tier, workers, **params)


# The runs race on purpose, AT_ONCE at a time, and the unsafe ones must lose updates in 9
# of 10 trials: another test's load beside them shifts those odds (8 of 10 seen under
# xdist). The module holds every core from its first test to its last (tests/conftest.py).
pytestmark = pytest.mark.alone


@pytest.fixture(scope="module")
def bank_runs():
    """Every run of RUNS started at once, AT_ONCE at a time; each test waits for its own.
    At the end every run is waited for (each stops its own pool), also after a failure."""
    pool = ProcessPoolExecutor(AT_ONCE, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield {_key(*r): pool.submit(_bank, *r) for r in RUNS}
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def bank(runs: dict, tier: str, workers: int = 2, **params) -> dict:
    """The record of the run (tier, workers, params), one of RUNS."""
    return runs[_key(tier, workers, params)].result(timeout=RUN_TIMEOUT)


@pytest.mark.parametrize("tier", CONCURRENT_TIERS)
def test_tier_offers_the_issue_strategies(tier):
    assert {"none", "lock", "atomic", "queue"} <= set(get_tier(tier).bank_strategies)


def _details(record: dict) -> dict:
    return record["verdict"]["details"]


def assert_every_op_once(d: dict, planned: int) -> None:
    """Every planned operation of every trial ran exactly once: none lost, none repeated,
    nothing the plan did not contain."""
    assert d["planned"] == planned
    assert d["applied_once"] == planned, (d["lost_op_ids"], d["duplicated_op_ids"])
    assert d["lost_ops"] == d["duplicated_ops"] == d["unplanned_ops"] == 0
    assert d["units_missing"] == d["units_created"] == 0
    assert d["lost_ops_per_trial"] == d["duplicated_ops_per_trial"] == [0] * d["trials"]


def sequential_reference(runs: dict, mode: str) -> dict:
    """The oracle for the FAST runs of a mode (any strategy: sequential is serial)."""
    return bank(runs, "sequential", 1, strategy="lock", mode=mode, **FAST)


# --- seed mode: +1 / -1 on one balance of 200 ---------------------------------------------

@pytest.mark.parametrize("tier", CONCURRENT_TIERS)
def test_none_loses_updates_in_nine_of_ten_trials(bank_runs, tier):
    record = bank(bank_runs, tier, 2, strategy="none", **FAST)
    d = _details(record)
    assert d["trials"] == 10
    assert d["violating_trials"] >= 9, d["lost_updates_per_trial"]
    assert d["lost_updates"] > 0
    assert record["verdict"]["ok"] is False
    assert record["verdict"]["unsafe"] is True  # a lesson, not a crash
    assert not d["errors"], d["errors"]
    # Updates are lost, operations are not: each ran once; the balance forgot some of them.
    assert_every_op_once(d, 10 * 200)


def test_none_with_the_seed_defaults_on_processes(bank_runs):
    # The issue's claim at the seed's pace: 10 trials, default delay and race window.
    record = bank(bank_runs, "processes", 2, strategy="none")
    d = _details(record)
    assert record["params"]["trials"] == 10
    assert d["violating_trials"] >= 9, d["lost_updates_per_trial"]
    assert d["error_count"] >= 1  # the seed's figure: trials whose balance is not 200
    assert not d["errors"], d["errors"]


@pytest.mark.parametrize("tier,strategy", SAFE_CASES)
def test_safe_strategies_never_violate(bank_runs, tier, strategy):
    record = bank(bank_runs, tier, 2, strategy=strategy, **FAST)
    d = _details(record)
    assert record["verdict"]["ok"], record["verdict"]
    assert d["trials"] == 10
    assert d["violating_trials"] == 0
    assert d["lost_updates"] == 0
    assert d["drift_per_trial"] == [0] * 10
    assert d["error_count"] == 0
    assert record["verdict"]["unsafe"] is False
    assert not d["errors"], d["errors"]
    assert_every_op_once(d, 10 * 200)
    assert d["inconsistent_trials"] == 0
    assert record["answer_digest"] == sequential_reference(bank_runs, "seed")["answer_digest"]
    if strategy == "optimistic":
        assert d["retries"] > 0  # the contention was real: commits conflicted and retried


# --- transfers mode: random transfers between 8 accounts --------------------------------

@pytest.mark.parametrize("tier", CONCURRENT_TIERS)
def test_transfers_none_violates(bank_runs, tier):
    record = bank(bank_runs, tier, 2, strategy="none", mode="transfers", **FAST)
    d = _details(record)
    assert d["violating_trials"] >= 9, d["drift_per_trial"]
    assert d["lost_updates"] > 0
    assert d["first_violation"] is not None
    assert d["worst_violation"] is not None
    assert d["last_violation"] is not None
    assert record["verdict"]["ok"] is False
    assert_every_op_once(d, 10 * 2 * 50)
    # Every transfer ran once (that part of the answer agrees with sequential), so the
    # answer differs from sequential's exactly when the total money does.
    differs = record["answer_digest"] != sequential_reference(bank_runs, "transfers")["answer_digest"]
    assert differs == any(d["drift_per_trial"]), d["drift_per_trial"]


@pytest.mark.parametrize("tier,strategy", SAFE_CASES)
def test_transfers_safe_strategies_conserve_and_stay_positive(bank_runs, tier, strategy):
    record = bank(bank_runs, tier, 2, strategy=strategy, mode="transfers", **FAST)
    d = _details(record)
    assert record["verdict"]["ok"], record["verdict"]
    assert d["violating_trials"] == 0
    assert d["lost_updates"] == 0
    assert d["negative_balances"] == 0
    assert d["money_created"] == 0 and d["money_lost"] == 0
    assert d["drift_per_trial"] == [0] * 10
    assert d["first_violation"] is None
    assert not d["errors"], d["errors"]
    assert_every_op_once(d, 10 * 2 * 50)
    assert d["inconsistent_trials"] == 0
    assert record["answer_digest"] == sequential_reference(bank_runs, "transfers")["answer_digest"]


@pytest.mark.parametrize("mode", ["seed", "transfers"])
def test_sequential_runs_every_planned_operation_once(bank_runs, mode):
    d = _details(sequential_reference(bank_runs, mode))
    assert sequential_reference(bank_runs, mode)["verdict"]["ok"]
    assert_every_op_once(d, 10 * (200 if mode == "seed" else 2 * 50))
    if mode == "transfers":  # refusals are executions: the guard said no, once
        assert 0 <= d["refused_ops"] <= d["applied_once"]


def test_more_actors_still_agree_with_sequential(bank_runs):
    # -n 3 plans 3 actors' transfers where the sequential baseline plans 2: the answer
    # counts against each run's own plan, so a correct run agrees at any -n.
    record = bank(bank_runs, "threads", 3, strategy="lock", mode="transfers", **FAST)
    d = _details(record)
    assert record["verdict"]["ok"], record["verdict"]
    assert d["actors"] == 3
    assert_every_op_once(d, 10 * 3 * 50)
    assert record["answer_digest"] == sequential_reference(bank_runs, "transfers")["answer_digest"]


# --- the pure checker on hand-made histories ----------------------------------------------

def op(name, deltas, read, wrote, t, ok=True):
    return {"op": name, "actor": "a", "deltas": deltas, "read": read, "wrote": wrote,
            "ok": ok, "t": t}


def plan_of(history, guard):
    """The plan a complete history ran: each of its operation ids once, with its amounts."""
    plan = {}
    for rec in history:
        plan.setdefault(rec["op"], {"op": rec["op"], "actor": rec["actor"], "deltas": rec["deltas"],
                                    "guard": guard})
    return list(plan.values())


def serial_transfers(initial, n_ops=40, seed=1):
    """A correct serial history of guarded transfers, and its final balances."""
    rng = random.Random(seed)
    balances, history = list(initial), []
    for k in range(n_ops):
        src, dst = rng.sample(range(len(balances)), 2)
        amount = rng.randint(1, 80)
        deltas = [[src, -amount], [dst, amount]]
        read = [balances[src], balances[dst]]
        if read[0] - amount < 0:
            history.append(op(f"t{k}", deltas, read, None, k, ok=False))  # refused
            continue
        wrote = [read[0] - amount, read[1] + amount]
        balances[src], balances[dst] = wrote
        history.append(op(f"t{k}", deltas, read, wrote, k))
    return history, balances


def test_audit_passes_a_correct_serial_seed_history():
    history = [op("d0", [[0, 1]], [200], [201], 1), op("w0", [[0, -1]], [201], [200], 2),
               op("d1", [[0, 1]], [200], [201], 3)]
    result = audit([200], history, [201], plan_of(history, guard=False))
    assert result["violated"] is False
    assert result["lost_updates"] == 0 and result["negative_writes"] == 0
    assert result["drift"] == 0
    assert result["first"] is None


def test_audit_passes_a_correct_serial_transfer_history_in_any_list_order():
    initial = [200] * 4
    history, final = serial_transfers(initial)
    assert any(not h["ok"] for h in history)  # the fixture includes refusals, to be skipped
    shuffled = history[:]
    random.Random(7).shuffle(shuffled)  # audit orders by write time, not list position
    result = audit(initial, shuffled, final, plan_of(history, guard=True))
    assert result["violated"] is False, result
    assert result["expected_total"] == sum(initial) == result["final_total"]


def test_audit_catches_a_lost_update():
    # Two operations read the same balance; the second write erases the first.
    history = [op("d0", [[0, 1]], [200], [201], 1), op("w0", [[0, -1]], [200], [199], 2)]
    result = audit([200], history, [199], plan_of(history, guard=False))
    assert result["violated"] is True
    assert result["lost_updates"] == 1
    assert result["first"]["op"] == "w0"
    assert result["first"]["stale_accounts"] == [0]
    assert result["drift"] == -1


def test_audit_catches_a_lost_update_whose_drift_cancels_out():
    # Two lost updates of opposite sign: the final balance is right, the history is not.
    history = [op("d0", [[0, 1]], [200], [201], 1), op("w0", [[0, -1]], [200], [199], 2),
               op("w1", [[0, -1]], [199], [198], 3), op("d1", [[0, 1]], [199], [200], 4)]
    result = audit([200], history, [200], plan_of(history, guard=False))
    assert result["drift"] == 0
    assert result["lost_updates"] == 2
    assert result["violated"] is True


def test_audit_catches_money_created():
    # Reads are consistent, but a transfer credits more than it debits.
    initial = [200, 200]
    history = [op("t0", [[0, -50], [1, 50]], [200, 200], [150, 260], 1)]
    result = audit(initial, history, [150, 260], plan_of(history, guard=True))
    assert result["violated"] is True
    assert result["drift"] == 10
    assert result["final_total"] == result["expected_total"] + 10


def test_audit_catches_final_balances_that_disagree_with_the_history():
    history, final = serial_transfers([200] * 4)
    tampered = final[:]
    tampered[0] += 5
    result = audit([200] * 4, history, tampered, plan_of(history, guard=True))
    assert result["violated"] is True
    assert result["drift"] == 5


def test_audit_catches_a_negative_balance_write():
    # An unguarded transfer overdraws account 0, a later one brings it back: the final
    # state looks fine, the history does not.
    history = [op("t0", [[0, -250], [1, 250]], [200, 200], [-50, 450], 1),
               op("t1", [[1, -100], [0, 100]], [450, -50], [350, 50], 2)]
    result = audit([200, 200], history, [50, 350], plan_of(history, guard=False))
    assert result["violated"] is True
    assert result["negative_writes"] == 1
    assert result["first"]["negative_accounts"] == [0]
    assert result["negative_final"] == []
    assert result["drift"] == 0


def test_audit_catches_a_negative_final_balance():
    result = audit([200, 200], [], [-1, 401], [])
    assert result["violated"] is True
    assert result["negative_final"] == [0]


def test_audit_ignores_refused_operations():
    history = [op("t0", [[0, -500], [1, 500]], [200, 200], None, 1, ok=False),
               op("t1", [[0, -10], [1, 10]], [200, 200], [190, 210], 2)]
    result = audit([200, 200], history, [190, 210], plan_of(history, guard=True))
    assert result["violated"] is False, result


# --- the pure checker against the plan -----------------------------------------------------

def transfer(name, src, dst, amount, guard=True):
    return {"op": name, "actor": "a", "deltas": [[src, -amount], [dst, amount]], "guard": guard}


def applied(plan_op, balances, t, **extra):
    """Apply one planned operation to ``balances`` (in place) as a correct actor would,
    and return its history record."""
    before, after = apply_deltas(balances, plan_op["deltas"], plan_op["guard"])
    return dict(op(plan_op["op"], plan_op["deltas"], before, after, t, ok=after is not None), **extra)


def test_audit_counts_refusals_as_executed_once():
    initial = [200] * 4
    history, final = serial_transfers(initial)
    refused = [h["op"] for h in history if not h["ok"]]
    assert refused  # the fixture has some
    result = audit(initial, history, final, plan_of(history, guard=True))
    assert result["violated"] is False, result
    assert result["planned"] == result["applied_once"] == len(history)
    assert result["refused_ops"] == len(refused)
    assert result["lost_ops"] == result["duplicated_ops"] == result["unplanned_ops"] == []


def test_audit_catches_a_planned_transfer_that_never_ran():
    # The history is a correct serial run of every transfer but one: no read is stale, no
    # money drifts, the total is conserved. Only the plan knows something is missing.
    initial = [200] * 4
    history, _ = serial_transfers(initial)
    plan = plan_of(history, guard=True)
    balances = list(initial)
    missing = plan[len(plan) // 2]
    kept = [applied(p, balances, t) for t, p in enumerate(plan) if p is not missing]
    amount = missing["deltas"][1][1]
    result = audit(initial, kept, balances, plan)
    assert result["lost_ops"] == [missing["op"]]
    assert result["units_missing"] == amount
    assert result["applied_once"] == len(plan) - 1
    assert result["lost_updates"] == 0 and result["drift"] == 0
    assert result["inconsistent_accounts"] == [] and result["off_closed_form"] is False
    assert result["violated"] is True


def test_audit_counts_an_operation_seen_only_as_an_error_as_lost():
    plan = [transfer("t0", 0, 1, 30), transfer("t1", 1, 0, 45)]
    balances = [200, 200]
    history = [applied(plan[0], balances, 1),
               op("t1", plan[1]["deltas"], [230, 170], None, 2, ok=False) | {"error": "WorkerLostError"}]
    result = audit([200, 200], history, balances, plan)
    assert result["lost_ops"] == ["t1"]
    assert result["units_missing"] == 45
    assert result["refused_ops"] == 0  # an error is not a refusal
    assert result["violated"] is True


def test_audit_catches_a_transfer_applied_twice():
    # t0 ran again after t1, reading and writing consistently: no lost update, no drift
    # against the history, conserved money. It moved 30 units that nobody asked to move.
    plan = [transfer("t0", 0, 1, 30), transfer("t1", 1, 0, 10)]
    balances = [200, 200]
    history = [applied(plan[0], balances, 1), applied(plan[1], balances, 2), applied(plan[0], balances, 3)]
    assert balances == [150, 250]
    result = audit([200, 200], history, balances, plan)
    assert result["duplicated_ops"] == ["t0"]
    assert result["units_created"] == 30
    assert result["applied_once"] == 1
    assert result["lost_ops"] == [] and result["units_missing"] == 0
    assert result["lost_updates"] == 0 and result["drift"] == 0
    assert result["violated"] is True


def test_audit_counts_a_repeat_the_guard_refused_as_duplicated_but_moving_nothing():
    plan = [transfer("t0", 0, 1, 150)]
    balances = [200, 200]
    history = [applied(plan[0], balances, 1), applied(plan[0], balances, 2)]
    assert history[1]["ok"] is False  # 50 - 150 would overdraw
    result = audit([200, 200], history, balances, plan)
    assert result["duplicated_ops"] == ["t0"]
    assert result["units_created"] == 0
    assert result["violated"] is True


def test_audit_catches_an_unplanned_operation():
    plan = [transfer("t0", 0, 1, 30)]
    balances = [200, 200]
    history = [applied(plan[0], balances, 1), applied(transfer("x9", 1, 0, 70), balances, 2)]
    result = audit([200, 200], history, balances, plan)
    assert result["unplanned_ops"] == ["x9"]
    assert result["units_created"] == 70
    assert result["applied_once"] == 1 and result["lost_ops"] == []
    assert result["drift"] == 0
    assert result["violated"] is True


def test_audit_treats_a_planned_id_with_other_amounts_as_unplanned_and_the_plan_as_lost():
    plan = [transfer("t0", 0, 1, 30)]
    balances = [200, 200]
    history = [applied(transfer("t0", 0, 1, 40), balances, 1)]
    result = audit([200, 200], history, balances, plan)
    assert result["unplanned_ops"] == ["t0"] and result["units_created"] == 40
    assert result["lost_ops"] == ["t0"] and result["units_missing"] == 30
    assert result["violated"] is True


def test_audit_catches_balances_the_applied_operations_cannot_explain():
    # The total is right and the history is clean, but 5 units moved from account 0 to
    # account 1 with no operation: only the account-by-account check sees it.
    initial = [200] * 4
    history, final = serial_transfers(initial)
    tampered = final[:]
    tampered[0] -= 5
    tampered[1] += 5
    result = audit(initial, history, tampered, plan_of(history, guard=True))
    assert result["drift"] == 0 and result["lost_updates"] == 0
    assert result["lost_ops"] == result["duplicated_ops"] == result["unplanned_ops"] == []
    assert result["inconsistent_accounts"] == [0, 1]
    assert result["violated"] is True


def test_closed_form_comes_from_the_plan():
    deposits = [{"op": f"d{k}", "actor": "a", "deltas": [[0, 1]], "guard": False} for k in range(3)]
    withdrawal = {"op": "w0", "actor": "a", "deltas": [[0, -1]], "guard": False}
    assert closed_form([50], deposits + [withdrawal]) == ([52], 52)
    # guarded transfers: no per-account closed form (refusals depend on the schedule),
    # but the total is fixed
    assert closed_form([10, 10], [transfer("t0", 0, 1, 5)]) == (None, 20)


def test_audit_checks_the_seed_balance_against_its_closed_form():
    # d1 never ran: the replay is clean and the balance agrees with the applied ops, but
    # balance + deposits - withdrawals from the plan is 51, not 50.
    plan = [{"op": name, "actor": "a", "deltas": [[0, d]], "guard": False}
            for name, d in (("d0", 1), ("w0", -1), ("d1", 1))]
    balances = [50]
    history = [applied(plan[0], balances, 1), applied(plan[1], balances, 2)]
    result = audit([50], history, balances, plan)
    assert result["closed_form"] == [51] and result["closed_total"] == 51
    assert result["off_closed_form"] is True
    assert result["lost_ops"] == ["d1"] and result["units_missing"] == 1
    assert result["drift"] == 0 and result["inconsistent_accounts"] == []
    assert result["violated"] is True
    complete = history + [applied(plan[2], balances, 3)]
    assert audit([50], complete, balances, plan)["violated"] is False


# --- the verdict of a whole run, built by hand (no workers) ----------------------------------

def verdict_of(bank: Bank, per_trial) -> tuple:
    """Judge hand-made trials: ``per_trial(trial, plan_ops)`` returns (history, final)."""
    trials = []
    for trial in range(bank.p["trials"]):
        ops = [o for actor in bank.plan(2, trial) for o in actor]
        history, final = per_trial(trial, ops)
        trials.append({"plan": ops, "history": history, "final": final, "errors": []})
    v = bank.check(Execution([], units=0, data={"trials": trials, "actors": 2}), None)
    return v, v.details


def serial(bank: Bank, ops, skip=(), twice=()):
    """A correct serial run of ``ops``, leaving out ``skip`` and repeating ``twice``."""
    balances, history = bank.initial(), []
    for o in ops:
        for _ in range(0 if o["op"] in skip else 2 if o["op"] in twice else 1):
            history.append(applied(o, balances, len(history)))
    return history, balances


def test_a_run_that_did_nothing_is_caught_and_does_not_agree_with_a_complete_one():
    params = {"mode": "transfers", "trials": 2, "ops": 10}
    done, d_done = verdict_of(Bank(params), lambda trial, ops: serial(Bank(params), ops))
    idle, d_idle = verdict_of(Bank(params), lambda trial, ops: ([], Bank(params).initial()))
    assert done.ok and d_done["applied_once"] == d_done["planned"] == 2 * 2 * 10
    assert idle.ok is False
    assert d_idle["lost_ops"] == 40 and d_idle["applied_once"] == 0
    assert d_idle["money_created"] == d_idle["money_lost"] == 0  # the money alone looks fine
    assert idle.answer != done.answer


def test_the_verdict_names_lost_and_repeated_transfers_and_their_money():
    params = {"mode": "transfers", "trials": 1, "ops": 10, "balance": 10_000}  # no refusals
    ops = [o for actor in Bank(params).plan(2, 0) for o in actor]
    lost, repeated = ops[2:5], ops[7:9]
    v, d = verdict_of(Bank(params), lambda trial, plan: serial(
        Bank(params), plan, skip={o["op"] for o in lost}, twice={o["op"] for o in repeated}))
    missing = sum(o["deltas"][1][1] for o in lost)
    created = sum(o["deltas"][1][1] for o in repeated)
    assert d["lost_ops"] == 3 and d["units_missing"] == missing
    assert d["duplicated_ops"] == 2 and d["units_created"] == created
    assert d["lost_op_ids"] == [o["op"] for o in lost]
    assert d["duplicated_op_ids"] == [o["op"] for o in repeated]
    assert (f"3 transfers lost: {missing} units missing; "
            f"2 applied twice or more: {created} units created") in v.actual
    assert v.ok is False


def test_the_seed_verdict_expects_the_closed_form_of_its_plan():
    params = {"trials": 1, "steps": 7, "balance": 300}
    v, d = verdict_of(Bank(params), lambda trial, ops: serial(Bank(params), ops))
    assert v.ok and v.expected.startswith("balance 300 ")
    assert d["planned"] == d["applied_once"] == 14
    v, d = verdict_of(Bank(params), lambda trial, ops: serial(Bank(params), ops, skip={"0.d3"}))
    assert v.ok is False
    assert d["error_count"] == 1  # the seed's figure: the balance is not 300
    assert "1 operation lost: 1 unit missing" in v.actual


# --- --history through the CLI ---------------------------------------------------------

@pytest.mark.parametrize("mode,tier,strategy", [("seed", "processes", "lock"),
                                                ("transfers", "threads", "queue")])
def test_cli_history_writes_every_operation(tmp_path, mode, tier, strategy):
    path = tmp_path / "history.jsonl"
    proc = cli("run", "bank", "-b", tier, "-n", "2", "--mode", mode, "--strategy", strategy,
               "--delay", "0.002", "--trials", "2", "--ops", "20", "--history", str(path))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    expected_ops = 2 * (200 if mode == "seed" else 2 * 20)  # trials x operations per trial
    assert len(lines) == expected_ops
    assert len({(line["trial"], line["op"]) for line in lines}) == expected_ops  # unique ids
    for line in lines:
        for key in ("op", "accounts", "amounts", "tier", "strategy", "result"):
            assert key in line, (key, line)
        assert line["tier"] == tier
        assert line["strategy"] == strategy
        assert line["result"] in ("ok", "refused")
        assert len(line["accounts"]) == len(line["amounts"])
        if mode == "seed":
            assert line["accounts"] == [0] and line["amounts"] in ([1], [-1])
            assert line["result"] == "ok"
        else:
            assert len(set(line["accounts"])) == 2 and sum(line["amounts"]) == 0
    assert str(expected_ops) in proc.stdout  # "history: N operations written to FILE"
