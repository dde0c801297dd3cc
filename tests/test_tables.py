"""Every table taskrace prints fits the terminal: at 80 and 100 columns no line is wider
than the terminal, no cell is cut ("…"), no row takes more than two lines. And --format
markdown / csv / json carry the records' own values.

The runs tables are rendered from real records (cheap real runs through the harness);
bench's and cluster status's from documents of their own shape, with the widest values
they plausibly print (a 16-worker bench, 12-digit container ids).
"""
from __future__ import annotations

import copy
import csv
import io
import json
import os
import re
import subprocess
import sys

import pytest
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

try:
    from conftest import CLI_TIMEOUT, REPO_ROOT, run, stderr_lines
except ImportError:  # tests/ imported as a package
    from tests.conftest import CLI_TIMEOUT, REPO_ROOT, run, stderr_lines

from taskrace.measuring import bench

from taskrace.lab import cluster

from taskrace.measuring.sweep import derive
from taskrace.reporting import diff
from taskrace.reporting.columns import BY_KEY, COLUMNS, seconds, verdict_full
from taskrace.reporting.report import csv_text, markdown, print_runs, rows_of, runs_table
from taskrace.reporting.results import document

WIDTHS = [80, 100]
# The cheap real runs: a sleep-free power-io, the bank's unsafe strategy (a long verdict),
# a chunksize sweep (labels like "mapreduce chunksize=2000") and globals' two stores.
SERIES = [("power-io", {"sleep": 0}), ("bank", {"strategy": "none", "trials": 3, "steps": 50, "delay": 0.002}),
          ("mapreduce", {"size": 20000, "chunksize": 2000}), ("mapreduce", {"size": 20000, "chunksize": 20000}),
          ("globals", {"store": "module"}), ("globals", {"store": "shared"})]


@pytest.fixture(scope="module")
def records() -> list[dict]:
    out = []
    for scenario, params in SERIES:
        for backend, n in (("sequential", 1), ("threads", 2), ("processes", 2)):
            out.append(run(scenario, backend, n, **params))
    derive(out)  # speedup, efficiency and "= seq" against each series' sequential run
    bank = [r for r in out if r["scenario"] == "bank" and r["backend"] != "sequential"]
    # Preconditions, so the long verdict really is in the table: `none` races on every
    # concurrent tier (dozens of lost updates per trial; README: >= 9 of 10 trials).
    assert all(not r["verdict"]["ok"] and r["verdict"]["unsafe"] for r in bank), [r["verdict"] for r in bank]
    # And one real failure: a power-io run whose answer is deliberately wrong.
    wrong = copy.deepcopy(next(r for r in out if r["scenario"] == "power-io" and r["backend"] == "threads"))
    wrong["verdict"].update(ok=False, actual="1 results")
    wrong["agrees_with_sequential"] = False
    return out + [wrong]


# --- checks shared by every table ------------------------------------------------------------

def _console(width: int) -> Console:
    return Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)


def _wrap(cell, width: int, console: Console) -> int:
    text = cell if isinstance(cell, Text) else Text(str(cell))
    return len(text.wrap(console, width))


def assert_fits(text: str, width: int) -> None:
    assert "…" not in text, text
    for line in text.splitlines():
        assert cell_len(line) <= width, (len(line), line)


def assert_table_fits(table: Table, width: int) -> list[int]:
    """Render ``table`` alone at ``width``: it fits, nothing is cut, and each row takes
    as many lines as its tallest cell wrapped at its column's width, at most two. The
    line count of the rendering must add up, so rich really used those widths."""
    console = _console(width)
    console.print(table)
    text = console.file.getvalue()
    assert_fits(text, width)
    cols = table.columns
    assert all(c.width for c in cols), "every column gets a fixed width"
    cells = [list(c.cells) for c in cols]
    heights = [max(_wrap(cells[i][r], cols[i].width, console) for i in range(len(cols))) for r in range(table.row_count)]
    assert max(heights, default=1) <= 2, heights
    header = max(_wrap(c.header, c.width, console) for c in cols)
    assert header <= 2
    table_width = sum(c.width for c in cols) + 2 * (len(cols) - 1)
    title = _wrap(table.title, table_width, console) if table.title else 0
    assert len(text.splitlines()) == title + header + 1 + sum(heights), text
    return heights


def printed_tables(fn, width: int) -> tuple[list[Table], str]:
    """Call ``fn(console)``; return the tables it printed and all of its output."""
    console = _console(width)
    tables, original = [], console.print

    def spy(*objects, **kwargs):
        tables.extend(o for o in objects if isinstance(o, Table))
        return original(*objects, **kwargs)

    console.print = spy
    fn(console)
    return tables, console.file.getvalue()


