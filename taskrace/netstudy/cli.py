"""``taskrace network``: parse, study, print."""
from __future__ import annotations

from rich.console import Console

from taskrace.netstudy.document import write_json
from taskrace.netstudy.measure import study
from taskrace.netstudy.plan import DEFAULT_RTTS, KINDS, plan_from, print_plan
from taskrace.netstudy.printing import print_all
from taskrace.options import add_study_options
from taskrace.progress import ProgressBar


def add_network_parser(sub) -> None:
    p = sub.add_parser("network", help="what a celery task costs over a network: a + k x RTT")
    p.add_argument("--rtt", default=DEFAULT_RTTS, metavar="MS,MS,...",
                   help=f"round-trip times added between workers and Redis, ms (default {DEFAULT_RTTS}; "
                        "0 = loopback, no proxy)")
    p.add_argument("-n", "--workers", default="2", metavar="N", help="celery workers (default 2)")
    p.add_argument("--workloads", default=",".join(KINDS), metavar="A,B,...",
                   help=f"comma list of: {', '.join(KINDS)} (default: all)")
    p.add_argument("--chunk", default="10,100", metavar="N,N", help="calls per message of the chunked "
                   "no-op workloads (default 10,100)")
    p.add_argument("--prefetch", default="4", metavar="N", help="worker_prefetch_multiplier of the "
                   "prefetch workload (default 4)")
    p.add_argument("--repeat", default="3", metavar="N", help="measured runs per point (default 3)")
    p.add_argument("--seconds", default="1.2", metavar="S",
                   help="about how long each point runs; task counts follow (default 1.2)")
    p.add_argument("--scaling-n", default="1,2,4", metavar="N,N", help="worker counts of the local vs "
                   "distributed scaling chart (default 1,2,4)")
    p.add_argument("--scaling-rtt", default=None, metavar="MS,MS",
                   help="round-trip times of its celery series (default: the smallest --rtt and the one "
                        "nearest 5 ms: 0,5)")
    p.add_argument("--no-scaling", action="store_true", help="leave the scaling part out")
    p.add_argument("--report", metavar="DIR", help="write the charts (PNG, SVG) and index.html here")
    add_study_options(p, "write every raw sample here (JSON)", "check the options, print the plan, stop")


def cmd_network(args, console: Console) -> int:
    plan = plan_from(args)
    if args.dry_run:
        print_plan(plan, console)
        return 0
    with ProgressBar(disable=args.no_progress):
        doc = study(plan)
    print_all(doc, console)
    if args.json:
        write_json(args.json, doc)
        console.print(f"samples: {len(doc['samples'])} written to {args.json}", markup=False, highlight=False)
    if args.report:
        from taskrace.netstudy.report import write_report

        console.print(f"report: {write_report(doc, args.report)}", markup=False, highlight=False)
    return 0
