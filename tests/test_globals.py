"""The seed's two globals demos: threads append to the caller's list, processes to
their own copy of the module, whatever the start method."""
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
