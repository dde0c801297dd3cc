"""``taskrace compare a.json b.json``: what changed between two results files.

Points are matched by scenario, strategy, parameters, backend and worker count. A change
is called real only when the two min-max ranges of wall time do not overlap; otherwise it
is within the noise of the repeats.
"""
from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from taskrace.capacity import figures as capacity_figures, span


def _key(run: dict) -> tuple:
    return (run["scenario"], run.get("strategy") or "", json.dumps(run.get("params", {}), sort_keys=True),
            run["backend"], run["workers"])


def _range(run: dict) -> tuple[float, float]:
    w = run.get("wall") or {}
    return w.get("min", run["wall_s"]), w.get("max", run["wall_s"])


def diff(a: dict, b: dict) -> list[dict]:
    """One row per point present in both documents."""
    old = {_key(r): r for r in a["runs"]}
    rows = []
    for run in b["runs"]:
        before = old.get(_key(run))
        if before is None:
            continue
        (a_lo, a_hi), (b_lo, b_hi) = _range(before), _range(run)
        change = run["wall_s"] / before["wall_s"] - 1 if before["wall_s"] else None
        rows.append({"scenario": run["scenario"], "strategy": run.get("strategy"), "backend": run["backend"],
                     "workers": run["workers"], "a": before["wall_s"], "a_range": (a_lo, a_hi),
                     "b": run["wall_s"], "b_range": (b_lo, b_hi), "change": change,
                     "significant": b_hi < a_lo or b_lo > a_hi,
                     "verdict_a": before["verdict"]["ok"], "verdict_b": run["verdict"]["ok"]})
    return rows


def print_diff(a: dict, b: dict, console: Console) -> int:
    rows = diff(a, b)
    table = Table(title="taskrace compare: A -> B (wall time, median [min-max])", header_style="bold")
    for col in ("scenario", "backend", "n", "A s", "B s", "change", "beyond noise", "verdict A -> B"):
        table.add_column(col, justify="left" if col in ("scenario", "backend") else "right")
    for r in rows:
        label = r["scenario"] + (f" {r['strategy']}" if r["strategy"] else "")
        table.add_row(label, r["backend"], str(r["workers"]),
                      f"{r['a']:.3f} [{r['a_range'][0]:.3f}-{r['a_range'][1]:.3f}]",
                      f"{r['b']:.3f} [{r['b_range'][0]:.3f}-{r['b_range'][1]:.3f}]",
                      "-" if r["change"] is None else f"{r['change']:+.1%}",
                      "[bold]yes[/]" if r["significant"] else "no",
                      f"{'ok' if r['verdict_a'] else 'FAIL'} -> {'ok' if r['verdict_b'] else 'FAIL'}")
    console.print(table)
    console.print(f"{len(rows)} points in both files; {sum(r['significant'] for r in rows)} changed beyond the "
                  "spread of their repeats")
    caps = [capacity_figures(doc) for doc in (a, b)]
    if any(caps):
        # A CPU-bound point that moved may only say the machine changed (a shared VM's
        # neighbours come and go): the CPUs' measured capacity for each file, side by side.
        console.print(f"CPU capacity (measured, x one CPU): "
                      f"A {span(caps[0]) if caps[0] else 'not measured'}, B {span(caps[1]) if caps[1] else 'not measured'}")
    return 0
