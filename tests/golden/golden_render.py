"""Render the stored documents in tests/golden with whatever taskrace is importable:
every terminal table, markdown, CSV, JSON and report page the commands make of them.

    python3 tests/golden/golden_render.py OUT_DIR     # writes one file per rendering

The golden files beside this script were rendered by the code before the library face
and the event stream (commit 449a007); test_golden.py renders the same documents with
today's code and asks for the same bytes as that code renders them today (it checks
449a007 out of git to do so, so a newer rich or matplotlib moves both sides alike), or,
without git history, as expected/ holds them. Report pages are compared without their
charts (the inlined images) and without the time a page was drawn.
"""
from __future__ import annotations

import importlib
import io
import json
import os
import re
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def _first(*names):
    """The first of these modules that imports (the fault lab and the network study
    moved between versions)."""
    import taskrace

    # only a module of the same tree as the taskrace package imported: an editable install's
    # finder may hand out today's modules beside an older tree on PYTHONPATH
    root = os.path.dirname(os.path.dirname(os.path.abspath(taskrace.__file__))) + os.sep
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if os.path.abspath(module.__file__).startswith(root):
            return module
    raise ImportError(names)


def _console(width: int = 80):
    from rich.console import Console

    buf = io.StringIO()
    return buf, Console(file=buf, width=width, force_terminal=False, force_jupyter=False, color_system=None)


def _page(html: str) -> str:
    html = re.sub(r"<figure.*?</figure>", "<figure/>", html, flags=re.S)
    html = re.sub(r"<svg.*?</svg>", "<svg/>", html, flags=re.S)
    html = re.sub(r'src="data:[^"]*"', 'src=""', html)
    return re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", "TIME", html)


def _report(write_report, doc: dict) -> str:
    with tempfile.TemporaryDirectory() as out:
        path = write_report(doc, out)
        with open(path, encoding="utf-8") as fh:
            return _page(fh.read())


def render_all() -> dict[str, str]:
    html_report = _first("taskrace.reporting.html_report", "taskrace.html_report")
    sweep = _first("taskrace.measuring.sweep", "taskrace.sweep")
    describe = _first("taskrace.measuring.capacity", "taskrace.capacity").describe
    report = _first("taskrace.reporting.report", "taskrace.report")
    csv_text, markdown, print_details, print_runs = report.csv_text, report.markdown, report.print_details, report.print_runs
    results = _first("taskrace.reporting.results", "taskrace.results")
    document, load_json = results.document, results.load_json

    out: dict[str, str] = {}
    doc = load_json(os.path.join(HERE, "compare.json"))
    runs = doc["runs"]
    for width in (80, 200):
        buf, console = _console(width)
        print_runs(runs, title="taskrace compare (median of 2)", console=console)
        for line in sweep.notes(runs):
            console.print(line, style="dim", markup=False, highlight=False)
        if doc["environment"].get("cpu_capacity"):
            console.print(describe(doc["environment"]["cpu_capacity"]))
        out[f"compare.table{width}.txt"] = buf.getvalue()
    buf, console = _console(80)
    print_runs(runs, title="wide", console=console, wide=True)
    out["compare.wide.txt"] = buf.getvalue()
    buf, console = _console(80)
    print_details(runs[-1], console)
    out["compare.details.txt"] = buf.getvalue()
    out["compare.md"] = markdown(runs)
    out["compare.csv"] = csv_text(runs)
    again = document(runs, fits=doc["fits"], capacity=doc["environment"].get("cpu_capacity"))
    out["compare.json"] = json.dumps({k: again[k] for k in ("schema", "runs", "fits")}, indent=1, sort_keys=True)
    out["compare.html"] = _report(html_report.write_report, doc)

    faults_cli = _first("taskrace.faultlab.cli", "taskrace.faults.cli")
    faults_report = _first("taskrace.faultlab.report", "taskrace.faults.report")
    fdoc = faults_report.load_faults(os.path.join(HERE, "faults.json"))
    buf, console = _console(80)
    faults_cli.print_faults(fdoc["runs"], console)
    out["faults.txt"] = buf.getvalue()
    out["faults.html"] = _report(faults_report.write_report, fdoc)

    study_doc = _first("taskrace.netstudy.document", "taskrace.network")
    study_print = _first("taskrace.netstudy.printing", "taskrace.network")
    study_report = _first("taskrace.netstudy.report", "taskrace.network_report")
    ndoc = study_doc.load_network(os.path.join(HERE, "network.json"))
    buf, console = _console(80)
    study_print.print_all(ndoc, console)
    out["network.txt"] = buf.getvalue()
    out["network.html"] = _report(study_report.write_report, ndoc)
    return out


if __name__ == "__main__":
    target = sys.argv[1]
    os.makedirs(target, exist_ok=True)
    for name, text in render_all().items():
        with open(os.path.join(target, name), "w", encoding="utf-8") as fh:
            fh.write(text)
    import taskrace

    print(f"{len(render_all())} renderings written to {target} by the taskrace in "
          f"{os.path.dirname(os.path.dirname(os.path.abspath(taskrace.__file__)))}")
