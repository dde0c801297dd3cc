"""What ``run`` and ``compare`` do between reading their options and showing results.

    options (argparse Namespace: the CLI's, or the library's kwargs parsed the same way)
      -> plan_run / plan_compare     every name and value checked, nothing started
      -> execute_run / execute_compare   tiers started, timed, judged, stopped; the event
                                     stream told as it goes (taskrace.events)
      -> records (+ fits, capacity)  what the CLI prints and the library returns

The CLI and the library (``taskrace.run``, ``taskrace.compare``) both call these, so a
bad value fails in the same words on both, and a run is the same run either way.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from scenarios import SCENARIOS, get_scenario
from taskrace import events
from taskrace.measuring.capacity import measure_capacity, usable_cpus
from taskrace.measuring.runner import prepare, run_one
from taskrace.options import UsageError, flag_items, names_in, parse_sets, tier_options
from workers import TIERS, available_tiers, get_tier

EXIT_OK, EXIT_FAILED = 0, 1

# What `compare` uses unless told otherwise: the whole matrix, every point measured
# 1 + 3 times, in about two minutes on two cores. The lessons hold at these sizes (a
# 0.5 s wait overlaps as well as the seed's 2 s; the bank still races in every trial:
# 2 trials of 50 steps lost 63-81 updates per repeat on each concurrent tier here);
# `run` keeps the seed's own sizes, and --set restores any of them here.
COMPARE_DEFAULTS = {"power-io": {"sleep": 0.5}, "power-cpu": {"tasks": 4},
                    "bank": {"trials": 2, "steps": 50, "delay": 0.002}}
# Variants compare runs unless told otherwise (--set or --sweep of the same option): globals
# in a module-level list and in the tier's shared store side by side, the seed's two answers.
COMPARE_SWEEPS = {"globals": [{"store": "module"}, {"store": "shared"}]}


# run ------------------------------------------------------------------------------------
@dataclass
class RunPlan:
    scenario: object
    tier: object
    options: dict  # the tier settings given (for the dry run's lines)

    @property
    def label(self) -> str:
        return f"{self.scenario.name} on {self.tier.name} -n {self.tier.workers}"


def plan_run(args) -> RunPlan:
    get_scenario(args.scenario)  # an unknown name: one line listing the scenarios
    sets, _ = flag_items(args, [args.scenario], run=args.scenario)
    params = parse_sets(sets + args.set, [args.scenario], run=args.scenario).get(args.scenario, {})
    workers = args.workers if args.workers is not None else 1
    options = tier_options(args)
    scenario, tier = prepare(args.scenario, params, args.backend, workers, options, args.seed)
    return RunPlan(scenario, tier, options)


def execute_run(plan: RunPlan, history: list | None = None) -> dict:
    events.emit("run.start", command="run", label=f"running {plan.label}", total=None)
    record = run_one(plan.scenario, plan.tier, history)
    # the final records ride on run.end: a live view (or its replay) prints the terminal's table
    events.emit("run.end", command="run", exit_code=exit_code([record], False), records=[record])
    return record


# compare --------------------------------------------------------------------------------
def plan_compare(args) -> list:
    """Every point of the matrix, validated before anything starts."""
    from scenarios.bank import STRATEGIES
    from taskrace.measuring import sweep

    if args.repeat < 1 or args.warmup < 0:
        raise UsageError("--repeat must be at least 1 and --warmup at least 0")
    scenarios = names_in(args.scenario, SCENARIOS, "scenario")
    # By default every backend that loads on this Python (`taskrace list` says why one does not).
    backends = names_in(args.backend, TIERS, "backend") if args.backend else available_tiers()
    counts = args.workers or [os.cpu_count() or 2]
    flag_sets, flag_sweeps = flag_items(args, scenarios)
    sets = parse_sets(flag_sets + args.set, scenarios)
    sweeps = parse_sweeps(args, flag_sweeps)
    for name, variants in COMPARE_SWEEPS.items():
        options = {opt for v in variants for opt in v}
        if name not in sweeps and not options & set(sets.get(name, {})):
            sweeps[name] = variants
    strategies = names_in(args.strategy, STRATEGIES, "strategy") if args.strategy else None
    if strategies:
        for backend in backends:
            missing = [s for s in strategies if s not in get_tier(backend).bank_strategies]
            if missing:
                raise UsageError(f"strategy {missing[0]!r} is not available on backend {backend!r}")

    def strategies_for(name):
        if not any(p.name == "strategy" for p in get_scenario(name).params):
            return [None]
        return strategies or list(STRATEGIES)

    points = sweep.expand(scenarios, backends, counts, strategies_for,
                          lambda name: {**COMPARE_DEFAULTS.get(name, {}), **sets.get(name, {})},
                          lambda name: sweeps.get(name, [{}]), scaling=args.scaling,
                          given_for=lambda name: set(sets.get(name, {})))
    sweep.validate(points, tier_options(args), args.seed)
    return points


def parse_sweeps(args, more: list[str]) -> dict[str, list[dict]]:
    """--sweep SCENARIO.OPTION=V1,V2 (and the shortcuts --chunksize, --task-size, and
    ``more``: scenario flags given comma lists)."""
    items = list(args.sweep) + more
    if args.chunksize:
        items.append(f"mapreduce.chunksize={args.chunksize}")
    if args.task_size:
        items.append(f"power-cpu.size={args.task_size}")
    out: dict[str, list[dict]] = {}
    for item in items:
        key, eq, values = item.partition("=")
        scenario, dot, option = key.partition(".")
        if not (eq and dot and option and values):
            raise UsageError(f"--sweep takes SCENARIO.OPTION=V1,V2,..., got {item!r}")
        if scenario not in SCENARIOS:
            raise UsageError(f"unknown scenario {scenario!r} in --sweep; choose from: {', '.join(SCENARIOS)}")
        option = option.replace("-", "_")
        variants = out.get(scenario, [{}])
        out[scenario] = [dict(v, **{option: value}) for v in variants for value in values.split(",") if value]
    return out


def execute_compare(points: list, args, measure_cpus: bool = True,
                    label: str = "compare") -> tuple[list[dict], list[dict], dict]:
    """Run the matrix: (records, fits, capacity). The CPUs' capacity is measured before
    and after (unless ``measure_cpus`` is false): the ceiling beside which every CPU-bound
    speedup is read (a shared VM may give far less than its CPU count)."""
    from taskrace.measuring import sweep

    total = len(points) * (args.repeat + args.warmup)
    events.emit("run.start", command="compare", label=label, total=total, points=len(points))
    capacity = {}
    if measure_cpus and usable_cpus() > 1:
        events.emit("status", text="measuring CPU capacity")
        capacity["before"] = measure_capacity()
        events.emit("capacity", phase="before", result=capacity["before"])
    records = sweep.execute(points, tier_options(args), args.seed, args.repeat, args.warmup)
    if capacity:
        events.emit("status", text="measuring CPU capacity")
        capacity["after"] = measure_capacity()
        events.emit("capacity", phase="after", result=capacity["after"])
    fits = sweep.derive(records)
    # derive() completed the records (speedup, agreement): they ride on run.end, so a live
    # view (or its replay) prints the terminal's table, not the points' first drafts
    events.emit("run.end", command="compare", exit_code=compare_exit_code(records, args.expect_safe),
                records=records, fits=fits, capacity=capacity, repeat=args.repeat)
    return records, fits, capacity


def exit_code(records: list[dict], expect_safe: bool) -> int:
    """1 when a checker failed. A violation by an unsafe strategy is the lesson, not a
    failure, unless --expect-safe; a task that crashed is a failure either way."""
    for r in records:
        v = r["verdict"]
        if v["details"].get("errors") or (not v["ok"] and (expect_safe or not v["unsafe"])):
            return EXIT_FAILED
    return EXIT_OK


def compare_exit_code(records: list[dict], expect_safe: bool) -> int:
    """compare's: exit_code, and 1 too where a point disagrees with sequential."""
    if any(r.get("agrees_with_sequential") is False for r in records):
        return EXIT_FAILED
    return exit_code(records, expect_safe)
