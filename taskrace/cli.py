"""The command line: ``taskrace list | run | compare | network | report | bench | faults | cluster |
worker | host``.

Bad input of any kind ends in one line on stderr and exit code 2, before any worker
starts (``--dry-run`` stops right there and prints the plan). Ctrl-C stops every worker
this run started, then exits 130. The options run and compare share are built in one
place, ``taskrace.options``, from the scenario and tier registries.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from scenarios import SCENARIOS, get_scenario
from scenarios.base import BadInput
from taskrace import __version__
from taskrace.capacity import describe as describe_capacity, measure_capacity, usable_cpus
from taskrace.columns import BY_KEY as COLUMN_KEYS, select as select_columns
from taskrace.options import (Parser, UsageError, add_scenario_options, add_shared, add_tier_options,
                              flag_items, parse_sets, tier_options)
from taskrace.report import FORMATS, csv_text, markdown, print_details, print_runs
from taskrace.results import BadResults, document, write_json
from taskrace.runner import prepare, run_one
from workers import TIERS, MissingDependency, UnknownChoice, available_tiers, get_tier, load
from workers.base import TierFailure
from workers.redact import redact_text
from workers.redis_server import RedisUnavailable

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# Commands whose parsers live with their code, as "module:function(subparsers)".
COMMANDS_ELSEWHERE = {"cluster": "taskrace.cluster:add_cluster_parser",
                      "faults": "taskrace.faults.cli:add_faults_parser",
                      "network": "taskrace.network:add_network_parser",
                      # joining from other hosts: a worker elsewhere, and hosts in network namespaces
                      "worker": "taskrace.join:add_worker_parser",
                      "host": "workers.netns:add_host_parser"}

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


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _names(text: str, registry, kind: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    for name in names:
        if name not in registry:
            raise UsageError(f"unknown {kind} {name!r}; choose from: {', '.join(registry)}")
    return names


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """What run and compare share besides add_shared: the tiers' options and the output."""
    add_tier_options(p)
    p.add_argument("--json", metavar="FILE", help="write the results here (JSON)")
    p.add_argument("--seed", type=int, default=0, help="seed for generated work (default 0)")
    p.add_argument("--expect-safe", action="store_true",
                   help="exit 1 if any invariant is violated, even by an unsafe strategy")


def _add_output_options(p: argparse.ArgumentParser) -> None:
    """How run and compare print their records: data on stdout, in one of FORMATS."""
    out = p.add_argument_group("output")
    out.add_argument("--format", choices=FORMATS, default="table",
                     help="stdout gets a table for people (default), markdown, csv, or json (the --json "
                          "document); with markdown, csv or json, progress and notes go to stderr")
    which = out.add_mutually_exclusive_group()
    which.add_argument("--wide", action="store_true",
                       help="every column, however wide the terminal (default: what fits)")
    which.add_argument("--columns", metavar="A,B,...",
                       help=f"these columns in this order, for the table, markdown and csv: {', '.join(COLUMN_KEYS)}")


