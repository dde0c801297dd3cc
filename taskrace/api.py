"""The library face: what the commands do, as functions that return result objects.

    import taskrace
    r = taskrace.run("power-io", backend="threads", workers=2)
    print(r)                      # the 80-column table the terminal shows
    r.records[0]["wall_s"]        # the records, as the results file holds them
    r.to_json("out.json"); r.report("report/"); r.to_dataframe()
    taskrace.compare(scenario="power-cpu", backend=["threads", "processes"], workers=[1, 2])
    taskrace.race(f, [1, 2, 3], backends=["threads", "processes"], workers=2)   # your own function

Keyword arguments are the commands' options, spelled as Python names (``--task-size``
is ``task_size``, ``-n`` is ``workers``; a list where the command takes a comma list; a
switch is True). They go through the command's own parser (``taskrace.parser``), so
names, defaults and checks are the CLI's, and a bad value raises ``InputError`` whose
message is the CLI's one line. Nothing starts before every value is checked.

``on_event``: a function called with each ``taskrace.events.Event`` as it happens;
``events``: a path for the JSON-lines log (as ``--events``); ``trace=True`` keeps the
per-task events on the result too (``.events``), for drawing a timeline.
"""
from __future__ import annotations

import argparse
import html
import io
from contextlib import ExitStack
from typing import Callable

from rich.console import Console

from taskrace import events as stream


class InputError(ValueError):
    """A bad name or value given to the library: the message is the CLI's one line."""


# kwargs -> the command's own options -----------------------------------------------------
def _subparser(command: str) -> argparse.ArgumentParser:
    from taskrace.parser import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def _option_table(parser: argparse.ArgumentParser) -> dict[str, tuple[str, argparse.Action]]:
    """Python name -> (long flag, action), by dest and by flag (``--external-workers``)."""
    out: dict[str, tuple[str, argparse.Action]] = {}
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if not longs or action.dest == "help":
            continue
        out.setdefault(action.dest, (longs[0], action))
        for flag in longs:
            out[flag[2:].replace("-", "_")] = (flag, action)
    return out


def _argv(command: str, positional: list[str], options: dict) -> list[str]:
    table = _option_table(_subparser(command))
    argv = [command, *positional]
    for name, value in options.items():
        if name not in table:  # the parser refuses it, in the CLI's words
            argv += [f"--{name.replace('_', '-')}"] + ([] if value is True else [str(value)])
            continue
        flag, action = table[name]
        if value is None or value is False:
            continue
        if action.nargs == 0 or (action.nargs == "?" and value is True):  # a switch (or --live): given
            argv.append(flag)
        elif isinstance(action, argparse._AppendAction):  # --set, --sweep: one item each
            items = value.items() if isinstance(value, dict) else [value] if isinstance(value, str) else value
            for item in items:
                if isinstance(item, tuple):
                    key, v = item
                    item = f"{key}={','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                argv += [flag, str(item)]
        elif isinstance(value, (list, tuple)):
            argv += [flag, ",".join(map(str, value))]
        else:
            argv += [flag, str(value)]
    return argv


def parse(command: str, positional: list[str] | None = None, **options) -> argparse.Namespace:
    """The options of ``taskrace COMMAND`` from Python values, checked by its parser."""
    from taskrace.parser import build_parser

    with _input_errors():
        return build_parser().parse_args(_argv(command, positional or [], options))


