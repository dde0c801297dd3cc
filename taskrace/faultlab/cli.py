"""``taskrace faults``: the fault lab's command line, its tables and its JSON.

With no options it runs the default matrix on the embedded cluster (no Docker):
kill-worker, pause-worker and restart-broker (AOF and none) under the three delivery
modes, then the shared-memory contrast (a lock whose holder dies), and prints one table
per fault with what each mode promised beside what happened.
"""
from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table

from taskrace.faultlab.document import document, notes, write_json
from taskrace.faultlab.nemesis import FAULTS
from taskrace.faultlab.run import WORKLOADS, FaultSpec, run_fault
from taskrace.measuring.stats import spread
from taskrace.options import UsageError, add_events_option, add_live_options, check_writable, names_in
from taskrace.progress import ProgressBar
from workers.delivery import DEFAULT_MODES, MODES
from workers.infra.redis_server import PERSISTENCE

DEFAULT_FAULTS = ("kill-worker", "pause-worker", "restart-broker")
DEFAULT_BROKER_PERSISTENCE = ("aof", "none")  # for faults that restart the broker
# In the lab a fault is a Docker API call (pause ~15 ms, exec kill ~60 ms, kill ~150 ms):
# work this long is still running when it lands, as 0.05 s is under a local signal.
LAB_WORK_S = 0.2
EXIT_OK, EXIT_FAILED = 0, 1


def add_faults_parser(sub) -> None:
    p = sub.add_parser("faults", help="inject faults into the celery tier and count lost and "
                       "duplicated operations against the plan")
    p.add_argument("--fault", default=",".join(DEFAULT_FAULTS),
                   help=f"comma list from: {', '.join(FAULTS)} (default: {','.join(DEFAULT_FAULTS)})")
    p.add_argument("--mode", default=",".join(DEFAULT_MODES),
                   help=f"delivery modes, comma list from: {', '.join(MODES)} "
                        f"(default: {','.join(DEFAULT_MODES)})")
    p.add_argument("--workload", default="bank", help=f"bank or jobs ({'; '.join(WORKLOADS.values())})")
    p.add_argument("--broker-persistence", default=None,
                   help="for faults that restart the broker, comma list from: "
                        f"{', '.join(PERSISTENCE)} (default: aof,none); other faults run on aof")
    p.add_argument("-n", "--workers", type=int, default=2, help="worker nodes (default 2)")
    p.add_argument("--ops", type=int, default=60, help="planned operations per run (default 60)")
    p.add_argument("--work", type=float, default=None, help="seconds of work per operation (default "
                   f"0.05; {LAB_WORK_S} with --lab, where a fault is an API call that takes up to ~0.15 s)")
    p.add_argument("--at", type=int, default=None, help="inject once this many operations have "
                   "started (default: a third of --ops)")
    p.add_argument("--hold", type=float, default=None, help="seconds a pause lasts at most "
                   "(default: past at-least-once's visibility timeout)")
    p.add_argument("--no-contrast", action="store_true",
                   help="skip the shared-memory contrast (a lock whose holder is killed)")
    p.add_argument("--lab", action="store_true",
                   help="act on the compose lab's containers instead of local processes")
    p.add_argument("--repeat", type=int, default=1, help="runs per fault and mode; with 2 or more, "
                   "a table of recovery times (median, min-max) follows: the fault lab's benchmark")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="write the records here (JSON)")
    p.add_argument("--report", metavar="DIR", help="write the timeline charts and an HTML page here")
    p.add_argument("--no-progress", action="store_true")
    add_events_option(p)
    add_live_options(p)


def _choices(text: str, valid, what: str) -> list[str]:
    names = names_in(text, valid, what)  # an unknown name: one line listing the choices
    if not names:
        raise UsageError(f"{what} needs at least one name; choose from: {', '.join(valid)}")
    return names


