"""One run: build the scenario and the tier, time them from outside, judge, record.

This is the only place that joins a scenario to a tier, and it knows neither's
internals: both come from their registries by name.
"""
from __future__ import annotations

import statistics
import time
from collections import Counter

from scenarios import get_scenario
from scenarios.base import BadInput
from taskrace.measure import TreeSampler
from taskrace.results import digest, environment
from workers import get_tier


def prepare(scenario_name: str, params: dict, backend: str, workers: int, tier_options: dict,
            seed: int = 0):
    """Resolve names and validate everything before any process starts.
    Raises UnknownChoice / BadInput / MissingDependency with one-line messages."""
    scenario = get_scenario(scenario_name)(params, seed)
    tier_cls = get_tier(backend)
    if workers < 1:
        raise BadInput(f"-n must be at least 1, got {workers}")
    reason = getattr(scenario, "supported_by", lambda cls: None)(tier_cls)
    if reason:
        raise BadInput(reason)
    try:
        tier = tier_cls(workers, **tier_options)  # cheap: checks options, starts nothing
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    return scenario, tier


def run_one(scenario, tier, history: list | None = None) -> dict:
    """Run ``scenario`` on a fresh (not yet started) ``tier`` and return its record."""
    t0 = time.perf_counter()
    with tier:
        tier.reserve(getattr(scenario, "actors_needed", lambda n: 0)(tier.workers))
        t1 = time.perf_counter()
        with TreeSampler() as sampler:
            t_run = time.perf_counter()
            execution = scenario.execute(tier)
            wall = time.perf_counter() - t_run
        t2 = time.perf_counter()
    t3 = time.perf_counter()
    verdict = scenario.check(execution, tier)
    if history is not None and hasattr(scenario, "history_lines"):
        history.extend(scenario.history_lines(execution, tier.name))
    return {
        "scenario": scenario.name,
        "backend": tier.name,
        "workers": tier.workers,
        "strategy": scenario.strategy,
        "params": dict(scenario.p),
        "seed": scenario.seed,
        "tier": tier.describe(),
        "wall_s": round(wall, 6),
        "timings": {"startup_s": round(t1 - t0, 6), "run_s": round(wall, 6),
                    "shutdown_s": round(t3 - t2, 6), "total_s": round(t3 - t0, 6)},
        "tasks": execution.units,
        "throughput_per_s": round(execution.units / wall, 3) if wall > 0 else None,
        "metrics": sampler.metrics(),
        "task_timing": task_timing(execution.outcomes),
        "nodes": nodes(execution.outcomes),
        "verdict": verdict.to_dict(),
        "answer_digest": digest(verdict.answer),
        "environment": environment(),
    }


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
    counts = Counter(o.worker.rsplit(":", 1)[0] for o in outcomes if o.worker)
    return dict(sorted(counts.items()))