class _input_errors:
    """Bad input of any kind, as the CLI says it, raised as InputError."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        from taskrace.errors import BAD_INPUT
        from workers.infra.redact import redact_text

        if kind is not None and issubclass(kind, BAD_INPUT) and not issubclass(kind, InputError):
            raise InputError(redact_text(str(exc))) from None
        return False


def _listening(on_event: Callable | None, events: str | None, trace: bool, progress: bool, args=None):
    """Subscribers for one call: a recorder for the result, the caller's function, the
    event log (a file, or a Redis URL a live view follows), the live view (``live=True``
    or a port), the progress bar. Returns (ExitStack, recorder)."""
    stack = ExitStack()
    recorder = stack.enter_context(stream.Recorder(tasks=trace))
    if on_event is not None:
        stack.enter_context(stream.subscribe(on_event, tasks=True))
    if events:
        from taskrace.eventlog import open_sink

        stack.enter_context(open_sink(events))
    if getattr(args, "live", None) is not None:
        from taskrace import live

        stack.enter_context(live.watching(args.live, args.live_bind, title=f"taskrace {args.command}"))
    if progress:
        from taskrace.progress import ProgressBar

        err = Console(stderr=True)
        stack.enter_context(ProgressBar(err, disable=not (err.is_terminal or err.is_jupyter)))
    return stack, recorder


# the functions ----------------------------------------------------------------------------
def run(scenario: str, backend: str = "sequential", workers: int | None = None, *,
        on_event: Callable | None = None, events: str | None = None, trace: bool = False,
        progress: bool = False, **options) -> "Results":
    """One scenario on one backend, once (``taskrace run``): a Results of one record."""
    from taskrace.measuring.matrix import execute_run, plan_run

    with _input_errors():
        args = parse("run", [scenario], backend=backend, workers=workers, **options)
        plan = plan_run(args)
        stack, recorder = _listening(on_event, events, trace, progress, args)
    with stack:
        history: list | None = [] if scenario == "bank" else None
        record = execute_run(plan, history)
    return Results([record], title=f"taskrace run {scenario}", events=recorder.events,
                   expect_safe=args.expect_safe, history=history)


def compare(scenario: str | list[str] | None = None, backend: str | list[str] | None = None,
            workers: int | list[int] | None = None, *, on_event: Callable | None = None,
            events: str | None = None, trace: bool = False, progress: bool = True, **options) -> "Results":
    """The matrix (``taskrace compare``): every point warmed up and repeated, speedups
    against sequential, Amdahl fits, the CPUs' capacity before and after."""
    from taskrace.measuring.matrix import execute_compare, plan_compare

    given = {"scenario": scenario, "backend": backend, "workers": workers}
    with _input_errors():
        args = parse("compare", **{k: v for k, v in given.items() if v is not None}, **options)
        points = plan_compare(args)
        stack, recorder = _listening(on_event, events, trace, progress, args)
    with stack:
        records, fits, capacity = execute_compare(points, args)
    return Results(records, fits=fits, capacity=capacity, title=f"taskrace compare (median of {args.repeat})",
                   events=recorder.events, expect_safe=args.expect_safe, command="compare")


def race(fn: Callable, inputs, backends: str | list[str] | None = None, workers: int | list[int] | None = None, *,
         repeat: int = 3, warmup: int = 1, chunksize: int = 1, capacity: bool = True, name: str | None = None,
         on_event: Callable | None = None, events: str | None = None, trace: bool = False, progress: bool = True,
         **options) -> "Results":
    """Race your own function: ``fn(x)`` for each x of ``inputs``, on each backend, measured
    and judged as ``compare`` does (sequential first: the oracle; ``= seq`` says whether a
    backend's answers equal its answers). ``fn`` may live in ``__main__`` (a notebook):
    processes and interpreters get it by cloudpickle where they cannot import it, or by
    fork; celery only by its import path (a module its workers import). Backends by
    default: those that load here and need no broker, asyncio for a coroutine function.
    ``capacity``: measure the CPUs before and after, as compare does; ``name``: the
    table's label (``f()``). Options: the tiers' (``start_method``, ``redis_url``, ...)
    and ``live``. How the function travelled: ``record["race"]`` (taskrace.racing)."""
    from scenarios import provided
    from taskrace.measuring.matrix import execute_compare
    from taskrace.racing import check_options, plan_points, race_scenario

    with _input_errors():
        check_options(options)
        given = {"backend": backends, "workers": workers}
        args = parse("compare", **{k: v for k, v in given.items() if v is not None}, repeat=repeat, warmup=warmup,
                     **options)
        scenario_cls = race_scenario(fn, inputs, name=name, chunksize=chunksize)
        with provided(scenario_cls):
            points = plan_points(scenario_cls, args)
        stack, recorder = _listening(on_event, events, trace, progress, args)
    with stack, provided(scenario_cls):
        records, fits, cpus = execute_compare(points, args, measure_cpus=capacity, label=f"race {scenario_cls.name}")
    return Results(records, fits=fits, capacity=cpus, title=f"taskrace race {scenario_cls.name} (median of {args.repeat})",
                   events=recorder.events, expect_safe=args.expect_safe, command="compare")