def plan_matrix(args) -> list[FaultSpec]:
    """Every run of the matrix, validated before anything starts."""
    if not 1 <= args.repeat <= 100:
        raise UsageError(f"--repeat must be between 1 and 100, got {args.repeat}")
    faults = _choices(args.fault, FAULTS, "fault")
    modes = _choices(args.mode, MODES, "mode")
    if args.workload not in WORKLOADS:
        raise UsageError(f"unknown workload {args.workload!r}; choose from: {', '.join(WORKLOADS)}")
    persistences = (_choices(args.broker_persistence, PERSISTENCE, "broker persistence")
                    if args.broker_persistence else
                    ["aof"] if args.lab else list(DEFAULT_BROKER_PERSISTENCE))
    if not args.lab:
        lab_only = [f for f in faults if FAULTS[f].lab_only]
        if lab_only:
            raise UsageError(f"fault {lab_only[0]!r} needs the compose lab: add --lab "
                              f"(with the lab's stack up: docker compose up -d)")
    if args.broker_persistence and persistences != ["aof"] and not any(FAULTS[f].restarts_broker for f in faults):
        raise UsageError(f"--broker-persistence applies to faults that restart the broker (restart-broker); "
                         f"{', '.join(faults)} {'leaves' if len(faults) == 1 else 'leave'} it running, so "
                         f"its persistence changes nothing: leave the option out")
    if args.lab and any(FAULTS[f].restarts_broker for f in faults) and persistences != ["aof"]:
        from taskrace.faultlab.lab import NO_PERSISTENCE_CHOICE
        raise UsageError(NO_PERSISTENCE_CHOICE)
    specs = []
    for fault in faults:
        for persistence in (persistences if FAULTS[fault].restarts_broker else ["aof"]):
            for mode in modes:
                work = args.work if args.work is not None else LAB_WORK_S if args.lab else 0.05
                spec = FaultSpec(fault, mode, args.workload, persistence, args.workers, args.ops,
                                 work, args.at, seed=args.seed, hold_s=args.hold)
                try:
                    spec.validate()
                except ValueError as exc:
                    raise UsageError(str(exc)) from None
                specs += [spec] * args.repeat
    return specs


def exit_code(records: list[dict]) -> int:
    """1 when a promise broke or a fault never fired; a loss a mode allows is a result."""
    return EXIT_FAILED if any(r["kept"] is False for r in records) else EXIT_OK


def cmd_faults(args, console: Console) -> int:
    specs = plan_matrix(args)
    check_writable(args.json)
    factory = None
    if args.lab:  # the engine, the stack and its broker answer, or one line (exit 2)
        from taskrace.lab.cluster import ClusterError
        from taskrace.faultlab.lab import LabCluster, locate
        try:
            locate()
        except ClusterError as exc:
            raise UsageError(str(exc)) from None
        factory = LabCluster
    with ProgressBar(disable=args.no_progress):
        records, contrast = run_matrix(specs, factory, contrast=not args.no_contrast)
    print_faults(records, console)
    if args.repeat > 1:
        console.print(recovery_table(records))
    if contrast:
        print_contrast(contrast, console)
    if args.json:
        write_json(args.json, records, contrast)
        console.print(f"results: {len(records)} fault runs written to {args.json}")
    if args.report:
        from taskrace.faultlab.report import write_report
        console.print(f"report: {write_report(document(records, contrast), args.report)}")
    return exit_code(records)  # the contrast's deadlock is its lesson, not a broken promise


def run_matrix(specs: list[FaultSpec], factory=None, contrast: bool = True) -> tuple[list[dict], list[dict]]:
    """Every fault run of the plan, then the shared-memory contrast: (records, contrast),
    told to the event stream as it goes (a step per run, what happens in words)."""
    from taskrace import events

    records, contrasts = [], []
    total = len(specs) + (len(CONTRAST) if contrast else 0)
    events.emit("run.start", command="faults", label="faults", total=total)
    for spec in specs:
        label = f"{spec.fault} {spec.mode}" + (f" ({spec.persistence})" if FAULTS[spec.fault].restarts_broker else "")
        events.emit("status", text=label)
        with events.context(run=len(records)):
            records.append(run_fault(spec, cluster_factory=factory, on_event=lambda text, label=label:
                                     events.emit("status", text=f"{label}: {text}")))
        events.emit("fault.result", run=len(records) - 1, record=records[-1])  # the live view's table
        events.emit("step", label=label, done=len(records), total=total, kept=records[-1]["kept"])
    if contrast:
        for store, fault in CONTRAST:
            events.emit("status", text=f"contrast: {fault} on a {store} lock")
            contrasts.append(run_contrast(store, fault))
            events.emit("fault.contrast", record=contrasts[-1])
            events.emit("step", label=f"contrast: {fault} on a {store} lock",
                        done=len(records) + len(contrasts), total=total)
    events.emit("run.end", command="faults", exit_code=exit_code(records))
    return records, contrasts


# the shared-memory contrast ------------------------------------------------------------
CONTRAST = (("multiprocessing", "kill-holder"), ("redis", "kill-holder"), ("redis", "pause-holder"))


def run_contrast(store: str, fault: str) -> dict:
    from taskrace.faultlab.lockholder import lock_holder_fault

    return lock_holder_fault(store, fault)


def print_contrast(rows: list[dict], console: Console) -> None:
    from rich.padding import Padding

    console.print()
    console.print("[bold]shared memory under the same kind of fault: a lock whose holder dies or stalls[/]")
    names = {"multiprocessing": "multiprocessing.Lock", "redis": "redis-py Lock (lease)"}
    for r in rows:
        mark = "[green]kept[/]" if r.get("kept") else f"[red]broken[/] ({', '.join(r.get('broken') or [])})"
        console.print(f"{names.get(r['store'], r['store'])}, {r['fault']}: {mark}")
        console.print(Padding(r["summary"], (0, 0, 0, 2), expand=False), highlight=False)


