"""Results as tables: for the terminal (rich), as markdown and as CSV, all from the one
column definition in taskrace.reporting.columns. Reads result records; knows nothing of tiers."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text

from taskrace.reporting import tables
from taskrace.reporting.columns import COLUMNS, Column, Row, verdict_short, verdict_status

FORMATS = ("table", "markdown", "csv", "json")


def series_key(run: dict) -> tuple[str, str]:
    """What a point is compared with: same scenario, same parameters (strategy included);
    under weak scaling, the base work's parameters (taskrace.measuring.sweep)."""
    params = (run.get("scaling") or {}).get("base_params") or run.get("params") or {}
    return run["scenario"], json.dumps(params, sort_keys=True)


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


def rows_of(records: list[dict]) -> list[Row]:
    labels = panels(records)  # scenario, strategy, and the options a sweep varies
    return [Row(r, labels[series_key(r)]) for r in records]


def _has_values(column: Column, rows: list[Row]) -> bool:
    return any(column.get(row) is not None for row in rows)


# --- the terminal table ------------------------------------------------------------------------

STYLE = {"ok": "green", "unsafe": "yellow", "fail": "red"}
# When even the compact set does not fit at two lines per row (a terminal under 80
# columns, an unusually long label), these go first, in this order: what is left still
# says which tier was how fast and whether it was right.
DROP_FIRST = ("tasks_per_s", "cpu_percent", "agrees", "speedup")
BANK_KEY = ("viol. = trials that ended with money created or lost; lost = updates overwritten "
            "by another actor (the unsafe strategy doing what it is there to show)")


@dataclass
class RunsTable:
    table: Table
    width: int  # characters the table needs: more than the console only when asked for (--wide)
    notes: list[str]  # lines to print under it


def _cells(rows: list[Row], columns: list[Column]) -> tuple[dict[str, list[Text]], list[str]]:
    """Every cell of the terminal table, and the notes its short forms refer to: the full
    text of each real failure, numbered in the verdict cell."""
    cells: dict[str, list[Text]] = {}
    notes: list[str] = []
    for column in columns:
        out = cells[column.key] = []
        for row in rows:
            text = column.short(row) if column.short else column.text(row)
            if column.key == "verdict" and verdict_status(row.record) == "fail":
                v = row.record["verdict"]
                notes.append(f"[{len(notes) + 1}] {row.label} on {row.record['backend']} -n "
                             f"{row.record['workers']}: expected {v.get('expected')}; actual {v.get('actual')}")
                text += f" [{len(notes)}]"
            out.append(Text(text, style=STYLE.get(column.status(row) if column.status else None, "")))
    return cells, notes


def _choose(pool: list[Column], need: dict[str, tables.Need], width: int) -> dict[str, int]:
    """Column key -> width: the compact columns (dropping DROP_FIRST ones only if two
    lines per row cannot fit), unwrapped where room allows; then, once every row is on
    one line, the wide columns that still fit, in their order."""
    shown = [c for c in pool if c.compact]
    for key in DROP_FIRST:
        if tables.total([need[c.key].two for c in shown]) <= width:
            break
        shown = [c for c in shown if c.key != key]
    widths = dict(zip((c.key for c in shown), tables.widen([need[c.key] for c in shown], width)))
    if all(widths[c.key] >= need[c.key].flat for c in shown):
        for column in (c for c in pool if not c.compact):
            for w in (need[column.key].one, need[column.key].flat):  # the header on two lines if need be
                if tables.total(list(widths.values()) + [w]) <= width:
                    widths[column.key] = w
                    break
    return widths


def runs_table(records: list[dict], title: str, width: int, columns: list[Column] | None = None,
               wide: bool = False) -> RunsTable:
    """The records as a table for a terminal ``width`` columns wide. By default, the
    compact columns (and the wide ones the width leaves room for); ``wide``: every column;
    ``columns``: those. Columns with no value in any row (a single run has no speedup)
    are left out unless named."""
    rows = rows_of(records)
    pool = columns or [c for c in COLUMNS if _has_values(c, rows)]
    cells, notes = _cells(rows, pool)
    need = {c.key: tables.needs(c.header, cells[c.key]) for c in pool}
    if columns or wide:
        fits = tables.total([need[c.key].two for c in pool]) <= width
        widths = dict(zip((c.key for c in pool), tables.widen([need[c.key] for c in pool], width) if fits
                          else [need[c.key].flat for c in pool]))  # wider than the terminal, as asked
    else:
        widths = _choose(pool, need, width)
    shown = [c for c in pool if c.key in widths]
    hidden = [c for c in pool if c.key not in widths]
    table = tables.make(title, [c.header for c in shown], [c.justify for c in shown],
                        [[cells[c.key][i] for c in shown] for i in range(len(rows))],
                        [widths[c.key] for c in shown])
    if any(c.key == "verdict" for c in shown) and any(
            verdict_status(r.record) == "unsafe" and "viol." in verdict_short(r.record) for r in rows):
        notes.append(BANK_KEY)
    notes += source_notes(records)
    if hidden:
        notes.append(f"more columns: {', '.join(c.header for c in hidden)} "
                     "(--wide, --columns, or a wider terminal)")
    return RunsTable(table, tables.total([widths[c.key] for c in shown]), notes)