def faults(*, on_event: Callable | None = None, events: str | None = None, trace: bool = False,
           progress: bool = True, **options) -> "FaultResults":
    """The fault lab (``taskrace faults``): each fault under each delivery mode, counted
    against the plan, then the shared-memory contrast."""
    from taskrace.faultlab.cli import plan_matrix, run_matrix

    with _input_errors():
        args = parse("faults", **options)
        specs = plan_matrix(args)
        factory = None
        if args.lab:
            from taskrace.lab.cluster import ClusterError
            from taskrace.faultlab.lab import LabCluster, locate
            try:
                locate()
            except ClusterError as exc:
                raise InputError(str(exc)) from None
            factory = LabCluster
        stack, recorder = _listening(on_event, events, trace, progress, args)
    with stack:
        records, contrast = run_matrix(specs, factory, contrast=not args.no_contrast)
    from taskrace.faultlab.document import document

    return FaultResults(document(records, contrast), events=recorder.events)


def network(*, on_event: Callable | None = None, events: str | None = None, trace: bool = False,
            progress: bool = True, **options) -> "NetworkResults":
    """What a celery task costs over a network (``taskrace network``): a + k x RTT."""
    from taskrace.netstudy.measure import study
    from taskrace.netstudy.plan import plan_from

    with _input_errors():
        args = parse("network", **options)
        plan = plan_from(args)
        stack, recorder = _listening(on_event, events, trace, progress, args)
    with stack:
        doc = study(plan)
    return NetworkResults(doc, events=recorder.events)


def load(path: str):
    """A document written by ``--json`` (results, fault lab or network study), as the
    result object its command returns."""
    from taskrace.schemas import load_document

    with _input_errors():
        kind, doc = load_document(path)
    if kind == "faults":
        return FaultResults(doc)
    if kind == "network":
        return NetworkResults(doc)
    return Results(doc["runs"], fits=doc.get("fits"), capacity=(doc.get("environment") or {}).get("cpu_capacity"),
                   title=f"taskrace: {path}", command="compare" if doc.get("fits") else "run")


# result objects ----------------------------------------------------------------------------
def _text(render: Callable[[Console], None], width: int) -> str:
    """What ``render`` prints on a plain console ``width`` columns wide (no colour codes)."""
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=False, force_jupyter=False, color_system=None,
                      soft_wrap=False)
    render(console)
    return buf.getvalue()


def _pandas():
    try:
        import pandas
    except ImportError:
        raise ImportError("to_dataframe needs pandas: pip install pandas "
                          "(or pip install -e '.[notebook]')") from None
    return pandas


class _Document:
    """What every result object shares: its document, JSON, report, text and HTML."""

    kind = "results"
    events: list

    def document(self) -> dict:
        raise NotImplementedError

    def render(self, console: Console) -> None:
        raise NotImplementedError

    def table(self, width: int = 80) -> str:
        return _text(self.render, width)

    def to_json(self, path: str) -> str:
        from taskrace.reporting.documents import write_document

        return write_document(path, self.document())

    def report(self, out_dir: str) -> str:
        """Charts and one HTML page in ``out_dir`` (as ``--report``); the page's path."""
        from taskrace.schemas import write_report

        return write_report(self.kind, self.document(), out_dir)

    def __str__(self) -> str:
        return self.table()

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(self.table(width=100))}</pre>"

    def __rich_console__(self, console, options):
        yield self.table(width=options.max_width).rstrip("\n")


