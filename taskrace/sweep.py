"""A sweep: every point of the matrix, repeated, in random order, then aggregated.

    plan()     scenarios x strategies x params sweeps x backends x worker counts -> points,
               each validated before any process starts; sequential (1 worker) per
               scenario/params is the baseline and the oracle
    execute()  points grouped by backend configuration: each group's tier starts once
               (its start-up cost is recorded on every record of the group) and runs its
               points' warm-ups, then their repeats, shuffled with the seed so that drift
               of a noisy machine does not always hit the same point; a warm-up's timings
               are discarded, its verdict and answer are judged like any other run's
    derive()   speedup, efficiency and Karp-Flatt serial fraction against the baseline;
               an Amdahl fit per scenario/backend series
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field

from taskrace.runner import aggregate, measure, prepare
from taskrace.stats import amdahl_fit, karp_flatt


@dataclass
class Point:
    scenario: str
    params: dict
    backend: str
    workers: int
    baseline: bool = False
    samples: list = field(default_factory=list)
    warmups: list = field(default_factory=list)  # not measured, but judged all the same

    @property
    def series(self) -> tuple:
        """What a point is compared with: same scenario and parameters."""
        return self.scenario, json.dumps(self.params, sort_keys=True)

    @property
    def label(self) -> str:
        strategy = self.params.get("strategy")
        return f"{self.scenario}{' ' + strategy if strategy else ''} on {self.backend} -n {self.workers}"


def expand(scenarios, backends, counts, strategies_for, params_for, sweeps_for) -> list[Point]:
    """The matrix as points. ``strategies_for(name)`` lists a scenario's strategies (or
    [None]); ``params_for(name)`` its fixed options; ``sweeps_for(name)`` a list of option
    dicts to vary (e.g. chunksizes), [{}] for none."""
    from workers import get_tier

    points = []
    for name in scenarios:
        for strategy in strategies_for(name):
            for variant in sweeps_for(name):
                params = dict(params_for(name), **variant, **({"strategy": strategy} if strategy else {}))
                for backend in dict.fromkeys(["sequential"] + list(backends)):
                    if strategy and strategy not in get_tier(backend).bank_strategies:
                        continue
                    for n in ([1] if backend == "sequential" else counts):
                        points.append(Point(name, params, backend, n, baseline=backend == "sequential"))
    return points


def validate(points: list[Point], tier_options: dict, seed: int) -> None:
    for point in points:
        prepare(point.scenario, point.params, point.backend, point.workers, tier_options, seed)


def execute(points: list[Point], tier_options: dict, seed: int, repeat: int, warmup: int,
            on_step=None) -> list[dict]:
    """Run every point ``warmup`` + ``repeat`` times; return one record per point."""
    rng = random.Random(seed)
    groups: dict[tuple, list[Point]] = {}
    for point in points:
        groups.setdefault((point.backend, point.workers), []).append(point)
    order = list(groups)
    rng.shuffle(order)
    records: dict[int, dict] = {}
    for key in order:
        members = groups[key]
        _, tier = prepare(members[0].scenario, members[0].params, key[0], key[1], tier_options, seed)
        t0 = time.perf_counter()
        with tier:
            startup = time.perf_counter() - t0
            schedule = [(p, True) for p in members for _ in range(warmup)]
            rng.shuffle(schedule)
            measured = [(p, False) for p in members for _ in range(repeat)]
            rng.shuffle(measured)
            for point, is_warmup in schedule + measured:
                scenario, _ = prepare(point.scenario, point.params, point.backend, point.workers,
                                      tier_options, seed)
                sample = measure(scenario, tier)
                (point.warmups if is_warmup else point.samples).append(sample)
                if on_step:
                    on_step(point, is_warmup)
            t1 = time.perf_counter()
        shutdown = time.perf_counter() - t1
        for point in members:
            scenario, _ = prepare(point.scenario, point.params, point.backend, point.workers, tier_options, seed)
            record = aggregate(scenario, tier, point.samples)
            record["timings"].update(startup_s=round(startup, 6), shutdown_s=round(shutdown, 6),
                                     tier_shared_by=len(members))
            record["warmup"], record["repeat"] = warmup, repeat
            judge_warmups(record, point.warmups)
            records[id(point)] = record
    return [records[id(p)] for p in points]


def judge_warmups(record: dict, warmups: list[dict]) -> None:
    """A warm-up's timings are discarded, its verdict is not: a wrong answer or a crash in
    a warm-up fails the point as surely as one in a measured run, with a note saying where
    it happened. Each warm-up's verdict and answer are kept under ``warmup_runs``."""
    record["warmup_runs"] = [{"ok": s["verdict"]["ok"], "answer_digest": s["answer_digest"],
                              "errors": len(s["verdict"]["details"].get("errors") or [])} for s in warmups]
    failed = next((k for k, s in enumerate(warmups)
                   if not s["verdict"]["ok"] or s["verdict"]["details"].get("errors")), None)
    if failed is None:
        return
    crashed = bool(warmups[failed]["verdict"]["details"].get("errors"))
    if not record["verdict"]["ok"] and not crashed:
        return  # a measured run failed the point already: its verdict stays
    verdict = dict(warmups[failed]["verdict"])
    note = (f"failed in warm-up run {failed + 1} of {len(warmups)}; the measured runs "
            + ("passed" if record["verdict"]["ok"] else "failed too"))
    verdict["details"] = dict(verdict["details"], failed_in="warm-up", note=note)
    record["verdict"] = verdict
    record["answer_digest"] = warmups[failed]["answer_digest"]


def derive(records: list[dict]) -> list[dict]:
    """Add speedup, efficiency, Karp-Flatt and agreement to each record (in place), and
    return one Amdahl fit per (scenario, params, backend) series."""
    def series(r):
        return r["scenario"], json.dumps(r["params"], sort_keys=True)

    baselines = {series(r): r for r in records if r["backend"] == "sequential"}
    fits: dict[tuple, list] = {}
    for r in records:
        base = baselines.get(series(r))
        if base is None or not r["wall_s"]:
            continue
        r["speedup"] = round(base["wall_s"] / r["wall_s"], 4)
        r["efficiency"] = round(r["speedup"] / r["workers"], 4)
        kf = karp_flatt(r["speedup"], r["workers"])
        r["karp_flatt"] = None if kf is None else round(kf, 4)
        answers = [s["answer_digest"] for s in r["repeats"] + r.get("warmup_runs", [])]
        r["agrees_with_sequential"] = (None if r["verdict"]["unsafe"] else
                                       all(a == base["answer_digest"] for a in answers))
        if r["backend"] != "sequential":
            fits.setdefault((*series(r), r["backend"]), []).append((r["workers"], r["speedup"]))
    out = []
    for (scenario, params, backend), pts in fits.items():
        f = amdahl_fit(pts)
        out.append({"scenario": scenario, "params": json.loads(params), "backend": backend,
                    "points": sorted(pts), "amdahl_serial_fraction": None if f is None else round(f, 4)})
    return out
