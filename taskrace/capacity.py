"""How much parallel CPU this machine delivers right now, measured rather than assumed.

``os.cpu_count()`` says how many CPUs the OS sees, not how much work they do at once. On
a shared virtual machine (cloud instances, the machines taskrace is developed on) two
vCPUs busy together have been seen delivering 1.1 CPUs' worth of Python, while each alone
runs at full speed. A speedup of 1.3 on such a machine is the hardware's ceiling, not the
tier's failure, so compare and bench print this figure beside their speedups.

The measure: the same pure-Python loop, timed inside a fresh process,

    solo        one process alone                    -> S seconds
    together    N processes released by one barrier  -> T_1..T_N seconds
    solo again  (A B A: drift over the measurement hits both sides alike)

    capacity = sum over i of min(S) / T_i    (N = ideal; about 1 when the CPUs are one in disguise)

a sum of rates, each against the fastest solo run: the CPUs need not be alike (seen here:
one vCPU running the loop in 0.11 s, the other in 0.21 s, as when a hidden neighbour
shares its core), and a pool that hands out tasks one at a time gets the sum of the
rates. Each process times only its own loop (after the barrier), so process start-up is not
counted. The loop never touches memory beyond a few objects: this is the CPU's ceiling
for CPU-bound Python, an upper bound for what a pool of workers can reach.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

ITERATIONS = 3_000_000  # 0.2-0.5 s on the machines here: spans many scheduler ticks, costs ~1.5 s in all


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _spin(iterations: int) -> float:
    t = time.perf_counter()
    total = 0
    for i in range(iterations):
        total += i
    return time.perf_counter() - t


def _child(barrier, results, iterations: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and ends us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    barrier.wait()
    results.put(_spin(iterations))


def _round(ctx, n: int, iterations: int) -> list[float]:
    """Start ``n`` processes, release them together, return each one's loop time."""
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_child, args=(barrier, results, iterations), daemon=True) for _ in range(n)]
    try:
        for p in procs:
            p.start()
        times = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(5)
        return times
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)


def measure_capacity(cpus: int | None = None, iterations: int = ITERATIONS) -> dict:
    """Measure how many CPUs' worth of Python ``cpus`` processes get when all run at once."""
    n = cpus or usable_cpus()
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("fork" if "fork" in methods else methods[0])
    t0 = time.perf_counter()
    solo = _round(ctx, 1, iterations)
    together = _round(ctx, n, iterations) if n > 1 else list(solo)
    solo += _round(ctx, 1, iterations)
    best = min(solo)
    return {"cpus": n, "capacity": round(sum(best / t for t in together), 2),
            "solo_s": [round(x, 4) for x in solo], "together_s": [round(x, 4) for x in together],
            "iterations": iterations, "measure_s": round(time.perf_counter() - t0, 3),
            "method": "a pure-Python loop alone, then in every CPU at once, then alone again: "
                      "capacity = sum of (fastest solo time / each together time)"}


def figures(doc: dict) -> list[float]:
    """The capacities a results document recorded (before and after its runs), if any."""
    cap = (doc.get("environment") or {}).get("cpu_capacity") or {}
    return [c["capacity"] for c in cap.values() if isinstance(c, dict) and isinstance(c.get("capacity"), (int, float))]


def span(values: list[float]) -> str:
    """'1.47' or '1.47–1.63': the range of the capacities measured."""
    lo, hi = min(values), max(values)
    return f"{lo:.2f}" if lo == hi else f"{lo:.2f}–{hi:.2f}"


def describe(capacity: dict) -> str:
    """One line for the terminal from {"before": ..., "after": ...}: what the machine
    delivered while the runs went on."""
    values = [c["capacity"] for c in capacity.values()]
    if not values:
        return ""
    n = next(iter(capacity.values()))["cpus"]
    line = (f"CPU capacity: this machine's {n} CPUs delivered {span(values)}x one CPU's work when all were busy "
            f"(measured {' and '.join(capacity)} the runs)")
    if min(values) < 0.9 * n:
        line += ("; CPU-bound speedups cannot pass that, however good the tier: another tenant or "
                 "a shared core takes the rest")
    return line
