"""Runs: build the scenario and the tier, time them from outside, judge, record.

This is the only place that joins a scenario to a tier, and it knows neither's
internals: both come from their registries by name.
"""
from __future__ import annotations

import statistics
import time
from collections import Counter

from scenarios import get_scenario
from scenarios.base import BadInput
from taskrace import events
from taskrace.measuring.measure import TreeSampler
from taskrace.measuring.stats import percentiles, spread
from taskrace.reporting.results import digest, environment
from workers import get_tier
from workers.base import node_of


MAX_WORKERS = 256  # a sanity bound: -n 100000 would fork until the machine falls over
# Where a record's CPU %, peak RSS and process figures come from (metrics["source"]).
HARNESS_SOURCE = "harness process tree"
HARNESS_HOW = {"cpu_percent": "CPU time of the harness and every process under it / the run's wall time",
               "peak_rss_bytes": "largest sum of their resident memory at one sample",
               "os_processes": "most processes alive in the tree at one sample"}
WORKERS_HOW = {"cpu_percent": "CPU time of the tasks' own threads, measured where they ran / the run's wall time",
               "peak_rss_bytes": "sum over the worker processes that ran tasks of each one's peak (since it "
                                 "started); an actor run in the harness adds none (metrics.harness has that)",
               "os_processes": "processes that ran tasks", "threads": "not measured outside the harness"}
REPLACED = ("cpu_percent", "cpu_seconds", "peak_rss_bytes", "os_processes", "threads")
# Sections a scenario adds to a run's record (Execution.data["record"]), kept on each sample
# and, from the median one, on the record: mapreduce --reduce chord's cost, how
# taskrace.race's function reached the tier.
OWN_SECTIONS = ("chord", "race")
MIN_CPU_WINDOW_S = 0.1  # as taskrace.measuring.measure: 10 ms CPU ticks over less would read as noise


def prepare(scenario_name: str, params: dict, backend: str, workers: int, tier_options: dict,
            seed: int = 0):
    """Resolve names and validate everything before any process starts.
    Raises UnknownChoice / BadInput / MissingDependency with one-line messages."""
    scenario = get_scenario(scenario_name)(params, seed)
    tier_cls = get_tier(backend)
    if not 1 <= workers <= MAX_WORKERS:
        raise BadInput(f"-n must be between 1 and {MAX_WORKERS}, got {workers}")
    reason = scenario.supported_by(tier_cls)
    if reason:
        raise BadInput(reason)
    try:
        tier = tier_cls(workers, **tier_options)  # cheap: checks options, starts nothing
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    reason = tier.refuses(scenario)
    if reason:
        raise BadInput(reason)
    return scenario, tier


def measure(scenario, tier, history: list | None = None) -> dict:
    """One timed run of ``scenario`` on an already started ``tier``: a raw sample."""
    tier.reserve(scenario.actors_needed(tier.workers))
    with TreeSampler() as sampler:
        t_run = time.perf_counter()
        execution = scenario.execute(tier)
        wall = time.perf_counter() - t_run
    verdict = scenario.check(execution, tier)
    if history is not None:
        history.extend(scenario.history_lines(execution, tier.name))
    metrics = sampler.metrics()
    metrics.update(source=HARNESS_SOURCE, how=HARNESS_HOW)
    if tier.external:
        # The tasks ran in processes outside the harness's tree (the compose lab's worker
        # containers): the tree saw only the harness waiting. The CPU %, peak RSS and
        # process figures are then the workers' own, the tree's are kept under "harness".
        work = work_metrics(execution.outcomes, wall)
        if work is not None:
            metrics["harness"] = {k: metrics[k] for k in (*REPLACED, "source", "how")}
            metrics.update(work)
    sample = {"wall_s": round(wall, 6), "tasks": execution.units, "metrics": metrics,
            "task_timing": task_timing(execution.outcomes), "latencies": latencies(execution.outcomes),
            "nodes": nodes(execution.outcomes), "node_metrics": node_metrics(execution.outcomes),
            "verdict": verdict.to_dict(),
            "answer_digest": digest(verdict.answer)}
    sample.update(execution.data.get("record") or {})  # a scenario's own sections (mapreduce: "chord")
    return sample


