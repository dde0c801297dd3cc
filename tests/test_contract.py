"""The contract: every (scenario, tier) pair gives sequential's answer, and its checker agrees.

Written once, backend-agnostic (concurrent.futures' style): every local tier of the registry
(conftest's LOCAL_TIERS, derived from workers.TIERS) gets every test here. Sizes are small
so each run takes well under a second.
"""
from __future__ import annotations

import functools

import pytest

try:
    from conftest import LOCAL_TIERS, run
except ImportError:  # tests/ imported as a package
    from tests.conftest import LOCAL_TIERS, run

from scenarios import SCENARIOS

# Small, fast parameters for every scenario (the bank uses a safe strategy: its answer,
# the final balance of each trial, is then deterministic).
CASES = {
    "power-io": {"sleep": 0.05},
    "power-cpu": {"tasks": 4, "size": 300, "exponent": 40},
    "globals": {"tasks": 3},
    "bank": {"strategy": "lock", "delay": 0.002, "trials": 2},
    "pipeline": {},
    "mapreduce": {"size": 20_000, "chunksize": 1_000},
}
WORKERS = 2

# (tier, tier options): every local tier with its defaults, plus processes under spawn,
# where nothing is inherited and every task function must import by name.
VARIANTS = [(tier, {}) for tier in LOCAL_TIERS] + [("processes", {"start_method": "spawn"})]


def _variant_id(variant) -> str:
    tier, options = variant
    return "-".join([tier, *map(str, options.values())])


def test_cases_cover_every_scenario():
    # A new scenario must get contract coverage too.
    assert set(CASES) == set(SCENARIOS)


@functools.lru_cache(maxsize=None)
def reference(scenario: str) -> dict:
    """The sequential record for a scenario, computed once per session."""
    return run(scenario, "sequential", 1, **CASES[scenario])


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
@pytest.mark.parametrize("scenario", list(CASES))
def test_tier_agrees_with_sequential(scenario, variant):
    tier, options = variant
    ref = reference(scenario)
    assert ref["verdict"]["ok"], ref["verdict"]

    record = run(scenario, tier, WORKERS, tier_options=options, **CASES[scenario])

    assert record["scenario"] == scenario
    assert record["backend"] == tier
    assert record["verdict"]["ok"], record["verdict"]
    assert not record["verdict"]["details"].get("errors"), record["verdict"]["details"]["errors"]
    assert record["answer_digest"] == ref["answer_digest"]
    assert record["tasks"] == ref["tasks"]
    if options.get("start_method"):
        assert record["tier"]["start_method"] == options["start_method"]


@pytest.mark.parametrize("tier", LOCAL_TIERS)
def test_tier_with_one_worker_agrees(tier):
    # -n 1 is a legal, degenerate configuration; it must not change the answer.
    ref = reference("mapreduce")
    record = run("mapreduce", tier, 1, **CASES["mapreduce"])
    assert record["verdict"]["ok"], record["verdict"]
    assert record["answer_digest"] == ref["answer_digest"]
    assert record["workers"] == 1


def test_digest_tells_answers_apart():
    # The contract's comparison is only meaningful if different answers digest differently.
    a = run("mapreduce", "sequential", 1, size=20_000, chunksize=1_000)
    b = run("mapreduce", "sequential", 1, size=20_001, chunksize=1_000)
    assert a["answer_digest"] != b["answer_digest"]