# What follows a runs table: its notes, then (run) the checker's details, (compare) the rest.
AFTER_TABLE = ("viol. =", "more columns:", "[1]", "expected:", "CPU capacity", "results:")


def table_rows(lines: list[str], backends: set[str], count: int) -> list[list[str]]:
    """The lines of each of the ``count`` rows of a printed runs table. A row starts with
    a backend name in the backend column (a backend never wraps, so a row's other lines
    are blank there); the last row ends where the notes under the table begin."""
    header = next(i for i, line in enumerate(lines) if "backend" in line)
    col = lines[header].index("backend")
    rule = next(i for i, line in enumerate(lines) if line.startswith("─"))
    starts = [i for i in range(rule + 1, len(lines)) if lines[i][col:].split(" ", 1)[0] in backends][:count]
    assert len(starts) == count, lines
    last = starts[-1] + 1
    while last < len(lines) and not lines[last].startswith(AFTER_TABLE):
        last += 1
    return [lines[a:b] for a, b in zip(starts, starts[1:] + [last])]


# --- the runs table (run, compare) ------------------------------------------------------------

@pytest.mark.parametrize("width", WIDTHS)
def test_runs_table_fits(records, width):
    out = runs_table(records, "taskrace compare (median of 1)", width)
    heights = assert_table_fits(out.table, width)
    assert len(heights) == len(records)
    headers = [c.header for c in out.table.columns]
    for name in ("scenario", "backend", "n", "wall s", "verdict"):  # what is never left out
        assert name in headers, headers
    # Every column with a value and not shown is named in a note, with how to get it.
    hidden = [c.header for c in COLUMNS if c.header not in headers
              and any(c.get(row) is not None for row in rows_of(records))]
    if hidden:
        assert any(n.startswith("more columns: " + ", ".join(hidden)) and "--wide" in n for n in out.notes), out.notes


@pytest.mark.parametrize("width", WIDTHS)
def test_printed_runs_rows_take_at_most_two_lines(records, width):
    """The same, read off the printed text: each record's row starts with its backend,
    holds its wall time, and the next row starts at most two lines below."""
    console = _console(width)
    print_runs(records, "taskrace compare (median of 1)", console)
    text = console.file.getvalue()
    assert_fits(text, width)
    rows = table_rows(text.splitlines(), {r["backend"] for r in records}, len(records))
    for r, lines in zip(records, rows):
        assert len(lines) <= 2, lines
        row = " ".join(lines)
        assert r["backend"] in row and seconds(r["wall_s"]) in row, (r["backend"], row)


def test_long_labels_and_verdicts_are_whole_somewhere(records):
    """The sweep's label and the bank's verdict are shortened or wrapped in the table,
    never cut: the short verdict in the cell, the key under the table, the full text in
    markdown; a real failure's expected/actual in a numbered note."""
    out = runs_table(records, "t", 80)
    console = _console(80)
    console.print(out.table)
    text = console.file.getvalue()
    assert "mapreduce" in text and "chunksize=2000" in text and "chunksize=20000" in text
    for r in records:
        d = r["verdict"]["details"]
        if r["scenario"] == "bank" and r["backend"] != "sequential":
            short = f"{d['violating_trials']}/{d['trials']} viol., {d['lost_updates']} lost"
            assert short.split()[0] in text and f"{d['lost_updates']} lost" in text
    assert any(n.startswith("viol. = trials") for n in out.notes)
    failure = [n for n in out.notes if n.startswith("[1] power-io on threads -n 2:")]
    assert failure and "actual 1 results" in failure[0], out.notes
    assert "FAIL [1]" in text
    md = markdown(records)
    for r in records:
        assert verdict_full(r) in md


def test_wide_and_columns(records):
    """--wide: every column with a value, even past the terminal's width (never cut);
    --columns: exactly those, in that order."""
    out = runs_table(records, "t", 80, wide=True)
    assert [c.header for c in out.table.columns] == [c.header for c in COLUMNS]
    console = _console(80)
    print_runs(records, "t", console, wide=True)
    assert "…" not in console.file.getvalue()
    picked = [BY_KEY[k] for k in ("backend", "threads", "wall_s")]
    out = runs_table(records, "t", 80, columns=picked)
    assert [c.header for c in out.table.columns] == ["backend", "threads", "wall s"]
    assert_table_fits(out.table, 80)


def test_a_wider_terminal_gets_more_columns(records):
    shown = {w: len(runs_table(records, "t", w).table.columns) for w in (80, 160)}
    assert shown[160] == len(COLUMNS) > shown[80]


