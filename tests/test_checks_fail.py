"""The checks can fail: every safety net is fed a wrong result and must catch it.

* ``= seq``: a tier whose answer differs from sequential's makes the column say no and
  ``compare`` exit 1, even when the scenario's own checker missed it;
* warm-up runs: their timings are discarded, their verdicts are not;
* the pipeline's back-pressure: whether each tier bounds its channel is fixed here, in
  the test, not taken from the tier's own ``channel_bounded`` flag.

Wrong answers are made by wrapping a scenario's real ``check`` or ``execute`` in this
process and running the real harness (``taskrace.cli.main`` -> ``taskrace.measuring.sweep``) on real
tiers: what a user writing a scenario with a weak checker, or a tier with a bug, would hit.
"""
from __future__ import annotations

import json
import re
import signal

import pytest

try:
    from celery_fixtures import require_redis_binary
    from conftest import LOCAL_TIERS, run
except ImportError:  # tests/ imported as a package
    from tests.celery_fixtures import require_redis_binary
    from tests.conftest import LOCAL_TIERS, run

from scenarios.power import PowerIO
from taskrace import cli
from workers import TIERS, available_tiers, get_tier
from workers.sequential import SequentialTier


@pytest.fixture
def compare(monkeypatch, tmp_path, capsys):
    """``taskrace compare ARGS`` in this process: (exit code, stdout, the JSON document)."""
    monkeypatch.setenv("COLUMNS", "200")  # a wide table: no cell cut
    # skip the CPU capacity measure: not under test
    monkeypatch.setattr("taskrace.measuring.matrix.usable_cpus", lambda: 1)
    sigterm = signal.getsignal(signal.SIGTERM)

    def go(*args: str):
        out = tmp_path / "compare.json"
        capsys.readouterr()
        code = cli.main(["compare", "--scenario", "power-io", "--set", "power-io.sleep=0", "--no-progress",
                         "--seed", "3", "--json", str(out), *args])
        printed = capsys.readouterr()
        doc = json.loads(out.read_text()) if out.exists() else None
        out.unlink(missing_ok=True)
        return code, printed.out + printed.err, doc

    yield go
    signal.signal(signal.SIGTERM, sigterm)


def _record(doc: dict, backend: str) -> dict:
    return next(r for r in doc["runs"] if r["backend"] == backend)


def _row(printed: str, backend: str) -> str:
    """The table's row for ``backend``: its first cell is the scenario, then the backend."""
    rows = [line for line in printed.splitlines() if re.match(rf"^[\s│|]*power-io[\s│|]+{backend}\b", line)]
    assert len(rows) == 1, printed
    return rows[0]


def _cell(row: str, word: str) -> bool:
    return re.search(rf"(^|[\s│|,]){word}($|[\s│|,])", row) is not None


# --- = seq ----------------------------------------------------------------------------------------

def _weak_checker_on(monkeypatch, backend: str) -> None:
    """The checker passes, but the answer it hands on differs on ``backend``: a scenario
    whose checker misses a wrong result. Only the comparison with sequential can see it."""
    original = PowerIO.check

    def check(self, execution, tier):
        verdict = original(self, execution, tier)
        if tier.name == backend:
            verdict.answer = [*verdict.answer, "not what sequential computed"]
        return verdict

    monkeypatch.setattr(PowerIO, "check", check)


def test_compare_agrees_and_exits_0_when_nothing_is_wrong(compare):
    code, printed, doc = compare("--backend", "threads", "-n", "2", "--repeat", "2", "--warmup", "1")
    assert code == cli.EXIT_OK, printed
    assert _record(doc, "threads")["agrees_with_sequential"] is True
    assert _cell(_row(printed, "threads"), "yes") and "disagrees" not in printed


def test_a_different_answer_makes_seq_say_no_and_compare_exit_1(compare, monkeypatch):
    _weak_checker_on(monkeypatch, "threads")
    code, printed, doc = compare("--backend", "threads", "-n", "2", "--repeat", "2", "--warmup", "0")
    threads, seq = _record(doc, "threads"), _record(doc, "sequential")
    assert threads["verdict"]["ok"] is True  # the checker was fooled: exit 1 can only come from = seq
    assert threads["agrees_with_sequential"] is False and seq["agrees_with_sequential"] is True
    assert threads["answer_digest"] != seq["answer_digest"]
    assert _cell(_row(printed, "threads"), "no"), printed
    assert "power-io on threads -n 2 disagrees with sequential" in printed
    assert code == cli.EXIT_FAILED


def test_a_wrong_task_result_fails_both_the_checker_and_seq(compare, monkeypatch):
    """A task that computes a wrong power on one tier only (here: when run off the main
    thread, i.e. on threads): the checker says FAIL and = seq says no."""
    import threading

    import scenarios.power as power

    right = power.calculate_raise_to

    def wrong_off_main_thread(x, y, sleep_s=0.0, checksum=False):
        result = right(x, y, sleep_s, checksum)
        return result if threading.current_thread() is threading.main_thread() else [v + 1 for v in result]

    monkeypatch.setattr(power, "calculate_raise_to", wrong_off_main_thread)
    code, printed, doc = compare("--backend", "threads", "-n", "2", "--repeat", "1", "--warmup", "0")
    threads = _record(doc, "threads")
    assert threads["verdict"]["ok"] is False and threads["agrees_with_sequential"] is False
    assert _record(doc, "sequential")["verdict"]["ok"] is True
    assert _cell(_row(printed, "threads"), "no") and "FAIL" in _row(printed, "threads")
    assert code == cli.EXIT_FAILED


