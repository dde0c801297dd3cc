"""CPU capacity: what the cores deliver with all of them busy, measured by real processes.

No figure is asserted against a wall-clock threshold: the machines here are noisy (that is
why the measure exists). What must hold is its arithmetic and its hygiene."""
from __future__ import annotations

import statistics

import psutil

from taskrace.measuring.capacity import describe, figures, measure_capacity, span, usable_cpus


def test_measure_reports_every_round_and_the_ratio_of_medians():
    n = max(2, usable_cpus())
    c = measure_capacity(n, iterations=200_000, rounds=3)
    assert c["cpus"] == n and c["rounds"] == 3
    assert len(c["solo_s"]) == 3 and len(c["together_s"]) == 3
    assert all(len(t) == n for t in c["together_s"])  # every CPU's process reported, each round
    busy = [x for t in c["together_s"] for x in t]
    assert all(x > 0 for x in c["solo_s"] + busy)
    # Recomputed from the very times it was computed from (stored unrounded), by the same
    # arithmetic: equal, not merely close, whatever the loop's timings were.
    assert c["ratio"] == round(n * statistics.median(c["solo_s"]) / statistics.median(busy), 2)
    # Each busy process did the solo work; none can beat it by orders of magnitude.
    assert 0 < c["capacity"] <= 3 * n


def test_measure_leaves_no_child_process():
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    measure_capacity(2, iterations=100_000, rounds=2)
    after = {p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}
    assert after <= before


def test_one_cpu_is_capacity_one_by_construction():
    c = measure_capacity(1, iterations=100_000, rounds=1)
    assert c["cpus"] == 1 and len(c["together_s"][0]) == 1
    assert c["ratio"] == round(1 * c["solo_s"][0] / c["together_s"][0][0], 2)


def _cap(before: float, after: float | None = None, cpus: int = 2) -> dict:
    out = {"before": {"cpus": cpus, "capacity": before}}
    if after is not None:
        out["after"] = {"cpus": cpus, "capacity": after}
    return out


def test_describe_gives_the_span_and_warns_only_below_the_core_count():
    low = describe(_cap(1.1, 1.6))
    assert "1.10–1.60x" in low and "before and after" in low and "expect no CPU-bound speedup above" in low
    full = describe(_cap(1.95, 1.97))
    assert "1.95–1.97x" in full and "expect no" not in full
    assert "1.90x" in describe(_cap(1.9)) and "measured before the runs" in describe(_cap(1.9))
    assert describe({}) == ""


def test_span_and_figures_read_a_results_document():
    doc = {"environment": {"cpu_capacity": _cap(1.7, 1.2)}}
    assert figures(doc) == [1.7, 1.2] and span(figures(doc)) == "1.20–1.70"
    assert figures({"environment": {}}) == [] and span([1.5]) == "1.50"
