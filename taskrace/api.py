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
from contextlib import ExitStack
from typing import Callable

from rich.console import Console

from taskrace import events as stream
from taskrace.errors import InputError
from taskrace.result_objects import FaultResults, NetworkResults, Results


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
        if value is None or (value is False and action.nargs == 0):  # None, a switch off: not given
            continue
        if isinstance(value, bool) and action.nargs != 0 and not (action.nargs == "?" and value is True):
            # False (or True) where the command takes a value: never dropped in silence
            raise InputError(f"{name} takes a value ({flag} {action.metavar or action.dest.upper()}), got {value}")
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
    """Bad input of any kind, as the CLI says it, raised as InputError: found in the
    arguments or while the command runs (external workers in another delivery mode)."""

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
            events: str | None = None, trace: bool = False, progress: bool = True, cpu_capacity: bool = True,
            **options) -> "Results":
    """The matrix (``taskrace compare``): every point warmed up and repeated, speedups
    against sequential, Amdahl fits, the CPUs' capacity before and after (``cpu_capacity=
    False`` skips that measure: a few seconds each side; ``capacity`` is the pipeline's
    channel size, as ``--capacity``)."""
    from taskrace.measuring.matrix import execute_compare, plan_compare

    given = {"scenario": scenario, "backend": backend, "workers": workers}
    with _input_errors():
        args = parse("compare", **{k: v for k, v in given.items() if v is not None}, **options)
        points = plan_compare(args)
        stack, recorder = _listening(on_event, events, trace, progress, args)
        with stack:
            records, fits, capacity = execute_compare(points, args, measure_cpus=cpu_capacity)
    return Results(records, fits=fits, capacity=capacity, title=f"taskrace compare (median of {args.repeat})",
                   events=recorder.events, expect_safe=args.expect_safe, command="compare")


def race(fn: Callable, inputs, backends: str | list[str] | None = None, workers: int | list[int] | None = None, *,
         repeat: int = 3, warmup: int = 1, chunksize: int = 1, cpu_capacity: bool = True, name: str | None = None,
         on_event: Callable | None = None, events: str | None = None, trace: bool = False, progress: bool = True,
         **options) -> "Results":
    """Race your own function: ``fn(x)`` for each x of ``inputs``, on each backend, measured
    and judged as ``compare`` does (sequential first: the oracle; ``= seq`` says whether a
    backend's answers equal its answers). ``fn`` may live in ``__main__`` (a notebook):
    processes and interpreters get it by cloudpickle where they cannot import it, or by
    fork; celery only by its import path (a module its workers import). Backends by
    default: those that load here and need no broker, asyncio for a coroutine function.
    ``cpu_capacity``: measure the CPUs before and after, as compare does; ``name``: the
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
            records, fits, cpus = execute_compare(points, args, measure_cpus=cpu_capacity,
                                                  label=f"race {scenario_cls.name}")
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
