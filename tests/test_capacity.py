"""CPU capacity: what the cores deliver with all of them busy, measured by real processes.

No figure is asserted against a wall-clock threshold: the machines here are noisy (that is
why the measure exists). What must hold is its arithmetic and its hygiene."""
from __future__ import annotations

import psutil
import pytest

from taskrace.capacity import describe, figures, measure_capacity, span, usable_cpus


def test_measure_reports_every_process_and_the_rate_sum():
    n = max(2, usable_cpus())
    c = measure_capacity(n, iterations=200_000)
    assert c["cpus"] == n
    assert len(c["solo_s"]) == 2 and len(c["together_s"]) == n  # A B A: solo, all together, solo
    assert all(t > 0 for t in c["solo_s"] + c["together_s"])
    best = min(c["solo_s"])
    assert c["capacity"] == pytest.approx(sum(best / t for t in c["together_s"]), abs=0.02)
    # Each together-process did the solo work; none can beat the fastest solo by orders of magnitude.
    assert 0 < c["capacity"] <= 3 * n


def test_measure_leaves_no_child_process():
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    measure_capacity(2, iterations=100_000)
    after = {p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}
    assert after <= before


def test_one_cpu_is_capacity_one_by_construction():
    c = measure_capacity(1, iterations=100_000)
    assert c["cpus"] == 1 and len(c["together_s"]) == 1
    assert c["capacity"] == pytest.approx(min(c["solo_s"]) / c["together_s"][0], abs=0.01)


def _cap(before: float, after: float | None = None, cpus: int = 2) -> dict:
    out = {"before": {"cpus": cpus, "capacity": before}}
    if after is not None:
        out["after"] = {"cpus": cpus, "capacity": after}
    return out


def test_describe_gives_the_span_and_warns_only_below_the_core_count():
    low = describe(_cap(1.1, 1.6))
    assert "1.10–1.60x" in low and "before and after" in low and "cannot pass" in low
    full = describe(_cap(1.95, 1.97))
    assert "1.95–1.97x" in full and "cannot pass" not in full
    assert "1.90x" in describe(_cap(1.9)) and "measured before the runs" in describe(_cap(1.9))
    assert describe({}) == ""


def test_span_and_figures_read_a_results_document():
    doc = {"environment": {"cpu_capacity": _cap(1.7, 1.2)}}
    assert figures(doc) == [1.7, 1.2] and span(figures(doc)) == "1.20–1.70"
    assert figures({"environment": {}}) == [] and span([1.5]) == "1.50"
