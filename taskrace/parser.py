"""The command line's grammar: every command's options, in one parser.

The CLI (``taskrace.cli``) parses with it, and so does the library: ``taskrace.run(...)``
and ``taskrace.compare(...)`` turn their keyword arguments into the same options and
parse them here, so a name, a default or a check is written once for both.
Commands whose options live with their code register their parsers from there
(``PARSERS_ELSEWHERE``).
"""
from __future__ import annotations

import argparse

from scenarios import SCENARIOS
from taskrace.version import __version__
from taskrace.reporting.columns import BY_KEY as COLUMN_KEYS
from taskrace.options import (Parser, add_events_option, add_live_options, add_scenario_options, add_shared,
                              add_tier_options, whole_number)
from taskrace.reporting.report import FORMATS
from workers import MissingDependency, load

DESCRIPTION = ("taskrace list | run | compare | network | report | bench | knobs | faults | live | cluster | worker | host "
               "| exercise | grade: "
               "race the same workloads across concurrency models")
# Commands whose parsers live with their code, as "module:function(subparsers)".
PARSERS_ELSEWHERE = {"cluster": "taskrace.lab.cluster:add_cluster_parser",
                     "faults": "taskrace.faultlab.cli:add_faults_parser",
                     "knobs": "taskrace.measuring.knobs:add_knobs_parser",
                     "live": "taskrace.live.cli:add_live_parser",
                     "network": "taskrace.netstudy.cli:add_network_parser",
                     # joining from other hosts: a worker elsewhere, and hosts in network namespaces
                     "worker": "taskrace.lab.join:add_worker_parser",
                     "host": "taskrace.lab.hosts:add_host_parser",
                     # exercises a student solves, and the grader (issue 18)
                     "exercise": "taskrace.grading.cli:add_exercise_parser",
                     "grade": "taskrace.grading.cli:add_grade_parser"}


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """What run and compare share besides add_shared: the tiers' options and the output."""
    add_tier_options(p)
    p.add_argument("--json", metavar="FILE", help="write the results here (JSON)")
    p.add_argument("--seed", type=int, default=0, help="seed for generated work (default 0)")
    p.add_argument("--expect-safe", action="store_true",
                   help="exit 1 if any invariant is violated, even by an unsafe strategy")
    add_events_option(p)
    add_live_options(p)


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
    parser = Parser(prog="taskrace", description=DESCRIPTION)
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
    compare.add_argument("--repeat", type=whole_number, default=3, help="measured runs per point (default 3)")
    compare.add_argument("--warmup", type=whole_number, default=1, help="discarded runs per point first (default 1)")
    compare.add_argument("--sweep", action="append", default=[], metavar="SCENARIO.OPTION=V1,V2",
                         help="vary a scenario option, e.g. mapreduce.chunksize=1000,100000")
    compare.add_argument("--chunksize", default=None, metavar="LIST", help="= --sweep mapreduce.chunksize=LIST")
    compare.add_argument("--task-size", default=None, metavar="LIST", help="= --sweep power-cpu.size=LIST")
    compare.add_argument("--report", metavar="DIR", help="write plots and an HTML report here")
    from taskrace.measuring.sweep import DEFAULT_SCALING, SCALINGS

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
    bench.add_argument("--repeat", type=whole_number, default=None,
                       help="runs per measurement; medians are reported (default 3, --quick: 1)")
    bench.add_argument("--json", metavar="FILE", help="write the raw numbers here (JSON)")
    bench.add_argument("--quick", action="store_true",
                       help="small work and one repeat: checks the bench works, numbers are rough")
    bench.add_argument("--skip-celery", action="store_true", help="local tiers only (no Redis needed)")
    bench.add_argument("--redis-url", default=None, help="broker for the celery section (default: "
                       "$REDIS_URL, else a private Redis started for the run)")
    for name in PARSERS_ELSEWHERE:
        try:
            load(PARSERS_ELSEWHERE, "command", name)(sub)
        except MissingDependency as exc:
            # Its module needs a package that is missing: the other commands still work,
            # and this one says what to install, in one line.
            stub = sub.add_parser(name, help=f"unavailable: {exc}", add_help=False, prefix_chars="\0")
            stub.add_argument("rest", nargs="*")  # whatever follows: no prefix_chars, no options
            stub.set_defaults(unavailable=str(exc))
    return parser
