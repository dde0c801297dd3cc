"""The bank: the seed's race shows under `none`, never under a safe strategy (lock, atomic,
optimistic, queue), in both modes; the pure `audit` checker catches hand-made broken
histories; `--history` exports every operation. No timing assertions: only counts and verdicts.
"""
from __future__ import annotations

import json
import random

import pytest

try:
    from conftest import CONCURRENT_TIERS, cli, run
except ImportError:  # tests/ imported as a package
    from tests.conftest import CONCURRENT_TIERS, cli, run

from scenarios.bank import UNSAFE, audit
from workers import get_tier

FAST = {"delay": 0.002, "trials": 10}
# Every safe strategy each concurrent tier offers (a strategy or tier added later is
# covered without editing this file).
SAFE_CASES = [(tier, strategy) for tier in CONCURRENT_TIERS
              for strategy in get_tier(tier).bank_strategies if strategy not in UNSAFE]


@pytest.mark.parametrize("tier", CONCURRENT_TIERS)
def test_tier_offers_the_issue_strategies(tier):
    assert {"none", "lock", "atomic", "queue"} <= set(get_tier(tier).bank_strategies)


def _details(record: dict) -> dict:
    return record["verdict"]["details"]


# --- seed mode: +1 / -1 on one balance of 200 ---------------------------------------------

@pytest.mark.parametrize("tier", CONCURRENT_TIERS)
def test_none_loses_updates_in_nine_of_ten_trials(tier):
    record = run("bank", tier, 2, strategy="none", **FAST)
    d = _details(record)
    assert d["trials"] == 10
    assert d["violating_trials"] >= 9, d["lost_updates_per_trial"]
    assert d["lost_updates"] > 0
    assert record["verdict"]["ok"] is False
    assert record["verdict"]["unsafe"] is True  # a lesson, not a crash
    assert not d["errors"], d["errors"]


def test_none_with_the_seed_defaults_on_processes():
    # The issue's claim at the seed's pace: 10 trials, default delay and race window.
    record = run("bank", "processes", 2, strategy="none")
    d = _details(record)
    assert record["params"]["trials"] == 10
    assert d["violating_trials"] >= 9, d["lost_updates_per_trial"]
    assert d["error_count"] >= 1  # the seed's figure: trials whose balance is not 200
    assert not d["errors"], d["errors"]


@pytest.mark.parametrize("tier,strategy", SAFE_CASES)
def test_safe_strategies_never_violate(tier, strategy):
    record = run("bank", tier, 2, strategy=strategy, **FAST)
    d = _details(record)
    assert record["verdict"]["ok"], record["verdict"]
    assert d["trials"] == 10
    assert d["violating_trials"] == 0
    assert d["lost_updates"] == 0
    assert d["drift_per_trial"] == [0] * 10
    assert d["error_count"] == 0
    assert record["verdict"]["unsafe"] is False
    assert not d["errors"], d["errors"]
    if strategy == "optimistic":
        assert d["retries"] > 0  # the contention was real: commits conflicted and retried


# --- transfers mode: random transfers between 8 accounts --------------------------------

@pytest.mark.parametrize("tier", CONCURRENT_TIERS)
def test_transfers_none_violates(tier):
    record = run("bank", tier, 2, strategy="none", mode="transfers", **FAST)
    d = _details(record)
    assert d["violating_trials"] >= 9, d["drift_per_trial"]
    assert d["lost_updates"] > 0
    assert d["first_violation"] is not None
    assert d["worst_violation"] is not None
    assert d["last_violation"] is not None
    assert record["verdict"]["ok"] is False


@pytest.mark.parametrize("tier,strategy", SAFE_CASES)
def test_transfers_safe_strategies_conserve_and_stay_positive(tier, strategy):
    record = run("bank", tier, 2, strategy=strategy, mode="transfers", **FAST)
    d = _details(record)
    assert record["verdict"]["ok"], record["verdict"]
    assert d["violating_trials"] == 0
    assert d["lost_updates"] == 0
    assert d["negative_balances"] == 0
    assert d["money_created"] == 0 and d["money_lost"] == 0
    assert d["drift_per_trial"] == [0] * 10
    assert d["first_violation"] is None
    assert not d["errors"], d["errors"]


# --- the pure checker on hand-made histories ----------------------------------------------

def op(name, deltas, read, wrote, t, ok=True):
    return {"op": name, "actor": "a", "deltas": deltas, "read": read, "wrote": wrote,
            "ok": ok, "t": t}


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
    result = audit([200], history, [201])
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
    result = audit(initial, shuffled, final)
    assert result["violated"] is False, result
    assert result["expected_total"] == sum(initial) == result["final_total"]


def test_audit_catches_a_lost_update():
    # Two operations read the same balance; the second write erases the first.
    history = [op("d0", [[0, 1]], [200], [201], 1), op("w0", [[0, -1]], [200], [199], 2)]
    result = audit([200], history, [199])
    assert result["violated"] is True
    assert result["lost_updates"] == 1
    assert result["first"]["op"] == "w0"
    assert result["first"]["stale_accounts"] == [0]
    assert result["drift"] == -1


def test_audit_catches_a_lost_update_whose_drift_cancels_out():
    # Two lost updates of opposite sign: the final balance is right, the history is not.
    history = [op("d0", [[0, 1]], [200], [201], 1), op("w0", [[0, -1]], [200], [199], 2),
               op("w1", [[0, -1]], [199], [198], 3), op("d1", [[0, 1]], [199], [200], 4)]
    result = audit([200], history, [200])
    assert result["drift"] == 0
    assert result["lost_updates"] == 2
    assert result["violated"] is True


def test_audit_catches_money_created():
    # Reads are consistent, but a transfer credits more than it debits.
    initial = [200, 200]
    history = [op("t0", [[0, -50], [1, 50]], [200, 200], [150, 260], 1)]
    result = audit(initial, history, [150, 260])
    assert result["violated"] is True
    assert result["drift"] == 10
    assert result["final_total"] == result["expected_total"] + 10


def test_audit_catches_final_balances_that_disagree_with_the_history():
    history, final = serial_transfers([200] * 4)
    tampered = final[:]
    tampered[0] += 5
    result = audit([200] * 4, history, tampered)
    assert result["violated"] is True
    assert result["drift"] == 5


def test_audit_catches_a_negative_balance_write():
    # An unguarded transfer overdraws account 0, a later one brings it back: the final
    # state looks fine, the history does not.
    history = [op("t0", [[0, -250], [1, 250]], [200, 200], [-50, 450], 1),
               op("t1", [[1, -100], [0, 100]], [450, -50], [350, 50], 2)]
    result = audit([200, 200], history, [50, 350])
    assert result["violated"] is True
    assert result["negative_writes"] == 1
    assert result["first"]["negative_accounts"] == [0]
    assert result["negative_final"] == []
    assert result["drift"] == 0


def test_audit_catches_a_negative_final_balance():
    result = audit([200, 200], [], [-1, 401])
    assert result["violated"] is True
    assert result["negative_final"] == [0]


def test_audit_ignores_refused_operations():
    history = [op("t0", [[0, -500], [1, 500]], [200, 200], None, 1, ok=False),
               op("t1", [[0, -10], [1, 10]], [200, 200], [190, 210], 2)]
    result = audit([200, 200], history, [190, 210])
    assert result["violated"] is False, result


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