# tables ------------------------------------------------------------------------------
def _promise_cell(record: dict) -> str:
    return {True: "[green]kept[/]", False: "[red]BROKEN[/]", None: "[yellow]n/a[/]"}[record["kept"]]


def _money(record: dict) -> str:
    c = record["counts"]
    if record["workload"] != "bank":
        return "-"
    return f"-{c['money_missing']}/+{c['money_created']}"


def _recovery(record: dict) -> str:
    rec = record.get("recovery")
    if not record["fired"]:
        return "no fault"
    back = rec and rec["victim_applied_s"]
    return f"{back:.1f}" if back is not None else "never"


def fault_title(record: dict) -> str:
    title = f"{record['fault']}"
    if FAULTS[record["fault"]].restarts_broker:
        title += f" (broker persistence: {record['broker_persistence']})"
    return title


def faults_table(records: list[dict]) -> Table:
    """One fault, one row per delivery mode; fits 80 columns (no box, short headers:
    the legend under the tables spells them out)."""
    table = Table(title=fault_title(records[0]), title_justify="left", box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False, padding=(0, 1), collapse_padding=True,
                  header_style="bold", title_style="bold")
    for name, justify in [("mode", "left"), ("ops", "right"), ("lost", "right"), ("twice", "right"),
                          ("units -/+", "right"), ("redel.", "right"), ("WLE", "right"),
                          ("back s", "right"), ("promise", "left")]:
        table.add_column(name, justify=justify, no_wrap=True)
    for r in records:
        c = r["counts"]
        table.add_row(r["mode"], str(c["planned"]), str(c["lost"]), str(c["duplicated"]), _money(r),
                      str(c["redeliveries"]), str(r["worker_lost_errors"]), _recovery(r), _promise_cell(r))
    return table


def print_faults(records: list[dict], console: Console) -> None:
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["fault"], r["broker_persistence"] if FAULTS[r["fault"]].restarts_broker else ""),
                          []).append(r)
    for rows in groups.values():
        console.print(faults_table(rows))
        console.print(f"[dim]{FAULTS[rows[0]['fault']].help}[/]")
        for r in rows:
            for line in notes(r):
                console.print(line, highlight=False)
        console.print()
    for line in LEGEND:
        console.print(f"[dim]{line}[/]")
    settings = Table(title="what each mode sets", title_justify="left", box=None, show_header=False,
                     padding=(0, 1), pad_edge=False, style="dim", title_style="dim")
    settings.add_column(no_wrap=True)
    settings.add_column()
    shown = dict.fromkeys(r["mode"] for r in records)
    for m in (MODES[name] for name in shown):  # the exact settings: what a reader copies into their own app
        settings.add_row(m.name, m.settings_text().replace(", ", "  "))
    console.print(settings)


LEGEND = ("lost: planned, never applied. twice: applied two or more times.",
          "units -/+: money missing / created. redel.: deliveries flagged redelivered.",
          "WLE: WorkerLostErrors logged. back s: from the fault to the victim applied.")


def _spread(values: list[float]) -> str:
    s = spread(values)  # the one median and min-max of the project
    if s is None:
        return "never"
    return f"{s['median']:.1f} ({s['min']:.1f}-{s['max']:.1f})" if s["n"] > 1 else f"{s['median']:.1f}"


def recovery_table(records: list[dict]) -> Table:
    """The benchmark: per fault and mode, how long until the victim operation was applied
    and until work resumed, median (min-max) over the repeats; and how often it lost."""
    table = Table(title="recovery, median (min-max) over the repeats", title_justify="left",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1),
                  collapse_padding=True, header_style="bold", title_style="bold")
    for name, justify in [("fault", "left"), ("mode", "left"), ("runs", "right"),
                          ("back s", "right"), ("resumed s", "right"), ("lost", "right")]:
        table.add_column(name, justify=justify, no_wrap=True)
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        label = r["fault"] + (f" {r['broker_persistence']}" if FAULTS[r["fault"]].restarts_broker else "")
        groups.setdefault((label, r["mode"]), []).append(r)
    for (label, mode), rows in groups.items():
        fired = [r for r in rows if r["fired"] and r["recovery"]]
        back = [r["recovery"]["victim_applied_s"] for r in fired if r["recovery"]["victim_applied_s"] is not None]
        resumed = [r["recovery"]["progress_resumed_s"] for r in fired
                   if r["recovery"]["progress_resumed_s"] is not None]
        lost = sorted(r["counts"]["lost"] for r in rows)
        table.add_row(label, mode, str(len(rows)), _spread(back), _spread(resumed),
                      f"{lost[0]}-{lost[-1]}" if lost[0] != lost[-1] else str(lost[0]))
    return table
