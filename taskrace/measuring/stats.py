"""Small statistics for noisy timings: medians and spreads, percentiles, and the two
classic answers to "why does this stop scaling" (Karp-Flatt, Amdahl).

One shot is never reported: a point is the median of its repeats, with min-max and the
median absolute deviation (MAD) beside it, as pyperf does.
"""
from __future__ import annotations

import math
import statistics


def spread(values: list[float]) -> dict | None:
    """Median, min, max and MAD of ``values`` (None when there are none)."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    med = statistics.median(values)
    return {"median": med, "min": min(values), "max": max(values),
            "mad": statistics.median(abs(v - med) for v in values), "n": len(values)}


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation between closest ranks."""
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    rank = (len(values) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return values[low] + (values[high] - values[low]) * (rank - low)


def percentiles(values: list[float]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"p50": percentile(values, 50), "p95": percentile(values, 95),
            "p99": percentile(values, 99), "max": max(values), "n": len(values)}


def karp_flatt(speedup: float, workers: int) -> float | None:
    """The experimentally determined serial fraction e = (1/S - 1/p) / (1 - 1/p).
    Rising with p means overhead grows with workers, not just a fixed serial part."""
    if workers <= 1 or not speedup:
        return None
    return (1 / speedup - 1 / workers) / (1 - 1 / workers)


def amdahl_fit(points: list[tuple[int, float]]) -> float | None:
    """Least-squares serial fraction f of Amdahl's law S(p) = 1 / (f + (1 - f) / p)
    over (workers, speedup) points. Linear in f: 1/S - 1/p = f (1 - 1/p)."""
    xs, ys = [], []
    for p, s in points:
        if p > 1 and s:
            xs.append(1 - 1 / p)
            ys.append(1 / s - 1 / p)
    if not xs:
        return None
    return sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs)


def amdahl_speedup(f: float, workers: int) -> float:
    return 1 / (f + (1 - f) / workers)
