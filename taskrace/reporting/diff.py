"""``taskrace compare a.json b.json``: what changed between two results files.

Points are matched by scenario, strategy, parameters, backend and worker count. A change
is called real only when the two min-max ranges of wall time do not overlap; otherwise it
is within the noise of the repeats.
"""
from __future__ import annotations

import json

from rich.console import Console
from rich.text import Text

from taskrace.measuring.capacity import figures as capacity_figures, span
from taskrace.reporting import tables
from taskrace.reporting.columns import seconds
from taskrace.reporting.report import panels, series_key


def _key(run: dict) -> tuple:
    return (run["scenario"], run.get("strategy") or "", json.dumps(run.get("params", {}), sort_keys=True),
            run["backend"], run["workers"])


def _range(run: dict) -> tuple[float, float]:
    w = run.get("wall") or {}
    return w.get("min", run["wall_s"]), w.get("max", run["wall_s"])


def diff(a: dict, b: dict) -> list[dict]:
    """One row per point present in both documents."""
    old = {_key(r): r for r in a["runs"]}
    labels = panels(b["runs"])  # the run table's labels: a sweep's variants keep their names
    rows = []
    for run in b["runs"]:
        before = old.get(_key(run))
        if before is None:
            continue
        (a_lo, a_hi), (b_lo, b_hi) = _range(before), _range(run)
        change = run["wall_s"] / before["wall_s"] - 1 if before["wall_s"] else None
        rows.append({"label": labels[series_key(run)], "scenario": run["scenario"],
                     "strategy": run.get("strategy"), "backend": run["backend"],
                     "workers": run["workers"], "a": before["wall_s"], "a_range": (a_lo, a_hi),
                     "b": run["wall_s"], "b_range": (b_lo, b_hi), "change": change,
                     "significant": b_hi < a_lo or b_lo > a_hi,
                     "verdict_a": before["verdict"]["ok"], "verdict_b": run["verdict"]["ok"]})
    return rows


SPECS = [tables.Spec("scenario"), tables.Spec("backend"), tables.Spec("n", "right"),
         tables.Spec("A s", "right"), tables.Spec("B s", "right"), tables.Spec("change", "right"),
         tables.Spec("beyond noise", "center")]


def _wall(median: float, lo: float, hi: float) -> str:
    if lo == hi:  # one repeat: a range would only repeat the median
        return seconds(median)
    return f"{seconds(median)} ({seconds(lo)}–{seconds(hi)})"  # wraps before the range in a narrow terminal


def _verdict(ok: bool) -> str:
    return "ok" if ok else "FAIL"


def print_diff(a: dict, b: dict, console: Console) -> int:
    rows = diff(a, b)
    cells = [[r["label"], r["backend"], str(r["workers"]), _wall(r["a"], *r["a_range"]), _wall(r["b"], *r["b_range"]),
              "-" if r["change"] is None else f"{r['change']:+.1%}", Text("yes", style="bold") if r["significant"] else "no"]
             for r in rows]
    console.print(tables.fitted("taskrace compare: A -> B (wall time, median (min–max))", SPECS, cells,
                                console.width))
    console.print(f"{len(rows)} points in both files; {sum(r['significant'] for r in rows)} changed beyond the "
                  "spread of their repeats")
    # Verdicts under the table, not in it: they seldom change, and a column of "ok -> ok"
    # would cost the 80-column table its width.
    changed = [r for r in rows if r["verdict_a"] != r["verdict_b"]]
    if changed:
        console.print(f"verdict changed on {len(changed)} point{'s' if len(changed) > 1 else ''}:", highlight=False)
        for r in changed:
            console.print(f"  {r['label']} on {r['backend']} -n {r['workers']}: "
                          f"{_verdict(r['verdict_a'])} -> {_verdict(r['verdict_b'])}", highlight=False)
    else:
        console.print("every verdict is the same in A and B", highlight=False)
    caps = [capacity_figures(doc) for doc in (a, b)]
    if any(caps):
        # A CPU-bound point that moved may only say the machine changed (a shared VM's
        # neighbours come and go): the CPUs' measured capacity for each file, side by side.
        console.print(f"CPU capacity (measured, x one CPU): "
                      f"A {span(caps[0]) if caps[0] else 'not measured'}, B {span(caps[1]) if caps[1] else 'not measured'}")
    return 0
