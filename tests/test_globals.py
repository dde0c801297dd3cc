"""The seed's two globals demos: threads append to the caller's list, processes to
their own copy of the module, whatever the start method. And its answer (--store shared):
a store made for sharing (multiprocessing.Array) is seen by the caller on every tier."""
from __future__ import annotations

import pytest

try:
    from conftest import START_METHODS, run
except ImportError:  # tests/ imported as a package
    from tests.conftest import START_METHODS, run

TASKS = 3


@pytest.mark.parametrize("tier", ["sequential", "threads"])
def test_globals_visible_where_memory_is_shared(tier):
    record = run("globals", tier, 2, tasks=TASKS)
    verdict = record["verdict"]
    assert verdict["visible"] is True
    assert verdict["details"]["appended_seen_by_caller"] == TASKS
    assert verdict["ok"], verdict


@pytest.mark.parametrize("start_method", START_METHODS)
def test_globals_not_visible_from_processes(start_method):
    record = run("globals", "processes", 2, tier_options={"start_method": start_method}, tasks=TASKS)
    verdict = record["verdict"]
    assert record["tier"]["start_method"] == start_method
    assert verdict["visible"] is False
    assert verdict["details"]["appended_seen_by_caller"] == 0
    assert verdict["ok"], verdict  # invisible is what the processes tier predicts


def test_globals_leaves_the_module_list_empty():
    # The scenario must not leak results from one run into the next.
    from scenarios import globals_visibility

    run("globals", "threads", 2, tasks=TASKS)
    assert globals_visibility.global_results == []


@pytest.mark.parametrize("tier,options", [("sequential", {}), ("threads", {})]
                         + [("processes", {"start_method": m}) for m in START_METHODS])
def test_shared_store_is_visible_on_every_tier(tier, options):
    record = run("globals", tier, 2, tier_options=options, tasks=TASKS, store="shared")
    verdict = record["verdict"]
    assert verdict["visible"] is True and verdict["details"]["store"] == "shared"
    assert verdict["details"]["appended_seen_by_caller"] == TASKS
    assert verdict["ok"], verdict
    assert record["answer_digest"] == run("globals", "sequential", 1, tasks=TASKS)["answer_digest"]
    if tier == "processes":  # one actor process per task, as in the seed
        assert len(record["nodes"]) == TASKS, record["nodes"]


def test_shared_store_checker_notices_a_missing_write():
    """The checker counts rows that really hold the powers: a store left unwritten is
    'not visible', which a shared store never predicts."""
    from scenarios import get_scenario
    from scenarios.base import Execution
    from workers import get_tier
    from workers.base import Outcome

    scenario = get_scenario("globals")({"tasks": 2, "store": "shared"})
    outcomes = [Outcome(k, [i**y for i in x]) for k, (x, y) in enumerate(scenario.task_args())]
    verdict = scenario.check(Execution(outcomes, 2, {"seen_in_caller": 1}), get_tier("processes")(2))
    assert verdict.ok is False and verdict.details["visible"] is False


@pytest.mark.parametrize("params", [{"store": "shared", "tasks": 65}, {"store": "shared", "size": 100_000, "tasks": 5}])
def test_shared_store_refuses_what_it_cannot_hold(params):
    from scenarios import get_scenario
    from scenarios.base import BadInput

    with pytest.raises(BadInput):
        get_scenario("globals")(params)