def build_parser() -> Parser:
    parser = Parser(prog="taskrace", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"taskrace {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    sub.add_parser("list", help="scenarios, backends and bank strategies")

    run = sub.add_parser("run", help="one scenario on one backend")
    run.add_argument("scenario", metavar="SCENARIO", help=f"one of: {', '.join(SCENARIOS)}")
    add_shared(run, many=False)
    run.add_argument("--history", metavar="FILE", help="bank: write every operation (JSON lines)")
    add_scenario_options(run)
    _add_run_options(run)
    _add_output_options(run)

    compare = sub.add_parser("compare", help="the matrix: scenarios x backends x workers")
    compare.add_argument("--scenario", default=",".join(SCENARIOS), metavar="A,B,...",
                         help="scenarios, comma list (default: every scenario)")
    add_shared(compare, many=True)
    compare.add_argument("--strategy", default=None, help="bank strategies, comma list "
                         "(default: all a backend offers)")
    compare.add_argument("files", nargs="*", metavar="RESULTS.json",
                         help="two results files: print their differences instead of running")
    compare.add_argument("--repeat", type=_int, default=3, help="measured runs per point (default 3)")
    compare.add_argument("--warmup", type=_int, default=1, help="discarded runs per point first (default 1)")
    compare.add_argument("--sweep", action="append", default=[], metavar="SCENARIO.OPTION=V1,V2",
                         help="vary a scenario option, e.g. mapreduce.chunksize=1000,100000")
    compare.add_argument("--chunksize", default=None, metavar="LIST", help="= --sweep mapreduce.chunksize=LIST")
    compare.add_argument("--task-size", default=None, metavar="LIST", help="= --sweep power-cpu.size=LIST")
    compare.add_argument("--report", metavar="DIR", help="write plots and an HTML report here")
    from taskrace.sweep import DEFAULT_SCALING, SCALINGS

    compare.add_argument("--scaling", choices=SCALINGS, default=DEFAULT_SCALING,
                         help="strong (default): the same work at every n, a task count you did not set "
                              "raised to the largest n; weak: tasks x n at each point (scaled speedup); "
                              "as-given: the options as they are (points with n > tasks task-starved)")
    compare.add_argument("--no-progress", action="store_true")
    # compare's own --strategy and --chunksize take comma lists, as a scenario flag does here
    add_scenario_options(compare, skip=("--strategy", "--chunksize"))
    _add_run_options(compare)
    _add_output_options(compare)

    report = sub.add_parser("report", help="plots (PNG, SVG) and one HTML page from a results file")
    report.add_argument("results", metavar="RESULTS.json", help="written by compare --json or run --json")
    report.add_argument("-o", "--output", metavar="DIR", default="./taskrace-report",
                        help="directory for the plots and index.html (default ./taskrace-report)")

    bench = sub.add_parser("bench", help="the harness measured against plain stdlib code")
    bench.add_argument("--repeat", type=_int, default=None,
                       help="runs per measurement; medians are reported (default 3, --quick: 1)")
    bench.add_argument("--json", metavar="FILE", help="write the raw numbers here (JSON)")
    bench.add_argument("--quick", action="store_true",
                       help="small work and one repeat: checks the bench works, numbers are rough")
    bench.add_argument("--skip-celery", action="store_true", help="local tiers only (no Redis needed)")
    bench.add_argument("--redis-url", default=None, help="broker for the celery section (default: "
                       "$REDIS_URL, else a private Redis started for the run)")
    for name in COMMANDS_ELSEWHERE:
        try:
            load(COMMANDS_ELSEWHERE, "command", name)(sub)
        except MissingDependency as exc:
            # Its module needs a package that is missing: the other commands still work,
            # and this one says what to install, in one line.
            stub = sub.add_parser(name, help=f"unavailable: {exc}", add_help=False, prefix_chars="\0")
            stub.add_argument("rest", nargs="*")  # whatever follows: no prefix_chars, no options
            stub.set_defaults(unavailable=str(exc))
    return parser


def cmd_list(console: Console) -> int:
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
    get_scenario(args.scenario)  # an unknown name: one line listing the scenarios
    sets, _ = flag_items(args, [args.scenario], run=args.scenario)
    params = parse_sets(sets + args.set, [args.scenario], run=args.scenario).get(args.scenario, {})
    _check_writable(args.json, args.history)
    columns = _columns(args)
    workers = args.workers if args.workers is not None else 1
    scenario, tier = prepare(args.scenario, params, args.backend, workers, tier_options(args), args.seed)
    if args.dry_run:
        console.print(f"taskrace run {args.scenario}: would run it once on {args.backend} -n {tier.workers}",
                      markup=False, highlight=False, soft_wrap=True)
        _print_settings(console, scenario.p, tier_options(args))
        return EXIT_OK
    history: list | None = [] if args.history else None
    err = Console(stderr=True)
    with err.status(f"running {args.scenario} on {args.backend} -n {workers}"):
        record = run_one(scenario, tier, history)
    notes = emit([record], args, columns, console, err, title=f"taskrace run {args.scenario}",
                 doc=lambda: document([record]))
    print_details(record, notes)
    if args.json:
        write_json(args.json, [record])
    if history is not None:
        with open(args.history, "w") as fh:
            fh.writelines(json.dumps(line) + "\n" for line in history)
        notes.print(f"history: {len(history)} operations written to {args.history}")
    return exit_code([record], args.expect_safe)


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


def emit(records: list[dict], args, columns, console: Console, err: Console, title: str, doc) -> Console:
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


def exit_code(records: list[dict], expect_safe: bool) -> int:
    """1 when a checker failed. A violation by an unsafe strategy is the lesson, not a
    failure, unless --expect-safe; a task that crashed is a failure either way."""
    for r in records:
        v = r["verdict"]
        if v["details"].get("errors") or (not v["ok"] and (expect_safe or not v["unsafe"])):
            return EXIT_FAILED
    return EXIT_OK


def _check_writable(*paths: str | None) -> None:
    """Refuse an output path that cannot be written before any work starts."""
    for path in paths:
        if path:
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                raise UsageError(f"cannot write {path}: folder {folder} does not exist")
            if not os.access(folder, os.W_OK):
                raise UsageError(f"cannot write {path}: folder {folder} is not writable")


def plan_compare(args) -> list:
    """Every point of the matrix, validated before anything starts."""
    from scenarios.bank import STRATEGIES
    from taskrace import sweep

    scenarios = _names(args.scenario, SCENARIOS, "scenario")
    # By default every backend that loads on this Python (`taskrace list` says why one does not).
    backends = _names(args.backend, TIERS, "backend") if args.backend else available_tiers()
    counts = args.workers or [os.cpu_count() or 2]
    flag_sets, flag_sweeps = flag_items(args, scenarios)
    sets = parse_sets(flag_sets + args.set, scenarios)
    sweeps = _parse_sweeps(args, flag_sweeps)
    for name, variants in COMPARE_SWEEPS.items():
        options = {opt for v in variants for opt in v}
        if name not in sweeps and not options & set(sets.get(name, {})):
            sweeps[name] = variants
    strategies = _names(args.strategy, STRATEGIES, "strategy") if args.strategy else None
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


def _parse_sweeps(args, more: list[str]) -> dict[str, list[dict]]:
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


def print_plan(points: list, args, console: Console) -> None:
    """What compare would run, point by point, with the options each point sets."""
    from taskrace import sweep

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
    from taskrace import sweep
    from taskrace.results import load_json

    if args.files:
        if len(args.files) != 2:
            raise UsageError("compare takes two results files to diff (a.json b.json), or none")
        if args.format != "table" or args.wide or args.columns:
            raise UsageError("--format, --wide and --columns shape the results of a run; "
                             "compare a.json b.json prints its table only")
        if args.dry_run:
            console.print(f"taskrace compare: would print what changed from {args.files[0]} to {args.files[1]}",
                          markup=False, highlight=False)
            return EXIT_OK
        from taskrace.diff import print_diff

        return print_diff(load_json(args.files[0]), load_json(args.files[1]), console)
    if args.repeat < 1 or args.warmup < 0:
        raise UsageError("--repeat must be at least 1 and --warmup at least 0")
    _check_writable(args.json)
    points = plan_compare(args)
    steps = len(points) * (args.repeat + args.warmup)
    columns = _columns(args)
    if args.dry_run:
        print_plan(points, args, console)
        return EXIT_OK
    err = Console(stderr=True)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err, disable=args.no_progress, transient=True)
    capacity = {}
    with progress:
        task = progress.add_task("compare", total=steps)

        def step(point, is_warmup):
            progress.update(task, advance=1, description=("warm-up " if is_warmup else "") + point.label)

        # What the CPUs deliver when all are busy, before and after: the ceiling beside
        # which every CPU-bound speedup in the table is read (a shared VM may give far
        # less than its CPU count).
        if usable_cpus() > 1:
            progress.update(task, description="measuring CPU capacity")
            capacity["before"] = measure_capacity()
        records = sweep.execute(points, tier_options(args), args.seed, args.repeat, args.warmup, step)
        if capacity:
            progress.update(task, description="measuring CPU capacity")
            capacity["after"] = measure_capacity()
    fits = sweep.derive(records)
    notes = emit(records, args, columns, console, err, title=f"taskrace compare (median of {args.repeat})",
                 doc=lambda: document(records, fits=fits, capacity=capacity))
    for line in sweep.notes(records):
        notes.print(line, style="dim", markup=False, highlight=False)
    if capacity:
        notes.print(describe_capacity(capacity))
    if args.json:
        write_json(args.json, records, fits=fits, capacity=capacity)
        notes.print(f"results: {len(records)} points written to {args.json}")
    if args.report:
        from taskrace.html_report import write_report

        written = write_report(document(records, fits=fits, capacity=capacity), args.report)
        notes.print(f"report: {written}")
    for r in records:
        if r["verdict"]["details"].get("failed_in") == "warm-up":
            console.print(f"[red]{r['scenario']} on {r['backend']} -n {r['workers']}: "
                          f"{r['verdict']['details']['note']}[/]")
    disagree = [r for r in records if r.get("agrees_with_sequential") is False]
    for r in disagree:
        notes.print(f"[red]{r['scenario']} on {r['backend']} -n {r['workers']} disagrees with sequential[/]")
    code = exit_code(records, args.expect_safe)
    return EXIT_FAILED if disagree else code


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt  # same clean-up path as Ctrl-C (docker stop sends SIGTERM)


