"""What the network study measures: its workloads, its options checked, the plan."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable

from rich.console import Console

from scenarios.mapreduce import sum_of_powers
from scenarios.power import calculate_raise_to
from taskrace.options import UsageError, check_writable
from workers.infra.latency_proxy import parse_duration

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
