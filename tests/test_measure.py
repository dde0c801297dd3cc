"""The measuring layer: the psutil sampler sees the whole process tree; task_timing splits
an outcome's life into queue wait / run / return."""
from __future__ import annotations

import multiprocessing as mp
import os
import time

import psutil

from taskrace.measuring.measure import TreeSampler
from taskrace.measuring.runner import task_timing
from workers.base import Outcome


def _busy(seconds: float) -> None:
    end = time.process_time() + seconds  # CPU time, so a loaded machine still burns it
    while time.process_time() < end:
        pass


def test_sampler_sees_a_busy_child_process():
    ctx = mp.get_context("fork")
    with TreeSampler() as sampler:
        child = ctx.Process(target=_busy, args=(0.5,))
        child.start()
        child.join(30)
    assert child.exitcode == 0
    m = sampler.metrics()
    assert m["cpu_seconds"] > 0.2, m
    assert m["cpu_percent"] > 0
    assert m["os_processes"] >= 2, m
    assert m["threads"] >= 2  # this process's main thread + the sampler thread
    assert m["peak_rss_bytes"] > 0
    pids = {p["pid"] for p in m["processes_seen"]}
    assert os.getpid() in pids and child.pid in pids
    assert m["samples"] >= 3


def _children() -> tuple[set[int], set[int]]:
    """(every child pid, the live ones): zombies are listed but not counted by the sampler."""
    kids = psutil.Process().children(recursive=True)
    live = set()
    for p in kids:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                live.add(p.pid)
        except psutil.Error:
            pass
    return {p.pid for p in kids}, live


def test_sampler_counts_cpu_of_this_process():
    # Children left by earlier tests (multiprocessing's resource tracker, a process on its
    # way out) may exist, and may exit during the window: the count is bounded by those
    # alive throughout and those present at either end, not equal to a count taken before.
    all_before, live_before = _children()
    with TreeSampler() as sampler:
        _busy(0.4)
    all_after, live_after = _children()
    m = sampler.metrics()
    assert m["cpu_seconds"] > 0.2, m
    assert 1 + len(live_before & live_after) <= m["os_processes"] <= 1 + len(all_before | all_after), m
    seen = {p["pid"] for p in m["processes_seen"]}
    assert os.getpid() in seen and seen - {os.getpid()} <= all_before | all_after, m["processes_seen"]


def test_sampler_idle_tree_uses_little_cpu():
    with TreeSampler() as sampler:
        time.sleep(0.3)
    m = sampler.metrics()
    # This test process has burnt seconds of CPU before the window opened: only the
    # window's share may count (a sampler counting from process birth would fail here).
    assert m["cpu_seconds"] < 0.2, m


def test_task_timing_splits_each_outcome():
    outcomes = [
        Outcome(0, value=1, submitted=10.0, started=11.0, finished=14.0, seen=14.5, worker="1/a"),
        Outcome(1, value=2, submitted=10.0, started=12.0, finished=13.0, seen=15.0, worker="1/b"),
        Outcome(2, value=3, submitted=10.0, started=13.0, finished=15.0, seen=15.5, worker="1/a"),
    ]
    t = task_timing(outcomes)
    assert t["count"] == 3
    assert t["queue_wait"] == {"median_s": 2.0, "max_s": 3.0}
    assert t["run"] == {"median_s": 2.0, "max_s": 3.0}
    assert t["return"] == {"median_s": 0.5, "max_s": 2.0}
    assert t["workers_used"] == 2


def test_task_timing_skips_missing_timestamps():
    outcomes = [Outcome(0, error="actor process exited with code -9", submitted=1.0, seen=2.0),
                Outcome(1, value=1, submitted=1.0, started=1.5, finished=2.5, seen=3.0, worker="x")]
    t = task_timing(outcomes)
    assert t["count"] == 2
    assert t["queue_wait"] == {"median_s": 0.5, "max_s": 0.5}
    assert t["workers_used"] == 1
    assert task_timing([])["run"] is None


def test_node_metrics_count_cpu_where_tasks_ran():
    """power-cpu on 2 processes: each worker process reports the CPU its tasks burned."""
    from taskrace.measuring.runner import prepare, run_one

    scenario, tier = prepare("power-cpu", {"tasks": 8, "size": 1500, "exponent": 1500}, "processes", 2, {}, 0)
    rec = run_one(scenario, tier)
    per_node = rec["node_metrics"]
    assert sum(m["tasks"] for m in per_node.values()) == 8
    assert all(m["cpu_s"] > 0 and m["max_rss_bytes"] > 0 for m in per_node.values()), per_node
    assert {node: m["tasks"] for node, m in per_node.items()} == rec["nodes"]
    # Tasks ran in the pool's processes, never in the caller. How the 8 tasks fall on the
    # two workers is the scheduler's business (a worker that starts late may get none).
    pids = {int(node.split("/")[0]) for node in per_node}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2, per_node


def test_cpu_percent_is_not_claimed_for_a_window_shorter_than_the_clock_ticks():
    from taskrace.measuring.measure import TreeSampler

    with TreeSampler() as sampler:
        sum(range(1000))
    assert sampler.metrics()["cpu_percent"] is None
    assert sampler.metrics()["cpu_seconds"] >= 0