class Results(_Document):
    """Records of ``run`` or ``compare``: ``records`` (one dict per point, as the results
    file holds them), ``fits`` (Amdahl per series), ``capacity``, ``events``."""

    def __init__(self, records: list[dict], fits: list | None = None, capacity: dict | None = None,
                 title: str = "taskrace", events: list | None = None, expect_safe: bool = False,
                 command: str = "run", history: list | None = None) -> None:
        self.records, self.fits, self.capacity = records, fits or [], capacity or {}
        self.title, self.events, self.command = title, events or [], command
        self.expect_safe, self.history = expect_safe, history

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i) -> dict:
        return self.records[i]

    def __iter__(self):
        return iter(self.records)

    @property
    def exit_code(self) -> int:
        """What the command would exit with: 1 when a checker failed (an unsafe strategy's
        violation is the lesson, not a failure), or a point disagrees with sequential."""
        from taskrace.measuring.matrix import compare_exit_code

        return compare_exit_code(self.records, self.expect_safe)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def document(self) -> dict:
        from taskrace.reporting.results import document

        return document(self.records, fits=self.fits, capacity=self.capacity)

    def render(self, console: Console, columns=None, wide: bool = False) -> None:
        from taskrace.measuring import sweep
        from taskrace.measuring.capacity import describe
        from taskrace.reporting.report import print_runs

        print_runs(self.records, title=self.title, console=console, columns=columns, wide=wide)
        for line in sweep.notes(self.records):
            console.print(line, markup=False, highlight=False)
        if self.capacity:
            console.print(describe(self.capacity))

    def table(self, width: int = 80, format: str = "table", columns: str | list | None = None,
              wide: bool = False) -> str:
        """The records as text: ``format`` table (what the terminal shows, ``width``
        columns), markdown, csv or json (the results document)."""
        import json

        from taskrace.reporting.columns import select
        from taskrace.reporting.report import FORMATS, csv_text, markdown

        if format not in FORMATS:
            raise InputError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        try:
            cols = select(",".join(columns) if isinstance(columns, (list, tuple)) else columns) if columns else None
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if format == "json":
            return json.dumps(self.document(), indent=1, default=str) + "\n"
        if format == "markdown":
            return markdown(self.records, cols)
        if format == "csv":
            return csv_text(self.records, cols)
        return _text(lambda console: self.render(console, cols, wide), width)

    def _repr_html_(self) -> str:
        from taskrace.measuring import sweep
        from taskrace.reporting.html_report import section_table

        notes = "".join(f"<p class=note>{html.escape(line)}</p>" for line in sweep.notes(self.records))
        return (section_table(self.document()).replace("<h2>All points</h2>", f"<h3>{html.escape(self.title)}</h3>")
                + notes)

    def to_dataframe(self):
        """One row per point: the table's columns as values (seconds, ratios, MB)."""
        from taskrace.reporting.columns import COLUMNS
        from taskrace.reporting.report import rows_of

        pandas = _pandas()
        rows = rows_of(self.records)
        return pandas.DataFrame([{c.key: c.get(row) for c in COLUMNS} for row in rows])

    def tasks(self) -> list[dict]:
        """Every task's queued/started/finished (epoch seconds), worker and point, from
        the events (``trace=True``): one dict per finished task."""
        queued = {}
        out = []
        for e in self.events:
            key = (e.get("point"), e.get("backend"), e.get("index"))
            if e.kind == "task.queued":
                queued[key] = e["queued"]
            elif e.kind == "task.finished":
                out.append({"point": e.get("point"), "backend": e["backend"], "index": e["index"],
                            "worker": e["worker"], "queued": queued.get(key), "started": e["started"],
                            "finished": e["finished"], "ok": e["ok"]})
        return out


class FaultResults(_Document):
    """The fault lab's runs (``records``) and the shared-memory contrast (``contrast``)."""

    kind = "faults"

    def __init__(self, doc: dict, events: list | None = None) -> None:
        self.doc, self.events = doc, events or []
        self.records, self.contrast = doc["runs"], doc.get("contrast") or []

    def document(self) -> dict:
        return self.doc

    @property
    def exit_code(self) -> int:
        from taskrace.faultlab.cli import exit_code

        return exit_code(self.records)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def render(self, console: Console) -> None:
        from taskrace.faultlab.cli import print_contrast, print_faults

        if self.records:
            print_faults(self.records, console)
        if self.contrast:
            print_contrast(self.contrast, console)

    def to_dataframe(self):
        pandas = _pandas()
        return pandas.DataFrame([{"fault": r["fault"], "mode": r["mode"], "broker_persistence": r["broker_persistence"],
                                  **{k: v for k, v in r["counts"].items() if not isinstance(v, (list, dict))},
                                  "fired": r["fired"], "kept": r["kept"], "verdict": r["verdict"]}
                                 for r in self.records])


class NetworkResults(_Document):
    """The network study's document: ``samples``, ``fits`` (a + k x RTT per workload)."""

    kind = "network"

    def __init__(self, doc: dict, events: list | None = None) -> None:
        self.doc, self.events = doc, events or []

    def document(self) -> dict:
        return self.doc

    def __getattr__(self, name):
        try:
            return self.__dict__["doc"][name]
        except KeyError:
            raise AttributeError(name) from None

    def render(self, console: Console) -> None:
        from taskrace.netstudy.printing import print_all

        print_all(self.doc, console)

    def to_dataframe(self):
        pandas = _pandas()
        return pandas.DataFrame(self.doc.get("samples", []))
