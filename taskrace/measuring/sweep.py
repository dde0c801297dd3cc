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
               an Amdahl fit per scenario/backend series, where the model applies

Scaling (``compare --scaling``), decided per series in ``Scaling.of`` from the scenario's
``scaling_param`` (its task-count option) and ``task_count()``:

    strong     the same work at every n, cut into at least as many tasks as the largest
               n: a task count the user did not set is raised to it (and a note says so);
               one the user set is kept, and the points with n > tasks are task-starved
    weak       the work grows with n: tasks = base x n at each point, the sequential
               baseline measured at the base work only; speedup is the scaled speedup
    as-given   the parameters as they are (the seed's, compare's defaults, the user's);
               points with n > tasks are task-starved
    A scenario without a task-count option (the actor scenarios: -n sets how many actors
    run) keeps its parameters whatever the mode; it still has a fixed amount of work.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field

from taskrace import events
from taskrace.measuring.runner import aggregate, measure, prepare
from taskrace.measuring.stats import amdahl_fit, karp_flatt
from taskrace.reporting.report import series_key

SCALINGS = ("strong", "weak", "as-given")
DEFAULT_SCALING = "strong"
# Why a series has no Amdahl fit, as `fits[].amdahl_skipped` and the chart's legend say it.
# The part before the first colon is what the chart's legend shows.
WEAK_NO_FIT = ("weak scaling (Gustafson): the speedup is the scaled speedup, and Amdahl's law is "
               "for a fixed amount of work; no line is drawn, the ideal S = n is Gustafson's too")


@dataclass
class Scaling:
    """How one series' work meets its worker counts: the mode that applies to it (see the
    module's docstring), the task-count option and its value before and after."""

    scenario: str
    mode: str  # the mode that applies: strong, weak or as-given
    requested: str  # what --scaling asked for
    param: str | None = None  # the scenario's task-count option (None: no such option)
    given: int | None = None  # its value as the user, compare's defaults or the seed gave it
    used: int | None = None  # strong: the value every point runs (raised to the largest n)
    user_set: bool = False
    note: str | None = None  # one line for the table's notes and the JSON

    @classmethod
    def of(cls, name: str, params: dict, counts: list[int], mode: str, user_set: set) -> "Scaling":
        """The scaling of a series with ``params`` swept over ``counts``; ``user_set``: the
        options the user gave (flag, --set, --sweep), which strong scaling never changes."""
        from scenarios import get_scenario

        scenario_cls = get_scenario(name)
        param = scenario_cls.scaling_param
        if param is None:
            return cls(name, "as-given", mode, note=None if mode != "weak" else
                       f"{name}: no task-count option to grow with n: the same work at every n, as given "
                       "(weak scaling does not apply)")
        declared = next(p for p in scenario_cls.params if p.name == param)
        given = declared.convert(params.get(param, declared.default))  # a bad value: one line
        flag, top = declared.flag, max(counts)
        out = cls(name, mode, mode, param, given, given, user_set=param in user_set)
        if mode == "as-given":
            return out
        if mode == "weak":
            out.note = (f"{name}: {flag} {given} x n, {given * min(counts)} to {given * top} tasks "
                        f"(weak scaling: the work grows with n; speedup = n x sequential time "
                        f"of {given} tasks / time at n)")
        elif given < top and not out.user_set:
            out.used = top
            out.note = (f"{name}: {flag} {given} -> {top} so every worker has a task at "
                        f"n = {top} (strong scaling)")
        return out

    def params_at(self, params: dict, workers: int) -> dict:
        """A point's parameters: weak scaling multiplies the task count by n."""
        if self.param is None or self.mode == "as-given":
            return params
        return dict(params, **{self.param: self.given * workers if self.mode == "weak" else self.used})

    def record(self, tasks: int | None, workers: int, base_params: dict) -> dict:
        """What a point's record says about it (``scaling`` in the JSON)."""
        out = {"mode": self.mode, "tasks": tasks,
               "starved": tasks is not None and workers > tasks}
        if self.requested != self.mode:
            out["requested"] = self.requested
        if self.param:
            out.update(param=self.param, given=self.given, user_set=self.user_set)
        if self.mode == "weak":
            # The series is the base work's: every point is read against its one baseline.
            out.update(factor=workers, base_params=base_params)
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class Point:
    scenario: str
    params: dict
    backend: str
    workers: int
    baseline: bool = False
    samples: list = field(default_factory=list)
    warmups: list = field(default_factory=list)  # not measured, but judged all the same
    scaling: dict = field(default_factory=dict)  # Scaling.record(): kept on the point's record

    @property
    def series(self) -> tuple:
        """What a point is compared with: same scenario and (base) parameters."""
        return self.scenario, json.dumps(self.scaling.get("base_params", self.params), sort_keys=True)

    @property
    def label(self) -> str:
        strategy = self.params.get("strategy")
        return f"{self.scenario}{' ' + strategy if strategy else ''} on {self.backend} -n {self.workers}"


def expand(scenarios, backends, counts, strategies_for, params_for, sweeps_for,
           scaling: str = "as-given", given_for=lambda name: set()) -> list[Point]:
    """The matrix as points. ``strategies_for(name)`` lists a scenario's strategies (or
    [None]); ``params_for(name)`` its fixed options; ``sweeps_for(name)`` a list of option
    dicts to vary (e.g. chunksizes), [{}] for none; ``scaling`` one of SCALINGS, and
    ``given_for(name)`` the options the user set (a swept option counts as set)."""
    from scenarios import get_scenario
    from workers import get_tier

    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {', '.join(SCALINGS)}, got {scaling!r}")
    points = []
    for name in scenarios:
        for strategy in strategies_for(name):
            for variant in sweeps_for(name):
                params = dict(params_for(name), **variant, **({"strategy": strategy} if strategy else {}))
                how = Scaling.of(name, params, counts, scaling, set(given_for(name)) | set(variant))
                # Each point's parameters as the scenario reads them (converted, defaults
                # filled in: what its record will say), for its task count.
                read = {n: get_scenario(name)(how.params_at(params, n)) for n in {1, *counts}}
                # Variants some backends refuse (mapreduce --reduce chord) skip them, as
                # strategies do; refused by every backend given, they stay (validate() says why).
                wanted = [b for b in backends if read[1].supported_by(get_tier(b)) is None] or list(backends)
                for backend in dict.fromkeys(["sequential"] + wanted):
                    if strategy and strategy not in get_tier(backend).bank_strategies:
                        continue
                    oracle = backend == "sequential" and read[1].supported_by(get_tier(backend)) is not None
                    for n in ([1] if backend == "sequential" else counts):
                        at = dict(how.params_at(params, n), **(read[1].oracle_params() if oracle else {}))
                        if oracle and any(p.backend == backend and p.scenario == name and p.params == at
                                          for p in points):
                            continue  # the baseline these parameters are read at runs already
                        points.append(Point(name, at, backend, n, baseline=backend == "sequential",
                                            scaling=how.record(read[n].task_count(), n, dict(read[1].p))))
    return points


def notes(items) -> list[str]:
    """The lines under compare's table about how the work met the workers, from points or
    records (their ``scaling``): each series' note once, then the task-starved points."""
    lines, starved = [], {}
    for item in items:
        name, workers, s = ((item.scenario, item.workers, item.scaling) if isinstance(item, Point)
                            else (item["scenario"], item["workers"], item.get("scaling") or {}))
        if s.get("note") and s["note"] not in lines:
            lines.append(s["note"])
        if s.get("starved"):
            starved.setdefault((name, s["tasks"]), set()).add(workers)
    for (name, tasks), counts in starved.items():
        lines.append(f"{name}: task-starved at n = {', '.join(map(str, sorted(counts)))} (only {tasks} "
                     f"task{'s' if tasks > 1 else ''}: some workers idle); no Amdahl fit over those points")
    return lines


def validate(points: list[Point], tier_options: dict, seed: int) -> None:
    for point in points:
        prepare(point.scenario, point.params, point.backend, point.workers, tier_options, seed)


def execute(points: list[Point], tier_options: dict, seed: int, repeat: int, warmup: int,
            on_step=None) -> list[dict]:
    """Run every point ``warmup`` + ``repeat`` times; return one record per point.
    Tells the event stream as it goes: ``point.start`` before a point's first run,
    ``sample.start``/``sample.end`` around each run (task events in between carry the
    point), ``step`` after each, ``point.end`` with each record once its group is done."""
    rng = random.Random(seed)
    number = {id(p): k for k, p in enumerate(points)}
    total, done, begun = len(points) * (repeat + warmup), 0, set()
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
                k = number[id(point)]
                if k not in begun:
                    begun.add(k)
                    events.emit("point.start", point=k, label=point.label, scenario=point.scenario,
                                backend=point.backend, workers=point.workers, params=point.params)
                with events.context(point=k):
                    events.emit("sample.start", warmup=is_warmup)
                    sample = measure(scenario, tier)
                    events.emit("sample.end", warmup=is_warmup, wall_s=sample["wall_s"],
                                ok=sample["verdict"]["ok"])
                (point.warmups if is_warmup else point.samples).append(sample)
                done += 1
                events.emit("step", label=("warm-up " if is_warmup else "") + point.label, done=done, total=total)
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
            if point.scaling:
                record["scaling"] = point.scaling
            judge_warmups(record, point.warmups)
            records[id(point)] = record
            events.emit("point.end", point=number[id(point)], label=point.label, record=record)
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
    return one entry per (scenario, params, backend) series: its points and an Amdahl fit,
    or why there is none (``amdahl_skipped``).

    Fixed work (strong, as-given): speedup S = T_seq / T_n, efficiency S / n.
    Weak scaling, where the point at n runs n times the base work: the scaled (Gustafson)
    speedup S = n x T_seq(base) / T_n(n x base), efficiency S / n = T_seq(base) / T_n. The
    sequential baseline is measured at the base work only; n x T_seq(base) is what one
    worker takes for n times the work when the tasks cost the same each (power's do, up to
    power-cpu's exponent growing by 1 per task, which makes the estimate and so S slightly
    low, never flattering). Karp-Flatt is a fixed-work measure: none under weak scaling,
    and no agreement check where the work differs from the baseline's (each point's own
    checker still judges its answer)."""
    baselines = {series_key(r): r for r in records if r["backend"] == "sequential"}
    series: dict[tuple, list] = {}
    for r in records:
        base = baselines.get(series_key(r)) or baselines.get(oracle_key(r))
        if base is None or not r["wall_s"]:
            continue
        scaling = r.get("scaling") or {}
        factor = scaling.get("factor", 1)  # the work at this point over the baseline's
        r["speedup"] = round(factor * base["wall_s"] / r["wall_s"], 4)
        r["efficiency"] = round(r["speedup"] / r["workers"], 4)
        kf = karp_flatt(r["speedup"], r["workers"]) if factor == 1 else None
        r["karp_flatt"] = None if kf is None else round(kf, 4)
        answers = [s["answer_digest"] for s in r["repeats"] + r.get("warmup_runs", [])]
        r["agrees_with_sequential"] = (None if r["verdict"]["unsafe"] or factor != 1 else
                                       all(a == base["answer_digest"] for a in answers))
        if r["backend"] != "sequential":
            series.setdefault((*series_key(r), r["backend"]), []).append(r)
    out = []
    for (scenario, params, backend), runs in series.items():
        fit = {"scenario": scenario, "params": json.loads(params), "backend": backend,
               "points": sorted((r["workers"], r["speedup"]) for r in runs)}
        fit.update(amdahl(runs))
        out.append(fit)
    return out


def oracle_key(run: dict) -> tuple[str, str] | None:
    """The series whose sequential baseline ``run`` is read against when sequential
    refuses its own parameters (``Scenario.oracle_params``: mapreduce --reduce chord is
    read against --reduce harness), or None."""
    from scenarios import get_scenario

    key = series_key(run)
    try:
        oracle = get_scenario(run["scenario"])(json.loads(key[1])).oracle_params()
    except Exception:  # noqa: BLE001 - a record of another version: no baseline to borrow
        return None
    return (key[0], json.dumps(dict(json.loads(key[1]), **oracle), sort_keys=True)) if oracle else None


def amdahl(runs: list[dict]) -> dict:
    """Amdahl's law where it applies: a fixed amount of work (not weak scaling), fitted over
    the points where every worker had a task, and only from two such points with n > 1
    (through one point any curve fits, and says nothing). Otherwise why not."""
    # One series, one mode (a file from before --scaling existed: as given)
    out = {"scaling": (runs[0].get("scaling") or {}).get("mode", "as-given"), "amdahl_serial_fraction": None}
    if out["scaling"] == "weak":
        return dict(out, amdahl_skipped=WEAK_NO_FIT)
    starved = [r for r in runs if (r.get("scaling") or {}).get("starved")]
    usable = sorted((r["workers"], r["speedup"]) for r in runs
                    if r["workers"] > 1 and not (r.get("scaling") or {}).get("starved"))
    out["fit_points"] = usable
    if len(usable) >= 2:
        f = amdahl_fit(usable)
        return dict(out, amdahl_serial_fraction=None if f is None else round(f, 4))
    points = f"{len(usable)} point{'s' * (len(usable) != 1)} with n > 1"
    if starved:
        tasks = min(r["scaling"]["tasks"] for r in starved)
        return dict(out, amdahl_skipped=f"task-starved at n > {tasks}: {points} where every worker "
                                        "had a task, 2 needed")
    return dict(out, amdahl_skipped=f"{points}: through one point any curve passes, 2 needed")