# --- markdown, CSV, JSON ------------------------------------------------------------------------

def _md_cells(line: str) -> list[str]:
    assert line.startswith("| ") and line.endswith(" |"), line
    return [c.replace("\\|", "|").strip() for c in re.split(r"(?<!\\)\|", line[1:-1])]


def test_markdown_carries_the_records(records):
    lines = markdown(records).splitlines()
    header = _md_cells(lines[0])
    assert header[:4] == ["scenario", "backend", "n", "wall s"] and header[-1] == "verdict"
    assert re.fullmatch(r"\|(:--|--:|:-:)(\|(:--|--:|:-:))*\|", lines[1]), lines[1]
    rows = [dict(zip(header, _md_cells(line))) for line in lines[2:]]
    assert len(rows) == len(records)
    for r, row in zip(records, rows):
        assert row["backend"] == r["backend"] and row["n"] == str(r["workers"])
        # The terminal's rounding (three decimals, or three significant digits under 0.1 s):
        assert row["wall s"] == seconds(r["wall_s"])
        assert abs(float(row["wall s"]) - r["wall_s"]) <= max(5e-4, r["wall_s"] * 5e-3) + 1e-12
        assert row["verdict"] == verdict_full(r)
        assert row["= seq"] == {True: "yes", False: "no", None: "-"}[r.get("agrees_with_sequential")]
        if r.get("speedup") is not None:
            assert abs(float(row["speedup"]) - r["speedup"]) <= 0.005 + 1e-12


def test_csv_carries_the_records_unrounded(records):
    rows = list(csv.DictReader(io.StringIO(csv_text(records))))
    assert len(rows) == len(records)
    assert list(rows[0]) == [c.key for c in COLUMNS]
    for r, row in zip(records, rows):
        m = r["metrics"]
        assert row["backend"] == r["backend"] and int(row["n"]) == r["workers"]
        assert float(row["wall_s"]) == r["wall_s"]
        assert float(row["tasks_per_s"]) == r["throughput_per_s"]
        assert float(row["speedup"]) == r["speedup"] and float(row["efficiency"]) == r["efficiency"]
        assert row["cpu_percent"] == ("" if m["cpu_percent"] is None else str(m["cpu_percent"]))
        assert float(row["peak_rss_mb"]) == round(m["peak_rss_bytes"] / 2**20, 1)
        assert int(row["procs"]) == m["os_processes"] and int(row["threads"]) == m["threads"]
        assert row["agrees"] == {True: "true", False: "false", None: ""}[r["agrees_with_sequential"]]
        assert row["verdict"] == verdict_full(r)
    assert {row["scenario"] for row in rows} >= {"mapreduce chunksize=2000", "bank none", "globals store=shared"}


# --- compare a.json b.json, bench, cluster status ----------------------------------------------

@pytest.mark.parametrize("width", WIDTHS)
def test_diff_table_fits(records, width):
    records = records[:-1]  # the deliberately wrong copy would be a second point with the same key
    a = document(records)
    b = copy.deepcopy(a)
    for r in b["runs"]:  # three repeats each, B slower: every cell has a range to show
        r["wall_s"] *= 3
        r["wall"] = {"median": r["wall_s"], "min": r["wall_s"] * 0.9, "max": r["wall_s"] * 1.1, "n": 3}
    b["runs"][0]["verdict"]["ok"] = not a["runs"][0]["verdict"]["ok"]
    tables, text = printed_tables(lambda console: diff.print_diff(a, b, console), width)
    assert len(tables) == 1
    assert len(assert_table_fits(tables[0], width)) == len(records)
    assert_fits(text, width)
    assert "mapreduce" in text and "chunksize=2000" in text and "chunksize=20000" in text
    assert f"{len(records)} points in both files; {len(records)} changed beyond the spread" in text
    assert "verdict changed on 1 point:" in text and "+200.0%" in text


def _spread(median, lo, hi):
    return {"median": median, "min": lo, "max": hi, "samples": [lo, median, hi]}