# --- warm-ups -----------------------------------------------------------------------------------

def _wrong_first_run_on(monkeypatch, backend: str) -> None:
    """The first run of power-io on ``backend`` returns a wrong result. A compare runs all of
    a tier's warm-ups before its measured runs, so with --warmup 1 that run is the warm-up."""
    original = PowerIO.execute
    calls = {"n": 0}

    def execute(self, tier):
        execution = original(self, tier)
        if tier.name == backend:
            calls["n"] += 1
            if calls["n"] == 1:
                execution.outcomes[0].value = [-1]
        return execution

    monkeypatch.setattr(PowerIO, "execute", execute)


def test_a_wrong_answer_in_a_warm_up_fails_the_point(compare, monkeypatch):
    _wrong_first_run_on(monkeypatch, "threads")
    code, printed, doc = compare("--backend", "threads", "-n", "2", "--repeat", "2", "--warmup", "1")
    threads = _record(doc, "threads")
    assert [s["verdict"]["ok"] for s in threads["repeats"]] == [True, True]  # the measured runs passed
    assert [w["ok"] for w in threads["warmup_runs"]] == [False]  # the warm-up did not
    v = threads["verdict"]
    assert v["ok"] is False and v["details"]["failed_in"] == "warm-up"
    assert "warm-up run 1 of 1" in v["details"]["note"] and "measured runs passed" in v["details"]["note"]
    assert threads["agrees_with_sequential"] is False
    assert "FAIL" in _row(printed, "threads")
    assert "power-io on threads -n 2: failed in warm-up run 1 of 1" in printed
    assert code == cli.EXIT_FAILED


def test_a_wrong_answer_in_a_measured_run_keeps_its_own_verdict(compare, monkeypatch):
    """The control: with no warm-up the same wrong first run is a measured run, and the
    point fails without any warm-up note."""
    _wrong_first_run_on(monkeypatch, "threads")
    code, printed, doc = compare("--backend", "threads", "-n", "2", "--repeat", "2", "--warmup", "0")
    threads = _record(doc, "threads")
    assert threads["warmup_runs"] == [] and "failed_in" not in threads["verdict"]["details"]
    assert threads["verdict"]["ok"] is False and code == cli.EXIT_FAILED


# --- pipeline back-pressure -------------------------------------------------------------------------

# Whether each tier's channel really blocks a producer at its capacity, decided here and
# not read from the tier's own flag: sequential runs the producer alone before the
# consumers, so it cannot bound the channel (it would block forever); every concurrent
# tier must. A new tier has to be added here.
BOUND_ENFORCED = {"sequential": False, "threads": True, "asyncio": True, "processes": True, "interpreters": True,
                  "celery": True}
ITEMS, CAPACITY = 60, 4


def test_every_tier_is_in_the_table():
    assert set(BOUND_ENFORCED) == set(TIERS)


# A tier that cannot load on this Python (interpreters before 3.14) is checked where it
# runs: tests/test_interpreters_tier.py, in its image.
@pytest.mark.parametrize("tier", [t for t in BOUND_ENFORCED if t in available_tiers()])
def test_pipeline_bound_per_tier(tier):
    if tier not in LOCAL_TIERS:
        require_redis_binary()  # celery: skips locally without a redis-server, fails in CI
    enforced = BOUND_ENFORCED[tier]
    assert get_tier(tier).channel_bounded is enforced  # the flag may not switch the check off
    # Consumers take 10 ms per item, the producer none: unbounded, the channel would fill
    # far beyond CAPACITY; bounded, the producer blocks at CAPACITY.
    record = run("pipeline", tier, workers=2, items=ITEMS, capacity=CAPACITY, work=0.01)
    v = record["verdict"]
    assert v["ok"], v
    assert v["details"]["capacity_enforced"] is enforced
    depth = v["details"]["max_depth"]
    if enforced:
        assert 1 <= depth <= CAPACITY, depth  # >= 1: the depth was really read
    else:
        assert depth == ITEMS  # the producer ran alone: everything was queued at once


def test_a_tier_claiming_a_bound_it_does_not_keep_fails_the_check(monkeypatch):
    """Sequential's channel is unbounded; if it claimed otherwise, the checker must see
    the depth pass the capacity and fail the run."""
    monkeypatch.setattr(SequentialTier, "channel_bounded", True)
    v = run("pipeline", "sequential", workers=1, items=ITEMS, capacity=CAPACITY)["verdict"]
    assert v["details"]["max_depth"] == ITEMS
    assert v["ok"] is False
