"""Hidden checks of choose-the-model: the student's tier and predicted speedup for each of
three workloads, against what this machine measures in the same check.

Each check races its workload on sequential, threads, asyncio and processes (4 workers
each; sequential is the baseline and the oracle) with ``taskrace.run``, in interleaved
rounds (one run of each tier per round, so a machine that gets busier mid-way slows every
tier of that round alike), and reads each tier's speedup per round. Then:

* the tier: the one with the highest median speedup, or one within noise of it (its best
  round reaches 90 % of the winner's median);
* the speedup: inside the tier's measured band, its rounds' range widened by 25 % of its
  median or half that range, whichever is more. CPU-bound work on processes may also be
  predicted at its ideal, the core count: a machine shared with others (or a VM) delivers
  less than its cores at times (the CPU capacity, taskrace.measuring.capacity, measured
  first, is in the message), and that is the machine, not the tier. Threads and
  asyncio get no such allowance: one GIL, one core, whatever the machine; a round where
  they read faster than sequential is noise (sequential slowed by another tenant), and is
  bounded at 1.0, as compare bounds the CPU capacity at the CPU count.
"""
from __future__ import annotations

import math
import statistics

from taskrace.grading import Fail, Student, check

TIERS = ("sequential", "threads", "asyncio", "processes")
WORKERS = 4
ROUNDS = 5
NOISE = 0.9  # a tier is "within noise" of the winner when its best round reaches 90 % of it
WIDEN = 0.25  # the prediction band: the rounds' range widened by 25 % of the median at least
# Tiers whose CPU-bound speedup reaches the core count on CPUs that deliver it (a process has
# its own interpreter and GIL; a thread shares one, a coroutine shares one thread).
SCALES_WITH_CORES = {("power-cpu", "processes")}
# The three workloads: the project's scenarios, small enough for a check (seconds each).
WORKLOADS = {
    "power-cpu": ("power-cpu", {"tasks": 4, "size": 1000, "exponent": 2000}),
    "power-io": ("power-io", {"tasks": 8, "sleep": 0.03}),
    "tiny-tasks": ("mapreduce", {"size": 2000, "chunksize": 1, "exponent": 2}),
}
WHY = {
    ("power-cpu", "threads"): "the GIL lets one thread run Python at a time",
    ("power-cpu", "asyncio"): "a coroutine that never awaits holds the loop: one task at a time, on one thread",
    ("power-cpu", "sequential"): "one core works, the others wait",
    ("power-cpu", "processes"): "each process has its own interpreter and GIL: every core computes, up to "
                                "what the CPUs deliver",
    ("power-io", "sequential"): "each call waits 30 ms in turn; threads, an event loop or processes wait "
                                "for 4 calls at once",
    ("power-io", "threads"): "a waiting thread releases the GIL: 4 threads wait for 4 calls at once",
    ("power-io", "asyncio"): "the loop runs another call at each await: 4 waits overlap on one thread",
    ("power-io", "processes"): "4 processes wait at once, paying their start-up and pickling on top",
    ("tiny-tasks", "threads"): "each task is a microsecond of work: handing it to a pool costs more than doing it",
    ("tiny-tasks", "asyncio"): "each task is a microsecond of work: scheduling it on the loop costs more than "
                               "doing it",
    ("tiny-tasks", "processes"): "each task is a microsecond of work: pickling it to a process and back "
                                 "costs far more than doing it",
    ("tiny-tasks", "sequential"): "nothing beats doing a microsecond of work in place",
}


# --- the answers -----------------------------------------------------------------------------
def answer_for(student: Student, workload: str) -> tuple[str, float]:
    """(tier, predicted speedup) from the student's ANSWERS, or Fail saying what is missing."""
    answers = getattr(student.solution(), "ANSWERS", None)
    if not isinstance(answers, dict):
        raise Fail("solution.py needs ANSWERS, a dict: workload -> {'tier': ..., 'speedup': ...}")
    entry = answers.get(workload)
    tier = entry.get("tier") if isinstance(entry, dict) else None
    speedup = entry.get("speedup") if isinstance(entry, dict) else None
    if tier not in TIERS:
        raise Fail(f"ANSWERS[{workload!r}]['tier'] is {tier!r}: choose one of {', '.join(TIERS)}")
    if isinstance(speedup, bool) or not isinstance(speedup, (int, float)) or not 0 < speedup < 100 \
            or math.isnan(speedup):
        raise Fail(f"ANSWERS[{workload!r}]['speedup'] is {speedup!r}: predict {tier}'s speedup over "
                   f"sequential on this workload, a number (1.0: as fast; 2.5: two and a half times)")
    return tier, float(speedup)