def source_notes(records: list[dict]) -> list[str]:
    """Where the resource figures come from, when not every row measured the same thing:
    in the lab, the celery rows' CPU %, peak RSS and procs are the worker nodes' own
    (measured where each task ran), the other rows' the harness's process tree."""
    from taskrace.measuring.runner import HARNESS_SOURCE  # the label the runner gives the tree's figures

    sources = {}
    for r in records:
        source = (r.get("metrics") or {}).get("source") or HARNESS_SOURCE
        if source != HARNESS_SOURCE:
            sources.setdefault(r["backend"], source)
    return [f"CPU %, peak RSS, procs on {backend}: {source}, measured where each task ran "
            f"(other rows: the {HARNESS_SOURCE})" for backend, source in sources.items()]


def print_runs(records: list[dict], title: str = "taskrace", console: Console | None = None,
               columns: list[Column] | None = None, wide: bool = False) -> None:
    console = console or Console()
    out = runs_table(records, title, console.width, columns, wide)
    if out.width > console.width:
        # Asked for (--wide, --columns): wider than the terminal, but never cut. Rich lays
        # a table out within the console's width, so lend it the table's for this print.
        width = console.width
        console.width = out.width
        try:
            console.print(out.table)
        finally:
            console.width = width
    else:
        console.print(out.table)
    for note in out.notes:
        console.print(note, style="dim", markup=False, highlight=False)


# --- markdown and CSV: every column with a value, full verdicts, no width to fit ---------------

MD_ALIGN = {"left": ":--", "right": "--:", "center": ":-:"}


def markdown(records: list[dict], columns: list[Column] | None = None) -> str:
    """A pipe table (GitHub, pyperf's --table-format=md): the values as the terminal shows
    them, the verdict in full."""
    rows = rows_of(records)
    cols = columns or [c for c in COLUMNS if _has_values(c, rows)]

    def line(cells):
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    out = [line([c.header for c in cols]), "|" + "|".join(MD_ALIGN[c.justify] for c in cols) + "|"]
    out += [line([c.text(row) for c in cols]) for row in rows]
    return "\n".join(out) + "\n"


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def csv_text(records: list[dict], columns: list[Column] | None = None) -> str:
    """One line per record, every column (a fixed header, for spreadsheets and scripts),
    the values as the records hold them: seconds, ratios, bytes as MB, unrounded."""
    rows = rows_of(records)
    cols = columns or COLUMNS
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([c.key for c in cols])
    for row in rows:
        writer.writerow([_csv_value(c.get(row)) for c in cols])
    return buf.getvalue()


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
    if (record.get("chord") or {}).get("ran"):  # mapreduce --reduce chord: only such records print it
        console.print(chord_line(record["chord"]))
    for node, m in record.get("node_metrics", {}).items():
        console.print(f"executor {node}: {m['tasks']} tasks, {m['cpu_s']:.3f} CPU s, "
                      f"peak RSS {m['max_rss_bytes'] / 2**20:,.0f} MB")
    seen = record["metrics"]["processes_seen"]
    console.print(f"OS processes seen during the run: {len(seen)} "
                  f"({', '.join(sorted({p['name'] for p in seen}))})")


def chord_line(c: dict) -> str:
    """One line for a chord's cost (workers.celery_chord), beside the plain group's."""
    wait = c.get("reduce_wait_s")
    text = f"chord: reduce on {c.get('reduce_worker')} waited " + \
        ("?" if wait is None else f"{wait * 1e3:.1f} ms") + " after the last map task"
    ref = c.get("reference")
    if ref:
        per_byte = c.get("extra_net_bytes_per_result_byte")
        text += (f"; {c['extra_commands_per_map_task']:+.1f} Redis commands per map task "
                 f"({c['commands_per_map_task']:.1f} vs {ref['commands_per_map_task']:.1f} as a plain group)"
                 + ("" if per_byte is None else f", {per_byte:+.1f} bytes on the wire per result byte "
                    f"carried into the body ({c['carried_bytes']:,} B)"))
    return text
