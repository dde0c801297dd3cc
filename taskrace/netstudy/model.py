"""The model: cost per task fitted as a + k x RTT, checked against every point and with
one RTT left out; where chunking and prefetch pay; local vs distributed scaling."""
from __future__ import annotations

import math
import statistics

from taskrace.measuring.stats import spread
from taskrace.netstudy.plan import WORKER_TRIPS


def fit_line(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """(a, k) of y = a + k x by least squares on the relative error (weights 1/y²), so a
    point at 0 ms weighs as much as one at 20 ms; None with fewer than two distinct x."""
    if len({x for x, _ in points}) < 2:
        return None
    w = [1 / max(y, 1e-12) ** 2 for _, y in points]
    sw = sum(w)
    sx = sum(wi * x for wi, (x, _) in zip(w, points))
    sy = sum(wi * y for wi, (_, y) in zip(w, points))
    sxx = sum(wi * x * x for wi, (x, _) in zip(w, points))
    sxy = sum(wi * x * y for wi, (x, y) in zip(w, points))
    k = (sw * sxy - sx * sy) / (sw * sxx - sx * sx)
    return (sy - k * sx) / sw, k


def _points(samples: list[dict], name: str, skip_rtt: float | None = None) -> list[tuple[float, float]]:
    return [(s["rtt_measured_ms"] / 1e3, s["cost_s"]) for s in samples
            if s["part"] == "cost" and s["workload"] == name and s["rtt_ms"] != skip_rtt]


def _check(samples: list[dict], name: str, rtt: float, a: float, k: float) -> dict:
    """Predicted tasks/s at ``rtt`` beside the repeats' spread."""
    mine = [s for s in samples if s["part"] == "cost" and s["workload"] == name and s["rtt_ms"] == rtt]
    rates = spread([s["tasks_per_s"] for s in mine])
    measured = statistics.mean(s["rtt_measured_ms"] for s in mine)
    cost = a + k * measured / 1e3
    predicted = mine[0]["workers"] / cost if cost > 0 else None
    # one repeat has no spread to fall within: None, shown as "n/a"
    within = (None if rates["n"] < 2 else predicted is not None and rates["min"] <= predicted <= rates["max"])
    return {"rtt_ms": rtt, "rtt_measured_ms": measured, "calls": mine[0]["calls"], "tasks_per_s": rates,
            "predicted_tasks_per_s": predicted,
            "within": within, "off": None if predicted is None else predicted / rates["median"] - 1}


def loo_rtt(rtts: list[float]) -> float | None:
    """The RTT checked by leaving it out: 5 ms if measured, else the inner one nearest to it."""
    inner = rtts[1:-1]
    return min(inner, key=lambda r: abs(r - 5)) if inner else None


def counted_trips(calibrations: list[dict], name: str) -> dict | None:
    """Worker round trips per message (INFO commandstats around the calibration batch run
    with the fewest sets of workers up): BRPOP, the result-store GET, one per MULTI/EXEC;
    and the whole per-message command breakdown."""
    mine = [c for c in calibrations if c["workload"] == name and "commands" in c]
    if not mine:
        return None
    c = min(mine, key=lambda c: (c["sets_of_workers_running"], c["rtt_ms"]))
    per = {cmd: round(v / c["messages"], 3) for cmd, v in sorted(c["commands"].items())}
    return {"rtt_ms": c["rtt_ms"], "messages": c["messages"], "other_sets_running": c["sets_of_workers_running"] - 1,
            "per_message": per, "worker_round_trips": round(sum(per.get(k, 0) for k in WORKER_TRIPS), 2)}


def analyse(doc: dict) -> None:
    """Fits, checks, leave-one-out, where chunking and prefetch pay, the scaling speedups:
    added to ``doc`` in place (doc["fits"], doc["pays"], doc["scaling"])."""
    samples, rtts = doc["samples"], doc["settings"]["rtts_ms"]
    loo = loo_rtt(rtts)
    fits = {}
    for name in doc["settings"]["workloads"]:
        ak = fit_line(_points(samples, name))
        one = next(s for s in samples if s["workload"] == name)
        entry = {"chunk": one["chunk"], "prefetch": one["prefetch"], "workers": one["workers"],
                 "a_s": None, "k": None, "counted": counted_trips(doc["calibrations"], name)}
        if ak:
            entry.update(a_s=ak[0], k=ak[1], k_per_message=ak[1] * one["chunk"],
                         checks=[_check(samples, name, r, *ak) for r in rtts])
            out = fit_line(_points(samples, name, skip_rtt=loo)) if loo is not None else None
            if out:
                entry["leave_one_out"] = {"a_s": out[0], "k": out[1], **_check(samples, name, loo, *out)}
        fits[name] = entry
    doc["fits"] = fits
    doc["pays"] = pays(fits)
    doc["scaling"] = scaling(samples)


def pays(fits: dict) -> list[dict]:
    """For each chunked / prefetched workload against plain no-op: the RTT from which it
    is 2x faster per call, by the two fits."""
    plain = fits.get("noop") or {}
    if plain.get("k") is None:
        return []
    out = []
    for name, f in fits.items():
        if not name.startswith("noop-") or f.get("k") is None:
            continue
        ap, kp, ao, ko = plain["a_s"], plain["k"], f["a_s"], f["k"]
        at0 = ap / ao if ao > 0 else math.inf
        limit = kp / ko if ko > 0 else math.inf
        if at0 >= 2:
            rtt = 0.0
        elif kp > 2 * ko:
            rtt = (2 * ao - ap) / (kp - 2 * ko) * 1e3
        else:
            rtt = None
        # where it starts to pay at all: equal cost per call
        even = 0.0 if at0 >= 1 else ((ao - ap) / (kp - ko) * 1e3 if kp > ko else None)
        out.append({"workload": name, "ratio_at_0": at0, "ratio_limit": limit, "twice_from_ms": rtt,
                    "pays_from_ms": even})
    return out


def scaling(samples: list[dict]) -> dict:
    """Speedup = sequential's median wall / each sample's wall, per series and n."""
    mine = [s for s in samples if s["part"] == "scaling"]
    seq = [s["wall_s"] for s in mine if s["backend"] == "sequential"]
    if not seq:
        return {}
    base = statistics.median(seq)
    series: dict[str, dict] = {}
    for s in mine:
        if s["backend"] == "sequential":
            continue
        label = "processes" if s["backend"] == "processes" else f"celery, RTT {s['rtt_ms']:g} ms set"
        series.setdefault((s["backend"] != "processes", s["rtt_ms"], label), {}).setdefault(
            str(s["workers"]), []).append(base / s["wall_s"])
    # processes first, then celery by RTT
    measured = {f"celery, RTT {r:g} ms set": statistics.median(s["rtt_measured_ms"] for s in mine
                                                              if s["backend"] == "celery" and s["rtt_ms"] == r)
                for r in {s["rtt_ms"] for s in mine if s["backend"] == "celery" and s["rtt_ms"]}}
    return {"baseline_s": base, "tasks": mine[0]["calls"], "rtt_measured_ms": measured,
            "series": {key[2]: {n: spread(v) for n, v in sorted(by.items(), key=lambda i: int(i[0]))}
                       for key, by in sorted(series.items())}}