# --- the measure ----------------------------------------------------------------------------
def measure(workload: str) -> tuple[dict[str, list[float]], dict | None]:
    """Per tier, its speedup over sequential in each round; and, for CPU-bound work, the
    CPUs' capacity measured first (what a CPU-bound speedup can reach here), else None."""
    import taskrace
    from taskrace.measuring.capacity import measure_capacity, usable_cpus

    scenario, options = WORKLOADS[workload]
    capacity = measure_capacity() if workload == "power-cpu" and usable_cpus() > 1 else None
    walls: dict[str, list[float]] = {t: [] for t in TIERS}
    for _ in range(ROUNDS):  # imports and pool start-up happen off the clock (wall_s)
        for tier in TIERS:
            record = taskrace.run(scenario, backend=tier, workers=WORKERS, **options).records[0]
            if not record["verdict"]["ok"]:
                raise RuntimeError(f"{scenario} on {tier}: the answer was wrong ({record['verdict']['actual']})")
            walls[tier].append(record["wall_s"])
    rounds = {t: [s / w for s, w in zip(walls["sequential"], walls[t])] for t in TIERS}
    return rounds, capacity


def band(speedups: list[float]) -> tuple[float, float]:
    lo, hi, mid = min(speedups), max(speedups), statistics.median(speedups)
    widen = max(WIDEN * mid, (hi - lo) / 2)
    return max(0.0, lo - widen), hi + widen


def _x(v: float) -> str:
    return f"{v:.2f}x" if v < 10 else f"{v:.1f}x"


def bounded(workload: str, rounds: dict[str, list[float]]) -> dict[str, list[float]]:
    """On CPU-bound work a tier that computes on one core (one GIL, or one thread) cannot
    be faster than sequential: a round that reads faster caught sequential slowed by
    another tenant. It is bounded at 1.0, as compare bounds the CPU capacity at the CPU
    count (more is noise by definition)."""
    if workload != "power-cpu":
        return rounds
    return {t: s if (workload, t) in SCALES_WITH_CORES else [min(x, 1.0) for x in s] for t, s in rounds.items()}


def judge(workload: str, tier: str, predicted: float, rounds: dict[str, list[float]], capacity: dict | None) -> None:
    rounds = bounded(workload, rounds)
    medians = {t: statistics.median(s) for t, s in rounds.items()}
    winner = max(TIERS, key=lambda t: medians[t])
    seen = ", ".join(f"{t} {_x(medians[t])}" for t in sorted(TIERS, key=lambda t: -medians[t]))
    setup = f"{WORKERS} workers"
    if capacity:
        setup += f", {capacity['cpus']} CPUs delivering {capacity['capacity']:.2f}x"
    why = WHY[(workload, tier)]
    if tier != winner and max(rounds[tier]) < NOISE * medians[winner]:
        raise Fail(f"{tier} on {workload} measured {_x(medians[tier])}, the winner {winner} "
                   f"{_x(medians[winner])} ({seen}; median of {ROUNDS} rounds, {setup}): {why}")
    lo, hi = band(rounds[tier])
    ceiling = ""
    if capacity and (workload, tier) in SCALES_WITH_CORES:
        # A machine shared with others (or a VM's CPUs) may deliver less than its cores:
        # the core count, what this tier reaches on CPUs that deliver, is right too.
        ideal = min(WORKERS, capacity["cpus"])
        if hi < ideal * (1 + WIDEN / 2):
            hi = ideal * (1 + WIDEN / 2)
            ceiling = f" (up to its ideal on {capacity['cpus']} CPUs)"
    if not lo <= predicted <= hi:
        raise Fail(f"{tier} on {workload} measured {_x(medians[tier])} (rounds {_x(min(rounds[tier]))}-"
                   f"{_x(max(rounds[tier]))}, {setup}); you predicted {_x(predicted)}, outside "
                   f"{_x(lo)}-{_x(hi)}{ceiling}: {why}")


def choose(student: Student, workload: str) -> None:
    tier, predicted = answer_for(student, workload)  # a missing answer fails before any measure
    rounds, capacity = measure(workload)
    judge(workload, tier, predicted, rounds, capacity)


# --- the checks -------------------------------------------------------------------------------
@check(points=2, timeout=120)
def cpu_bound_power(student: Student):
    """power-cpu (the seed's powers, made CPU-bound): the tier that wins, and its speedup."""
    choose(student, "power-cpu")


@check(points=2, timeout=120)
def blocking_io_power(student: Student):
    """power-io (the seed's powers after a blocking 30 ms wait): the tier that wins, and its speedup."""
    choose(student, "power-io")


@check(points=2, timeout=120)
def tiny_tasks(student: Student):
    """mapreduce with one number per task (2000 tiny tasks): the tier that wins, and its speedup."""
    choose(student, "tiny-tasks")