def run_one(scenario, tier, history: list | None = None) -> dict:
    """Start ``tier``, run ``scenario`` once, stop the tier: one record (told to the event
    stream as point 0: ``point.start``, the run's task events, ``point.end``)."""
    label = f"{scenario.name} on {tier.name} -n {tier.workers}"
    events.emit("point.start", point=0, label=label, scenario=scenario.name, backend=tier.name,
                workers=tier.workers, params=dict(scenario.p))
    t0 = time.perf_counter()
    with tier:
        t1 = time.perf_counter()
        with events.context(point=0):
            events.emit("status", text=f"running {label}")
            sample = measure(scenario, tier, history)
        t2 = time.perf_counter()
    record = aggregate(scenario, tier, [sample])
    record["timings"].update(startup_s=round(t1 - t0, 6), shutdown_s=round(time.perf_counter() - t2, 6))
    events.emit("point.end", point=0, label=label, record=record)
    return record


def aggregate(scenario, tier, samples: list[dict]) -> dict:
    """One record for one point of a sweep from its repeated samples: the median run's
    figures up front, the spread beside them, every raw sample kept under ``repeats``."""
    walls = [s["wall_s"] for s in samples]
    typical = sorted(samples, key=lambda s: s["wall_s"])[(len(samples) - 1) // 2]
    failed = next((s for s in samples if not s["verdict"]["ok"]), None)
    wall = spread(walls)["median"]
    units = typical["tasks"]
    metrics = dict(typical["metrics"])
    metrics["cpu_percent_spread"] = spread([s["metrics"]["cpu_percent"] for s in samples])
    metrics["peak_rss_bytes"] = max((s["metrics"]["peak_rss_bytes"] for s in samples
                                     if s["metrics"]["peak_rss_bytes"] is not None), default=None)
    pooled = {k: [v for s in samples for v in s["latencies"].get(k, [])] for k in ("queue_wait", "run", "return")}
    own = {k: typical[k] for k in OWN_SECTIONS if k in typical}  # the median run's, as its figures
    return {
        "scenario": scenario.name,
        "backend": tier.name,
        "workers": tier.workers,
        "strategy": scenario.strategy,
        "params": dict(scenario.p),
        "seed": scenario.seed,
        "tier": tier.describe(),
        "wall_s": round(wall, 6),
        "wall": spread(walls),
        "timings": {"run_s": round(wall, 6), "startup_s": None, "shutdown_s": None},
        "tasks": units,
        "throughput_per_s": round(units / wall, 3) if wall > 0 else None,
        "throughput": spread([s["tasks"] / s["wall_s"] for s in samples if s["wall_s"] > 0]),
        "metrics": metrics,
        "task_timing": typical["task_timing"],
        "latency": {k: percentiles(v) for k, v in pooled.items()},
        "nodes": _sum_counts(s["nodes"] for s in samples),
        "node_metrics": _merge_node_metrics(s["node_metrics"] for s in samples),
        "verdict": (failed or typical)["verdict"],
        "answer_digest": (failed or typical)["answer_digest"],
        "repeats": samples,
        "environment": environment(),
        **own,
    }


def _node(outcome) -> str:
    return node_of(outcome.worker)


def node_metrics(outcomes) -> dict[str, dict]:
    """Per executor (Celery node = container in the lab): tasks, the CPU seconds its
    tasks used, and its process's peak memory, all measured where the tasks ran."""
    out: dict[str, dict] = {}
    for o in outcomes:
        if not o.worker:
            continue
        m = out.setdefault(_node(o), {"tasks": 0, "cpu_s": 0.0, "max_rss_bytes": 0})
        m["tasks"] += 1
        m["cpu_s"] = round(m["cpu_s"] + (o.cpu_s or 0.0), 6)
        m["max_rss_bytes"] = max(m["max_rss_bytes"], o.max_rss or 0)
    return dict(sorted(out.items()))


def work_metrics(outcomes, wall: float) -> dict | None:
    """CPU %, peak RSS and processes of the work itself, from what each task measured
    where it ran (``Outcome.cpu_s``, ``max_rss``, ``worker`` = node:pid): for tiers whose
    executors are not the harness's children, i.e. external Celery workers. An actor the
    tier ran in the harness (``harness@host:pid``) counts as the harness's process."""
    procs: dict[str, dict] = {}
    for o in outcomes:
        if not o.worker:
            continue
        p = procs.setdefault(o.worker, {"cpu_s": 0.0, "max_rss": 0})
        p["cpu_s"] += o.cpu_s or 0.0
        p["max_rss"] = max(p["max_rss"], o.max_rss or 0)
    if not procs:
        return None
    names = {w.rsplit(":", 1)[0] for w in procs}
    workers = sorted(n for n in names if not n.startswith("harness@"))
    in_harness = sum(1 for o in outcomes if o.worker.startswith("harness@"))
    source = f"worker nodes ({len(workers)})"
    if in_harness:
        source += f" + harness ({in_harness} actor{'s' if in_harness > 1 else ''})"
    cpu_s = sum(p["cpu_s"] for p in procs.values())
    rss = sum(p["max_rss"] for w, p in procs.items() if not w.startswith("harness@"))
    return {"source": source, "how": WORKERS_HOW, "worker_nodes": len(workers), "actors_in_harness": in_harness,
            "cpu_percent": round(100 * cpu_s / wall, 1) if wall >= MIN_CPU_WINDOW_S else None,
            "cpu_seconds": round(cpu_s, 3), "peak_rss_bytes": rss or None,
            "os_processes": len(procs), "threads": None}


def _merge_node_metrics(dicts) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for d in dicts:
        for node, m in d.items():
            t = out.setdefault(node, {"tasks": 0, "cpu_s": 0.0, "max_rss_bytes": 0})
            t["tasks"] += m["tasks"]
            t["cpu_s"] = round(t["cpu_s"] + m["cpu_s"], 6)
            t["max_rss_bytes"] = max(t["max_rss_bytes"], m["max_rss_bytes"])
    return dict(sorted(out.items()))


def _sum_counts(dicts) -> dict:
    total: Counter = Counter()
    for d in dicts:
        total.update(d)
    return dict(sorted(total.items()))


def latencies(outcomes) -> dict:
    """Raw per-task seconds: waiting to start, running, getting the result back."""
    def diffs(a, b):
        return [round(getattr(o, b) - getattr(o, a), 6) for o in outcomes
                if getattr(o, a) is not None and getattr(o, b) is not None]

    return {"queue_wait": diffs("submitted", "started"), "run": diffs("started", "finished"),
            "return": diffs("finished", "seen")}


def task_timing(outcomes) -> dict:
    """Where the time of a task went: waiting to start, running, getting back."""
    def split(attr_a, attr_b):
        values = [getattr(o, attr_b) - getattr(o, attr_a) for o in outcomes
                  if getattr(o, attr_a) is not None and getattr(o, attr_b) is not None]
        if not values:
            return None
        return {"median_s": round(statistics.median(values), 6), "max_s": round(max(values), 6)}

    return {"count": len(outcomes), "queue_wait": split("submitted", "started"),
            "run": split("started", "finished"), "return": split("finished", "seen"),
            "workers_used": len({o.worker for o in outcomes if o.worker})}


def nodes(outcomes) -> dict[str, int]:
    """Tasks per executor: the Celery node name (its "node:pid" minus the pid), or the
    local "pid/thread". Shows whether every worker really took part."""
    counts = Counter(_node(o) for o in outcomes if o.worker)
    return dict(sorted(counts.items()))
