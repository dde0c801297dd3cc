"""The progress display of every command: one rich bar on stderr, fed by the event stream.

A command says what it is doing through ``taskrace.events`` (``run.start`` with the
number of steps, ``step`` as each is done, ``status`` in words); this subscriber turns
that into a bar. It never asks for per-task events, so showing progress costs a run
nothing (Celery's workers are not told to send events for it).
"""
from __future__ import annotations

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn)

from taskrace import events


class ProgressBar:
    """``with ProgressBar(err, disable=...):`` around a command's work. ``disable`` as
    ``--no-progress`` says; a stderr that is not a terminal (a pipe, a log, CI) gets no
    bar either, so logs hold results, not redraws."""

    def __init__(self, console: Console | None = None, disable: bool = False, label: str = "") -> None:
        self.console = console or Console(stderr=True)
        self.disabled = disable or not self.console.is_terminal
        self.label = label
        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn(), console=self.console,
                                  transient=True, disable=self.disabled)
        self._task = None
        self._sub = None

    def __enter__(self) -> "ProgressBar":
        self._progress.__enter__()
        self._task = self._progress.add_task(self.label, total=None)
        self._sub = events.subscribe(self.on_event, tasks=False)
        return self

    def __exit__(self, *exc) -> None:
        self._sub.close()
        self._progress.__exit__(*exc)

    def on_event(self, event: events.Event) -> None:
        kind = event.kind
        if kind == "run.start":
            self._progress.update(self._task, total=event.get("total"), completed=0,
                                  description=event.get("label") or event["command"])
        elif kind == "step":
            self._progress.update(self._task, completed=event["done"], total=event["total"],
                                  description=event["label"])
        elif kind == "status":
            self._progress.update(self._task, description=event["text"])
