"""The asyncio tier: one event loop in the caller's thread, switching only at ``await``.

The contract, bank, CLI and pipeline tests already run on it (conftest derives the local
tiers from the registry). These check what is particular to an event loop, by structure
and counts rather than by time: every task runs on the caller's own thread; waits overlap
(every task starts before the first one finishes); computing does not (each task starts
after the previous one finished); the bank's race needs an await between read and write;
a full queue suspends the producer at exactly its capacity; Ctrl-C leaves no Task behind.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time

import pytest

try:
    from conftest import CONCURRENT_TIERS, run
    from test_cleanup import _assert_clean_interrupt, _interrupt
except ImportError:  # tests/ imported as a package
    from tests.conftest import CONCURRENT_TIERS, run
    from tests.test_cleanup import _assert_clean_interrupt, _interrupt

from scenarios import get_scenario
from scenarios.base import coroutine_twin, twin_of
from workers import get_tier
from workers.base import Actor


def here() -> str:
    """This thread's executor id, as ``workers.base.where`` writes it into an Outcome."""
    return f"{os.getpid()}/{threading.current_thread().name}"


def execute(scenario: str, workers: int, **params):
    """Run a scenario on a started asyncio tier and return (outcomes, verdict)."""
    sc = get_scenario(scenario)(params)
    with get_tier("asyncio")(workers) as tier:
        execution = sc.execute(tier)
        return execution.outcomes, sc.check(execution, tier)


def test_asyncio_gets_the_shared_tests():
    # The matrix comes from the registry: nothing lists asyncio by hand.
    assert "asyncio" in CONCURRENT_TIERS


# --- one thread: waits overlap, computing does not ------------------------------------------

def test_power_io_waits_overlap_on_the_callers_thread():
    outcomes, verdict = execute("power-io", 4, tasks=4, sleep=0.05)
    assert verdict.ok, verdict
    assert {o.worker for o in outcomes} == {here()}  # no pool: the loop runs in this thread
    # Every task reached its await before any timer fired: all four waits overlapped.
    assert max(o.started for o in outcomes) < min(o.finished for o in outcomes)


def test_inside_a_running_loop_its_loop_gets_a_thread_of_its_own():
    """A Jupyter kernel's cell runs while the kernel's loop runs in its thread, where a
    second loop cannot: the tier's one loop runs in one thread of its own, the same
    overlap, and that thread is gone after stop()."""
    async def cell():
        return execute("power-io", 4, tasks=4, sleep=0.05)

    outcomes, verdict = asyncio.run(cell())
    assert verdict.ok, verdict
    assert {o.worker for o in outcomes} == {f"{os.getpid()}/taskrace-asyncio"}
    assert max(o.started for o in outcomes) < min(o.finished for o in outcomes)
    assert not [t for t in threading.enumerate() if t.name.startswith("taskrace-asyncio")]


def test_power_io_limits_tasks_in_flight_to_n():
    # -n bounds concurrency as a pool of n would: 4 tasks at -n 2 run as two waves.
    outcomes, _ = execute("power-io", 2, tasks=4, sleep=0.05)
    first, second = outcomes[:2], outcomes[2:]
    assert max(o.started for o in first) < min(o.finished for o in first)
    assert min(o.started for o in second) >= min(o.finished for o in first)


def test_power_cpu_holds_the_loop_one_task_at_a_time():
    # -n 4 lets all four tasks in, but a coroutine that never awaits keeps the loop.
    outcomes, verdict = execute("power-cpu", 4, tasks=4, size=300, exponent=40)
    assert verdict.ok, verdict
    assert {o.worker for o in outcomes} == {here()}
    for before, after in zip(outcomes, outcomes[1:]):
        assert after.started >= before.finished, "two computing tasks overlapped on one loop"


def test_mapreduce_chunks_run_inline_one_after_another():
    from scenarios.mapreduce import sum_of_powers

    assert twin_of(sum_of_powers) is None  # plain computing: no twin, run as it is
    outcomes, verdict = execute("mapreduce", 2, size=20_000, chunksize=2_000)
    assert verdict.ok, verdict
    assert len(outcomes) == 10
    for before, after in zip(outcomes, outcomes[1:]):
        assert after.started >= before.finished
    assert all(o.cpu_s is not None for o in outcomes)  # inline: its thread time is its own


def test_power_cpu_uses_one_core_and_no_extra_thread():
    """From the harness's sampler: one thread's worth of CPU (it cannot be more than one
    core plus the sampler's own few percent), and no thread beyond sequential's."""
    params = dict(tasks=4, size=2000, exponent=2000)
    seq = run("power-cpu", "sequential", 1, **params)
    loop = run("power-cpu", "asyncio", 4, **params)
    threads = run("power-cpu", "threads", 4, **params)
    assert loop["verdict"]["ok"] and loop["answer_digest"] == seq["answer_digest"]
    assert loop["metrics"]["cpu_percent"] is not None and loop["metrics"]["cpu_percent"] < 150
    assert loop["metrics"]["threads"] <= seq["metrics"]["threads"]
    assert threads["metrics"]["threads"] >= seq["metrics"]["threads"] + 4  # the contrast: a pool
    assert list(loop["nodes"].values()) == [4]  # one executor ran every task


