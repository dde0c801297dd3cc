"""The command line: parse, call the library, print. Each command is one handler in
``COMMANDS``; what a command does lives in the library (``taskrace.measuring.matrix``, the fault
lab, the network study, ...), which ``taskrace.run(...)`` and friends call too.

Bad input of any kind ends in one line on stderr and exit code 2, before any worker
starts (``--dry-run`` stops right there and prints the plan). Ctrl-C stops every worker
this run started, then exits 130. ``--events FILE`` writes the run's event stream
(``taskrace.events``) as JSON lines, whatever the command.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading

from rich.console import Console
from rich.markup import escape

from scenarios import SCENARIOS, get_scenario
from taskrace.errors import BAD_INPUT
from taskrace.eventlog import open_sink
from taskrace.measuring.matrix import EXIT_FAILED, EXIT_OK, exit_code  # noqa: F401 - exit_code: tests read it here
from taskrace.options import UsageError, check_writable, tier_options
from taskrace.parser import build_parser
from taskrace.progress import ProgressBar
from taskrace.reporting.columns import select as select_columns
from taskrace.reporting.report import csv_text, markdown, print_details, print_runs
from taskrace.reporting.results import document, write_json
from workers import TIERS, MissingDependency, get_tier, load
from workers.base import TierFailure
from workers.infra.redact import redact_text

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130
# Every command: name -> "module:handler(args, console) -> exit code". One table, one
# dispatch; a handler is imported only when its command runs.
COMMANDS = {"list": "taskrace.cli:cmd_list",
            "run": "taskrace.cli:cmd_run",
            "compare": "taskrace.cli:cmd_compare",
            "report": "taskrace.cli:cmd_report",
            "bench": "taskrace.measuring.bench:main",
            "knobs": "taskrace.measuring.knobs:cmd_knobs",
            "faults": "taskrace.faultlab.cli:cmd_faults",
            "live": "taskrace.live.cli:cmd_live",
            "network": "taskrace.netstudy.cli:cmd_network",
            "cluster": "taskrace.lab.cluster:cmd_cluster",
            "worker": "taskrace.lab.join:cmd_worker",
            "host": "taskrace.lab.hosts:cmd_host",
            "exercise": "taskrace.grading.cli:cmd_exercise",
            "grade": "taskrace.grading.cli:cmd_grade"}


def cmd_list(args, console: Console) -> int:
    from rich.table import Table

    from scenarios.bank import STRATEGIES

    def section(title: str):
        # name | text, the text wrapping under itself: reads at 80 columns and in a log
        grid = Table.grid(padding=(0, 1), pad_edge=False)
        grid.title, grid.title_justify, grid.title_style = title, "left", "bold"
        grid.add_column(width=1)
        grid.add_column(no_wrap=True)
        grid.add_column()
        return grid

    scenarios = section("scenarios")
    for name in SCENARIOS:
        cls = get_scenario(name)
        scenarios.add_row("", name, escape(cls.summary))
        for p in cls.params:
            scenarios.add_row("", "", f"[dim]{p.flag} (default {p.default}): {escape(p.help)}[/]")
    backends = section("backends")
    for name in TIERS:
        try:
            cls = get_tier(name)
            backends.add_row("", name, escape(cls.summary))
            for o in cls.cli_options:
                default = f" (default {o.default})" if o.default is not None else ""
                backends.add_row("", "", f"[dim]{o.flag}{default}: {escape(o.help)}[/]")
        except MissingDependency as exc:
            backends.add_row("", name, f"[red]unavailable[/]: {escape(str(exc))}")
    strategies = section("bank strategies")
    for name, text in STRATEGIES.items():
        strategies.add_row("", name, escape(text))
    for grid in (scenarios, backends, strategies):
        console.print(grid, highlight=False)
    return EXIT_OK


def cmd_run(args, console: Console) -> int:
    from taskrace.measuring.matrix import execute_run, plan_run

    plan = plan_run(args)
    check_writable(args.json, args.history)
    columns = _columns(args)
    if args.dry_run:
        console.print(f"taskrace run {args.scenario}: would run it once on {args.backend} -n {plan.tier.workers}",
                      markup=False, highlight=False, soft_wrap=True)
        _print_settings(console, plan.scenario.p, plan.options)
        return EXIT_OK
    history: list | None = [] if args.history else None
    err = Console(stderr=True)
    with ProgressBar(err):
        record = execute_run(plan, history)
    notes = show([record], args, columns, console, err, title=f"taskrace run {args.scenario}",
                 doc=lambda: document([record]))
    print_details(record, notes)
    print_deaths([record], err)
    if args.json:
        write_json(args.json, [record])
    if history is not None:
        with open(args.history, "w") as fh:
            fh.writelines(json.dumps(line) + "\n" for line in history)
        notes.print(f"history: {len(history)} operations written to {args.history}")
    return exit_code([record], args.expect_safe)


def print_deaths(records: list[dict], err: Console) -> None:
    """One line on stderr per point where a worker died: what was lost (or that nothing
    was), and the delivery mode that would have kept it."""
    for r in records:
        for incident in (r.get("tier") or {}).get("dead_workers") or []:
            text = f"a worker died: {incident['verdict']} under --delivery {incident['mode']}"
            if incident.get("would_have_saved"):
                text += f"; --delivery {incident['would_have_saved']} would have kept them"
            err.print(f"taskrace: {r['scenario']} on {r['backend']} -n {r['workers']}: {text}",
                      markup=False, highlight=False, soft_wrap=True)


def _print_settings(console: Console, params: dict, options: dict, indent: str = "  ") -> None:
    """A plan's settings, one line each: scenario options, then tier options (redacted:
    a --redis-url may carry a password)."""
    for label, values in (("options", params), ("tier", options)):
        if values:
            text = " ".join(f"{k.replace('_', '-')}={getattr(v, '__name__', v)}" for k, v in values.items())
            console.print(f"{indent}{label}: {redact_text(text)}", markup=False, highlight=False, soft_wrap=True)


def _columns(args) -> list | None:
    """--columns, checked before any work starts."""
    if not getattr(args, "columns", None):
        return None
    try:
        return select_columns(args.columns)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def show(records: list[dict], args, columns, console: Console, err: Console, title: str, doc) -> Console:
    """The records on stdout in --format; returns where the notes go. A table is for a
    person, so its notes follow it on stdout; markdown, csv and json are data for a file
    or a program (hyperfine's --export-*, pyperf's --table-format=md), so stdout holds
    nothing else and the notes go to stderr."""
    if args.format == "table":
        print_runs(records, title=title, console=console, columns=columns, wide=args.wide)
        return console
    if args.format == "json":
        text = json.dumps(doc(), indent=1, default=str) + "\n"  # what --json FILE writes
    else:
        text = (markdown if args.format == "markdown" else csv_text)(records, columns)
    sys.stdout.write(text)
    sys.stdout.flush()
    return err


def print_plan(points: list, args, console: Console) -> None:
    """What compare would run, point by point, with the options each point sets."""
    from taskrace.measuring import sweep

    console.print(f"taskrace compare: would run {len(points)} points, each {args.warmup} warm-up + "
                  f"{args.repeat} measured runs ({len(points) * (args.warmup + args.repeat)} runs)",
                  markup=False, highlight=False, soft_wrap=True)
    for point in points:
        params = " ".join(f"{k.replace('_', '-')}={v}" for k, v in point.params.items() if k != "strategy")
        console.print(f"  {point.label}{'  ' + params if params else ''}", markup=False, highlight=False,
                      soft_wrap=True)
    _print_settings(console, {}, tier_options(args))
    for line in sweep.notes(points):
        console.print(line, markup=False, highlight=False)


def cmd_compare(args, console: Console) -> int:
    from taskrace.measuring import sweep
    from taskrace.measuring.capacity import describe as describe_capacity
    from taskrace.measuring.matrix import compare_exit_code, execute_compare, plan_compare

    if args.files:
        return _diff(args, console)
    points = plan_compare(args)
    check_writable(args.json)
    columns = _columns(args)
    if args.dry_run:
        print_plan(points, args, console)
        return EXIT_OK
    err = Console(stderr=True)
    with ProgressBar(err, disable=args.no_progress), _points_file(args.json):
        records, fits, capacity = execute_compare(points, args)
    notes = show(records, args, columns, console, err, title=f"taskrace compare (median of {args.repeat})",
                 doc=lambda: document(records, fits=fits, capacity=capacity))
    for line in sweep.notes(records):
        notes.print(line, style="dim", markup=False, highlight=False)
    if capacity:
        notes.print(describe_capacity(capacity))
    if args.json:
        write_json(args.json, records, fits=fits, capacity=capacity)
        notes.print(f"results: {len(records)} points written to {args.json}")
    if args.report:
        from taskrace.reporting.html_report import write_report

        written = write_report(document(records, fits=fits, capacity=capacity), args.report)
        notes.print(f"report: {written}")
    print_deaths(records, err)
    for r in records:
        if r["verdict"]["details"].get("failed_in") == "warm-up":
            console.print(f"[red]{r['scenario']} on {r['backend']} -n {r['workers']}: "
                          f"{r['verdict']['details']['note']}[/]")
    for r in records:
        if r.get("agrees_with_sequential") is False:
            notes.print(f"[red]{r['scenario']} on {r['backend']} -n {r['workers']} disagrees with sequential[/]")
    return compare_exit_code(records, args.expect_safe)


def _points_file(path: str | None):
    """--json written as each point ends (taskrace.reporting.results.ResultsWriter)."""
    from contextlib import nullcontext

    from taskrace.reporting.results import ResultsWriter

    return ResultsWriter(path) if path else nullcontext()


def _diff(args, console: Console) -> int:
    """compare a.json b.json: what changed from one results file to the other."""
    from taskrace.reporting.diff import print_diff
    from taskrace.reporting.results import load_json

    if len(args.files) != 2:
        raise UsageError("compare takes two results files to diff (a.json b.json), or none")
    if args.format != "table" or args.wide or args.columns:
        raise UsageError("--format, --wide and --columns shape the results of a run; "
                         "compare a.json b.json prints its table only")
    if args.dry_run:
        console.print(f"taskrace compare: would print what changed from {args.files[0]} to {args.files[1]}",
                      markup=False, highlight=False)
        return EXIT_OK
    return print_diff(load_json(args.files[0]), load_json(args.files[1]), console)


def cmd_report(args, console: Console) -> int:
    from taskrace.schemas import load_document, write_report

    kind, doc = load_document(args.results)
    try:
        written = write_report(kind, doc, args.output)
    except OSError as exc:
        raise UsageError(f"cannot write the report to {args.output}: {exc.strerror or exc}") from None
    console.print(f"report: {written}")
    return EXIT_OK


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt  # same clean-up path as Ctrl-C (docker stop sends SIGTERM)


def dispatch(args, console: Console) -> int:
    """The command's handler, with what listens to its events around it: the event log
    (--events FILE, or a Redis URL for the lab's live service) and the live view (--live)."""
    handler = load(COMMANDS, "command", args.command)
    if getattr(args, "dry_run", False):
        return handler(args, console)
    with contextlib.ExitStack() as listening:
        path = getattr(args, "events", None)
        if path:
            listening.enter_context(open_sink(path))
        if getattr(args, "live", None) is not None:
            from taskrace import live

            listening.enter_context(live.watching(args.live, args.live_bind, title=f"taskrace {args.command}"))
        return handler(args, console)


def main(argv: list[str] | None = None) -> int:
    console = Console()
    err = Console(stderr=True)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise UsageError(f"choose a command: {', '.join(COMMANDS)} (taskrace -h for help)")
        if getattr(args, "unavailable", None):
            raise UsageError(f"taskrace {args.command}: {args.unavailable}")
        return dispatch(args, console)
    except BAD_INPUT as exc:
        err.print(f"taskrace: error: {redact_text(str(exc))}", markup=False, highlight=False, soft_wrap=True)
        return EXIT_USAGE
    except TierFailure as exc:
        err.print(f"taskrace: failed: {redact_text(str(exc))}", markup=False, highlight=False, soft_wrap=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        err.print("taskrace: interrupted; every worker this run started has been stopped",
                  markup=False, highlight=False)
        if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
            # Threads still running a task cannot be stopped, and Python would wait for
            # them at exit: leave now (only threads of this process are left behind).
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