def main(argv: list[str] | None = None) -> int:
    console = Console()
    err = Console(stderr=True)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise UsageError("choose a command: list, run, compare, network, faults, report, bench, cluster, worker, "
                             "host (taskrace -h for help)")
        if getattr(args, "unavailable", None):
            raise UsageError(f"taskrace {args.command}: {args.unavailable}")
        if args.command in ("worker", "host"):
            from taskrace.join import cmd_worker
            from workers.netns import cmd_host

            return (cmd_worker if args.command == "worker" else cmd_host)(args, console)
        if args.command == "list":
            return cmd_list(console)
        if args.command == "run":
            return cmd_run(args, console)
        if args.command == "compare":
            return cmd_compare(args, console)
        if args.command == "report":
            from taskrace import html_report
            from taskrace.faults import report as faults_report
            from taskrace.results import load_json

            doc = faults_report.load_faults(args.results)  # "schema": "taskrace.faults/1", else None
            write_report = faults_report.write_report
            if doc is None:
                from taskrace import network, network_report

                doc, write_report = network.load_network(args.results), network_report.write_report
            if doc is None:  # results, or a bad file: load_json says why in one line
                doc, write_report = load_json(args.results), html_report.write_report
            try:
                written = write_report(doc, args.output)
            except OSError as exc:
                raise UsageError(f"cannot write the report to {args.output}: {exc.strerror or exc}") from None
            console.print(f"report: {written}")
            return EXIT_OK
        if args.command == "bench":
            from taskrace.bench import main as bench_main
            return bench_main(args, console)
        if args.command == "faults":
            from taskrace.faults.cli import cmd_faults
            return cmd_faults(args, console)
        if args.command == "cluster":
            from taskrace.cluster import cmd_cluster
            return cmd_cluster(args, console)
        if args.command == "network":
            from taskrace.network import cmd_network
            return cmd_network(args, console)
    except (UsageError, BadInput, UnknownChoice, MissingDependency, RedisUnavailable, BadResults) as exc:
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
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
