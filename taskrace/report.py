"""Tables for the terminal (rich). Reads result records; knows nothing of tiers."""
from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table


def verdict_text(record: dict) -> str:
    v = record["verdict"]
    if "visible" in v:
        seen = "visible" if v["visible"] else "not visible"
        return f"[green]ok[/] ({seen})" if v["ok"] else f"[red]FAIL[/] ({seen})"
    if v["ok"]:
        return "[green]ok[/]"
    details = v.get("details", {})
    if "violating_trials" in details:
        text = (f"{details['violating_trials']}/{details['trials']} trials violated, "
                f"{details['lost_updates']} lost updates")
        return f"[yellow]{text}[/]" if v.get("unsafe") else f"[red]FAIL {text}[/]"
    return f"[red]FAIL[/] {v.get('actual')}"


def series_key(run: dict) -> tuple[str, str]:
    """What a point is compared with: same scenario, same parameters (strategy included)."""
    return run["scenario"], json.dumps(run.get("params") or {}, sort_keys=True)


def panels(runs: list[dict]) -> dict[tuple, str]:
    """Series in order of appearance -> a short label: the scenario, its strategy, and
    only the options that vary between series of the same scenario (a --sweep)."""
    keys = list(dict.fromkeys(series_key(r) for r in runs))
    params = {k: json.loads(k[1]) for k in keys}
    labels = {}
    for key in keys:
        scenario = key[0]
        siblings = [params[k] for k in keys if k[0] == scenario]
        varying = sorted({opt for p in siblings for opt in p
                          if opt != "strategy" and len({json.dumps(q.get(opt)) for q in siblings}) > 1})
        p = params[key]
        parts = [scenario] + ([str(p["strategy"])] if p.get("strategy") else [])
        parts += [f"{opt}={p.get(opt)}" for opt in varying]
        labels[key] = " ".join(parts)
    return labels


def _fmt(value, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


def runs_table(records: list[dict], title: str = "taskrace") -> Table:
    table = Table(title=title, header_style="bold", title_style="bold")
    for name, justify in [("scenario", "left"), ("backend", "left"), ("n", "right"),
                          ("wall s", "right"), ("speedup", "right"), ("eff.", "right"),
                          ("tasks/s", "right"), ("CPU %", "right"), ("peak RSS MB", "right"),
                          ("procs", "right"), ("threads", "right"), ("= seq", "center"),
                          ("verdict", "left")]:
        table.add_column(name, justify=justify)
    labels = panels(records)  # scenario, strategy, and the options a sweep varies
    for r in records:
        m = r["metrics"]
        label = labels[series_key(r)]
        agrees = r.get("agrees_with_sequential")
        table.add_row(
            label, r["backend"], str(r["workers"]), _fmt(r["wall_s"], ".3f"),
            _fmt(r.get("speedup"), ".2f"), _fmt(r.get("efficiency"), ".0%"),
            _fmt(r.get("throughput_per_s"), ",.1f"), _fmt(m["cpu_percent"], ".0f"),
            _fmt(m["peak_rss_bytes"] / 2**20, ",.0f"), str(m["os_processes"]), str(m["threads"]),
            {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[agrees],
            verdict_text(r))
    return table


def print_runs(records: list[dict], title: str = "taskrace", console: Console | None = None) -> None:
    console = console or Console()
    console.print(runs_table(records, title))


def print_details(record: dict, console: Console | None = None) -> None:
    """The lines under a single run's table: what the checker saw."""
    console = console or Console()
    v = record["verdict"]
    console.print(f"expected: {v['expected']}   actual: {v['actual']}")
    t = record["timings"]
    console.print(f"startup {t['startup_s']:.3f} s, run {t['run_s']:.3f} s, shutdown {t['shutdown_s']:.3f} s")
    d = v.get("details", {})
    for key in ("error_count", "money_created", "money_lost", "negative_balances", "retries",
                "first_violation", "worst_violation", "last_violation", "max_depth",
                "capacity_enforced", "per_consumer", "appended_seen_by_caller", "chunks"):
        if key in d and d[key] not in (None, [], 0) or key in ("error_count", "max_depth") and key in d:
            console.print(f"{key.replace('_', ' ')}: {d[key]}")
    for err in d.get("errors", [])[:5]:
        console.print(f"[red]error[/] {err}")
    for node, m in record.get("node_metrics", {}).items():
        console.print(f"executor {node}: {m['tasks']} tasks, {m['cpu_s']:.3f} CPU s, "
                      f"peak RSS {m['max_rss_bytes'] / 2**20:,.0f} MB")
    seen = record["metrics"]["processes_seen"]
    console.print(f"OS processes seen during the run: {len(seen)} "
                  f"({', '.join(sorted({p['name'] for p in seen}))})")