def bench_result() -> dict:
    """A bench document as bench.main builds it, with the widest figures it plausibly
    prints: 16 workers, three repeats, slow tiers, fast chunked Celery."""
    local = {name: {"baseline": base, "workers": n, "harness_s": _spread(12.345, 11.987, 13.456),
                    "baseline_s": _spread(11.111, 10.987, 12.345), "tax": 0.1111,
                    "tax_per_repeat": _spread(0.11, -0.0456, 0.2351), "goal_max": 0.05, "met": False}
             for name, base, n in (("sequential", "plain loop", 1), ("threads", "ThreadPoolExecutor(16).map", 16),
                                   ("processes", "forkserver Pool(16).starmap(chunksize=1)", 16))}
    loads = {name: {"function": "scenarios.mapreduce:sum_of_powers", "chunk": chunk, "tasks": tasks,
                    "harness_s": _spread(2.3456, 2.2351, 2.4567), "plain_s": _spread(2.0101, 1.9876, 2.1054),
                    "harness_rate_per_s": 42631.4, "plain_rate_per_s": 49748.8, "harness_per_task_s": 0.0012345,
                    "plain_per_task_s": 0.000201, "tax": 1.2345, "tax_per_repeat": _spread(1.2, -0.512, 2.501),
                    "goal_max": 0.2, "met": False}
             for name, chunk, tasks in (("noop", 1, 1000), ("tiny", 1, 1000), ("tiny_chunked", 100, 10000))}
    return {"settings": {"repeat": 3, "quick": False, "power_params": {"tasks": 128, "size": 40000, "exponent": 30000}},
            "environment": {"cpus_usable": 16},
            "speedup": {"workers": 16, "sequential_s": _spread(123.456, 120.001, 130.999),
                        "processes_s": _spread(12.345, 11.987, 13.456), "ratio": 10.0,
                        "ratio_per_repeat": _spread(10.0, 9.12, 11.34), "goal_min": 1.9, "met": True,
                        "stdlib_ratio": 10.52, "processes_cpu_percent": _spread(1590.0, 1501.2, 1599.9)},
            "cpu_capacity": {"before": {"capacity": 15.55, "cpus": 16}, "after": {"capacity": 11.02, "cpus": 16}},
            "local_tax": local,
            "celery": {"workers": 16, "tasks": 1000, "chunk": 100, "tier": {"pool": "prefork", "prefetch_multiplier": 1},
                       "workloads": loads, "redis_round_trip_s": _spread(0.000251, 0.000240, 0.000263),
                       "ratios": {"noop_per_task_vs_redis_rtt": 8.61, "tiny_per_task_vs_redis_rtt": 9.2,
                                  "tiny_chunked_per_task_vs_redis_rtt": 0.19, "chunk_gain": 45.2,
                                  "chunk_gain_plain": 44.1, "chunk_gain_goal_min": 10.0, "chunk_gain_met": True}}}


@pytest.mark.parametrize("width", WIDTHS)
def test_bench_tables_fit(width):
    tables, text = printed_tables(lambda console: bench.print_report(bench_result(), console), width)
    assert len(tables) == 4  # speedup, local tax, celery, the Redis floor
    for table in tables:
        assert_table_fits(table, width)
    assert_fits(text, width)
    cells = {c.plain if isinstance(c, Text) else c for t in tables for col in t.columns for c in col.cells}
    for figure in ("123.456 s (120.001–130.999)", "10.00x (9.12–11.34)", "+11.1 % (-4.6 to +23.5)", "42,631",
                   "45.2x", "2346 (2235–2457)"):
        assert figure in cells, figure
    assert "forkserver Pool(16).starmap(chunksize=1)" in " ".join(text.split())  # the stdlib code, under table 2


def _container(i: int, running: bool = True) -> dict:
    procs = [{"pid": 4190000 + k, "cpu_percent": "99.9", "rss_kb": 123456,
              "command": "/opt/taskrace/bin/python3 -m celery -A workers.celery_app worker --pool prefork"}
             for k in range(2)] if running else []
    return {"name": f"taskrace-lab-project-worker-{i}", "id": "0123456789ab", "number": i,
            "status": "running" if running else "exited", "node": "worker@0123456789ab", "processes": procs,
            "cpu_percent": 199.5 if running else None, "memory_bytes": 1234 * 2**20 if running else None,
            "memory_limit_bytes": None}


@pytest.mark.parametrize("width", WIDTHS)
def test_cluster_status_tables_fit(width):
    rows = [_container(1), _container(2), _container(3, running=False)]
    tables, text = printed_tables(lambda console: cluster.print_status(rows, "taskrace-lab-project", console), width)
    assert len(tables) == 2
    for table in tables:
        assert_table_fits(table, width)
    assert_fits(text, width)
    flat = " ".join(text.split())
    assert "taskrace-lab-project-worker-1" in flat and "worker@0123456789ab" in flat
    assert "python3 -m celery worker" in flat and "2 running of 3 worker containers" in text


# --- the command line: COLUMNS=80, stdout a pipe ---------------------------------------------------