def test_globals_are_visible():
    record = run("globals", "asyncio", 2, tasks=3)
    assert record["verdict"]["visible"] is True
    assert record["verdict"]["details"]["appended_seen_by_caller"] == 3
    assert record["verdict"]["ok"], record["verdict"]


# --- the bank: the race lives at await points ----------------------------------------------

def test_bank_none_races_only_when_it_awaits_between_read_and_write():
    common = dict(strategy="none", delay=0.002, trials=5)
    # No await between read and write: nothing can run in between, so nothing is lost,
    # however the actors' pauses interleave.
    _, atomic_by_accident = execute("bank", 2, race_window=0, **common)
    assert atomic_by_accident.details["violating_trials"] == 0
    assert atomic_by_accident.details["lost_updates"] == 0
    # The same code awaiting a 1 ms window between them loses updates.
    _, racing = execute("bank", 2, race_window=0.001, **common)
    assert racing.details["violating_trials"] >= 1
    assert racing.details["lost_updates"] > 0
    assert racing.unsafe is True and racing.ok is False


def test_bank_actors_are_tasks_on_one_thread():
    outcomes, verdict = execute("bank", 2, strategy="queue", delay=0.001, trials=2)
    assert verdict.ok, verdict
    assert len(outcomes) == 2 * 3  # two clients and the owner, per trial
    assert {o.worker for o in outcomes} == {here()}


# --- the pipeline: back-pressure with one thread ----------------------------------------------

def test_pipeline_producer_is_suspended_exactly_at_capacity():
    # The producer starts first and never waits while there is room, so it fills the
    # queue to the brim before any consumer runs, then waits at `await put`.
    outcomes, verdict = execute("pipeline", 3, items=200, capacity=7)
    assert verdict.ok, verdict
    assert verdict.details["capacity_enforced"] is True
    assert verdict.details["max_depth"] == 7
    assert sum(verdict.details["per_consumer"]) == 200


# --- twins and errors ------------------------------------------------------------------------

def _nap(seconds: float, fail: bool = False) -> str:
    if fail:
        raise ValueError("sync nap failed")
    time.sleep(seconds)
    return "sync"


@coroutine_twin(_nap)
async def _nap_async(seconds: float, fail: bool = False) -> str:
    await asyncio.sleep(seconds)
    if fail:
        raise ValueError("async nap failed")
    return "async"


def _ctrl_c() -> None:
    raise KeyboardInterrupt  # what a Ctrl-C landing inside an inline task looks like


def test_the_twin_runs_in_place_of_its_task_and_errors_stay_per_task():
    with get_tier("asyncio")(2) as tier:
        outcomes = tier.map(_nap, [(0.01,), (0.01, True), (0.01,)])
    assert [o.value for o in outcomes] == ["async", None, "async"]
    assert outcomes[1].error.startswith("ValueError: async nap failed (at test_asyncio_tier.py:")
    assert outcomes[0].error is None and outcomes[2].error is None


def test_a_task_without_a_twin_runs_inline_and_its_error_is_captured():
    with get_tier("asyncio")(2) as tier:
        outcomes = tier.map(lambda fail: _nap(0, fail), [(False,), (True,)])
    assert outcomes[0].value == "sync"
    assert outcomes[1].error.startswith("ValueError: sync nap failed")


def test_a_twin_must_be_a_coroutine_function():
    with pytest.raises(TypeError, match="async def"):
        coroutine_twin(_nap)(_nap)


def test_every_declared_twin_takes_its_tasks_arguments():
    import inspect

    from scenarios import bank, pipeline, power

    tasks = [power.calculate_raise_to, bank.client, bank.owner, pipeline.produce, pipeline.consume]
    for task in tasks:
        twin = twin_of(task)
        assert twin is not None, task.__name__
        assert list(inspect.signature(twin).parameters) == list(inspect.signature(task).parameters)


# --- Ctrl-C ------------------------------------------------------------------------------------

def test_interrupt_inside_the_loop_leaves_no_task_behind(caplog):
    """A KeyboardInterrupt raised inside one Task while two others wait: it reaches the
    caller, and stop() cancels the waiting Tasks and closes the loop, so nothing is logged
    as destroyed while pending or as an exception never retrieved."""
    tier = get_tier("asyncio")(2)
    caplog.set_level(logging.WARNING, logger="asyncio")
    with pytest.raises(KeyboardInterrupt):
        with tier:
            loop = tier._loop
            tier.run_actors([Actor("a", _nap, (60,)), Actor("b", _nap, (60,)), Actor("ctrl-c", _ctrl_c, ())])
    assert loop.is_closed()
    assert asyncio.all_tasks(loop) == set()
    gc.collect()  # pending or unretrieved Tasks complain when they are collected
    complaints = [r.getMessage() for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.WARNING]
    assert complaints == []


def test_ctrl_c_stops_an_asyncio_run():
    # Ready once the sampler runs beside main: the run has begun (no progress thread: stderr
    # is a pipe here; and no pool thread ever appears: that is the tier).
    args = ["run", "power-io", "-b", "asyncio", "-n", "2", "--sleep", "60"]
    result = _interrupt(args, lambda parent, children: parent.num_threads() >= 2)
    _assert_clean_interrupt(result, result[1])
    assert "Task" not in result[0].stderr  # no asyncio warning about a pending Task
