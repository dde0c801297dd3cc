"""The result objects the library returns (``taskrace.run/compare/race`` -> ``Results``,
``faults`` -> ``FaultResults``, ``network`` -> ``NetworkResults``): records plus their
text, HTML, JSON, report and dataframe. Apart from ``taskrace.api`` so that the live view
can print a run's final table without importing the functions that start runs."""
from __future__ import annotations

import html
import io
from typing import Callable

from rich.console import Console

from taskrace.errors import InputError

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
