"""CPU capacity as a ceiling: never above the CPUs it was measured on, and labelled with
its own noise band (the rounds' spread).

The bound is checked twice: on loop times fed in (a solo round caught slow and busy rounds
caught fast, the noise that read 2.51 on two CPUs), so the path above the CPU count is
always taken, and on a real measure, whatever the machine does."""
from __future__ import annotations

import statistics

import taskrace.measuring.capacity as capacity
from taskrace.measuring.capacity import bound, describe, figures, measure_capacity, noise_band, usable_cpus


def test_a_ratio_above_the_cpus_is_bounded_and_kept_as_measured(monkeypatch):
    # Solo loops slow (0.20 s), busy ones fast (0.08 s): 2 * 0.20 / 0.08 = 5.0 "CPUs".
    times = {1: [0.20], 2: [0.08, 0.08]}
    monkeypatch.setattr(capacity, "_round", lambda ctx, n, iterations: list(times[n]))
    c = measure_capacity(2, iterations=1, rounds=3)
    assert c["ratio"] == 5.0
    assert c["capacity"] == 2.0  # the ceiling: two CPUs cannot deliver more than two
    assert c["noise"]["low"] == c["noise"]["high"] == 5.0 and c["noise"]["pct"] == 0.0
    line = describe({"before": c})
    assert "delivered 2.00x" in line and "5.00x is above 2 CPUs" in line and "5.00x one" not in line


def test_a_ratio_below_the_cpus_is_kept_and_the_band_comes_from_the_rounds(monkeypatch):
    rounds = iter([[0.10], [0.10, 0.12], [0.10, 0.16], [0.10], [0.11], [0.10, 0.20]])
    monkeypatch.setattr(capacity, "_round", lambda ctx, n, iterations: next(rounds))
    # Round order alternates: solo, together; together, solo; solo, together.
    c = measure_capacity(2, iterations=1, rounds=3)
    assert c["solo_s"] == [0.10, 0.10, 0.11] and c["together_s"] == [[0.10, 0.12], [0.10, 0.16], [0.10, 0.20]]
    ratio = 2 * statistics.median([0.10, 0.10, 0.11]) / statistics.median([0.10, 0.12, 0.10, 0.16, 0.10, 0.20])
    assert c["ratio"] == round(ratio, 2) and c["capacity"] == round(ratio, 2) < 2
    per_round = [2 * 0.10 / 0.11, 2 * 0.10 / 0.13, 2 * 0.11 / 0.15]
    assert c["noise"]["rounds"] == [round(r, 3) for r in per_round]
    assert (c["noise"]["low"], c["noise"]["high"]) == (round(min(per_round), 2), round(max(per_round), 2))
    mid = statistics.median(per_round)
    assert c["noise"]["pct"] == round(100 * (max(per_round) - min(per_round)) / 2 / mid, 1)
    band = f"noise band: single rounds read {min(per_round):.2f}–{max(per_round):.2f}x"
    assert band in describe({"before": c})


def test_a_real_measure_never_exceeds_its_cpus():
    n = max(2, usable_cpus())
    c = measure_capacity(n, iterations=100_000, rounds=3)
    busy = [x for t in c["together_s"] for x in t]
    ratio = n * statistics.median(c["solo_s"]) / statistics.median(busy)
    assert c["ratio"] == round(ratio, 2)
    assert c["capacity"] == round(min(ratio, n), 2) <= n
    assert c["noise"]["low"] <= c["noise"]["high"] and len(c["noise"]["rounds"]) == 3


def test_one_cpu_never_reads_above_one():
    c = measure_capacity(1, iterations=50_000, rounds=2)
    assert c["capacity"] == min(1.0, c["ratio"]) <= 1


def test_files_from_before_the_bound_read_bounded():
    """A results file that recorded 2.51 on two CPUs (the lab did) is shown as 2.00."""
    doc = {"environment": {"cpu_capacity": {"before": {"cpus": 2, "capacity": 2.02},
                                            "after": {"cpus": 2, "capacity": 2.51}}}}
    assert figures(doc) == [2.0, 2.0]
    assert "2.00x one CPU" in describe(doc["environment"]["cpu_capacity"])
    assert bound(1.37, 2) == 1.37 and bound(2.51, 2) == 2.0
    assert noise_band([], [], 2)["pct"] is None