def cli80(*args: str) -> subprocess.CompletedProcess:
    """``python -m taskrace ARGS`` with stdout a pipe (not a terminal) and COLUMNS=80."""
    env = dict(os.environ, COLUMNS="80", PYTHONUNBUFFERED="1")
    env.pop("FORCE_COLOR", None)
    return subprocess.run([sys.executable, "-m", "taskrace", *args], capture_output=True, text=True,
                          timeout=CLI_TIMEOUT, cwd=REPO_ROOT, env=env)


BANK_NONE = ["run", "bank", "-b", "threads", "-n", "2", "--strategy", "none", "--trials", "2",
             "--steps", "50", "--delay", "0.002"]


@pytest.mark.parametrize("argv", [["run", "power-io", "-b", "threads", "-n", "2", "--sleep", "0"], BANK_NONE,
                                  ["run", "power-cpu", "-b", "processes", "-n", "2", "--tasks", "2", "--size", "200",
                                   "--exponent", "200"]], ids=["power-io", "bank-none", "power-cpu"])
def test_run_at_80_columns_in_a_pipe(tmp_path, argv):
    out = tmp_path / "run.json"
    proc = cli80(*argv, "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    record = json.loads(out.read_text())["runs"][0]
    assert_fits(proc.stdout, 80)
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"taskrace run {argv[1]}")
    (row,) = table_rows(lines, {record["backend"]}, 1)
    assert len(row) <= 2, row
    for value in (record["backend"], str(record["workers"]), seconds(record["wall_s"])):
        assert value in row[0], (value, row)
    assert "expected:" in proc.stdout  # the details follow the table
    assert "wall s" in proc.stdout and "verdict" in proc.stdout


def test_run_format_csv_and_markdown_put_only_data_on_stdout():
    proc = cli80(*BANK_NONE, "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == 1 and rows[0]["scenario"] == "bank none" and rows[0]["backend"] == "threads"
    assert rows[0]["verdict"].endswith("lost updates")
    assert "expected:" in proc.stderr and "expected:" not in proc.stdout  # the details are notes
    proc = cli80("run", "power-io", "-b", "threads", "-n", "2", "--sleep", "0", "--format", "markdown",
                 "--columns", "backend,n,verdict")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["| backend | n | verdict |", "|:--|--:|:--|", "| threads | 2 | ok |"]


def test_run_format_json_is_the_json_file(tmp_path):
    out = tmp_path / "run.json"
    proc = cli80("run", "globals", "-b", "threads", "-n", "2", "--format", "json", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    doc, written = json.loads(proc.stdout), json.loads(out.read_text())
    assert doc["schema"] == written["schema"] == "taskrace.results/1"
    assert doc["runs"] == written["runs"] and len(doc["runs"]) == 1
    assert doc["runs"][0]["scenario"] == "globals"


def test_compare_format_csv(tmp_path):
    out = tmp_path / "c.json"
    proc = cli80("compare", "--scenario", "power-io", "--backend", "threads", "-n", "2", "--repeat", "1",
                 "--warmup", "0", "--set", "power-io.sleep=0", "--format", "csv", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(out.read_text())["runs"]
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [(r["backend"], int(r["n"]), float(r["wall_s"])) for r in rows] == [
        (r["backend"], r["workers"], r["wall_s"]) for r in runs]
    assert "results: 2 points written" in proc.stderr


@pytest.mark.parametrize("argv", [["run", "power-io", "--columns", "nope"],
                                  ["run", "power-io", "--wide", "--columns", "n"],
                                  ["run", "power-io", "--format", "xml"],
                                  ["compare", "--scenario", "power-io", "--columns", "wall_s,bogus"]],
                         ids=["unknown-column", "wide-and-columns", "unknown-format", "compare-unknown-column"])
def test_bad_output_options_are_one_line_and_exit_2(argv):
    proc = cli80(*argv)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = stderr_lines(proc)
    assert len(lines) == 1 and lines[0].startswith("taskrace: error:"), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    if "nope" in argv or "wall_s,bogus" in argv:
        assert "choose from: scenario, backend, n, wall_s" in lines[0]


def test_a_note_says_where_the_lab_rows_resource_figures_come_from():
    """In the lab the celery rows' CPU %, RSS and procs are the worker nodes' own; the
    table must say so (and say nothing when every row is the harness's process tree)."""
    from taskrace.reporting.report import source_notes

    lab = [{"backend": "threads", "metrics": {"source": "harness process tree"}},
           {"backend": "celery", "metrics": {"source": "worker nodes (2)"}},
           {"backend": "celery", "metrics": {"source": "worker nodes (2)"}}]
    notes = source_notes(lab)
    assert len(notes) == 1 and "celery: worker nodes (2)" in notes[0] and "harness process tree" in notes[0]
    assert source_notes([lab[0], {"backend": "processes", "metrics": {}}]) == []
