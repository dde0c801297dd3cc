"""What the live view knows: every event of the current run, numbered, for pages to
replay from the start and then follow.

One ``LiveState`` is one more subscriber of the event stream (``taskrace.events``), or is
fed by a replay or a follower. ``add`` runs in the emitting thread (a run's main thread,
a pool's threads, Celery's event receiver): it only scrubs, serialises and appends under
a lock, never waits on a page. Pages read with ``since(cursor)`` from the server's own
thread, each at its own pace: a page that stops reading holds a cursor, nothing else.

A new ``run.start`` after a run has ended begins a new run (a follower in the lab sees
one run after another): the log starts over and the ``generation`` changes, so pages
that were following start over too.

At ``run.end`` the state adds a ``live.table`` event: the terminal's table of the run
(the same column model: ``taskrace.api``'s result objects render it), as text and HTML,
built from the records the events carried (``point.end``, ``fault.result``).
"""
from __future__ import annotations

import json
import threading

from taskrace.events import Event
from workers.infra.redact import scrub

MAX_EVENTS = 400_000  # past this, per-task events are dropped (counted): a page stays usable


class LiveState:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._log: list[str] = []        # JSON text of each event of the current run
        self.generation = 0
        self.dropped = 0
        self.finished = False            # the current run has ended
        self.closed = False              # no more events will come (the server may stop)
        self._command = None
        self._points: dict = {}          # point -> record (point.end)
        self._faults: list[dict] = []    # fault.result records, in order
        self._contrast: list[dict] = []

    # feeding ------------------------------------------------------------------------
    def add(self, event: Event) -> None:
        d = event.to_dict()
        kind = d["kind"]
        extra = None
        if kind == "run.start":
            self._begin(d)
        elif kind == "point.end":
            self._points[d.get("point")] = d.get("record")
            d["cells"] = _cells(d)
        elif kind == "fault.result":
            self._faults.append(d.get("record"))
        elif kind == "fault.contrast":
            self._contrast.append(d.get("record"))
        elif kind == "run.end" and d.get("command") == self._command:
            extra = self._table(d)
        line = json.dumps(scrub(d), default=str, separators=(",", ":"))
        with self._changed:
            if len(self._log) >= MAX_EVENTS and kind.startswith("task."):
                self.dropped += 1
                return
            self._log.append(line)
            if extra is not None:
                self._log.append(json.dumps(scrub(extra), default=str, separators=(",", ":")))
                self.finished = True
            self._changed.notify_all()

    def __call__(self, event: Event) -> None:  # a subscriber is a callable
        self.add(event)

    def _begin(self, d: dict) -> None:
        with self._changed:
            if self._command is not None and not self.finished:
                return  # a command inside a command (compare's points): the outer one leads
            if self._command is not None:  # the previous run ended: this is a new one
                self._log, self.generation, self.dropped = [], self.generation + 1, 0
            self._command, self.finished = d.get("command"), False
            self._points, self._faults, self._contrast = {}, [], []

    def close(self) -> None:
        """No more events: pages get what is left, then the end."""
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    # reading ------------------------------------------------------------------------
    def since(self, cursor: int, generation: int) -> tuple[list[str], int, int]:
        """Events from ``cursor`` on: (lines, next cursor, generation). A page on an
        older generation gets the new run from its start."""
        with self._lock:
            if generation != self.generation:
                cursor = 0
            return self._log[cursor:], len(self._log), self.generation

    def wait(self, cursor: int, generation: int, timeout: float) -> None:
        """Block (a server thread) until there is something past ``cursor``, or closed."""
        with self._changed:
            self._changed.wait_for(lambda: self.closed or generation != self.generation
                                   or len(self._log) > cursor, timeout)

    def snapshot(self) -> dict:
        with self._lock:
            return {"generation": self.generation, "events": len(self._log), "finished": self.finished,
                    "closed": self.closed, "dropped": self.dropped, "command": self._command}

    # the final table ----------------------------------------------------------------
    def _table(self, end: dict) -> dict | None:
        """The terminal's table of the run that ended, as text (80 columns) and HTML."""
        try:
            records = end.get("records") or [self._points[k] for k in sorted(self._points, key=lambda k: (k is None, k))]
            if self._command in ("run", "compare") and records:
                from taskrace.result_objects import Results

                title = f"taskrace {self._command}" + (f" (median of {end['repeat']})" if end.get("repeat") else "")
                result = Results(records, fits=end.get("fits"), capacity=end.get("capacity"), title=title,
                                 command=self._command)
                html = result._repr_html_()
            elif self._command == "faults" and self._faults:
                from taskrace.result_objects import FaultResults
                from taskrace.faultlab.document import document

                result = FaultResults(document(self._faults, self._contrast))
                html = None
            else:
                return None
            return {"kind": "live.table", "t": end.get("t"), "command": self._command,
                    "text": result.table(width=80), "html": html, "exit_code": end.get("exit_code")}
        except Exception as exc:  # noqa: BLE001 - the page says why; the run goes on
            return {"kind": "live.table", "t": end.get("t"), "command": self._command,
                    "text": f"(no table: {type(exc).__name__}: {exc})", "html": None}


def _cells(point_end: dict) -> dict:
    """The terminal table's cells of one finished point (the one column model), for the
    page's table of points as they finish. Only ``columns`` is imported here, not the
    table's renderer (rich): this runs in the run's process, at every point's end."""
    from taskrace.reporting.columns import COLUMNS, Row

    record = point_end.get("record") or {}
    try:
        strategy = (record.get("params") or {}).get("strategy")
        row = Row(record, " ".join(str(p) for p in (record["scenario"], strategy) if p))  # the table's "bank none"
        return {c.key: c.text(row) for c in COLUMNS if c.compact}
    except Exception:  # noqa: BLE001 - a record of another shape: no cells, the page says "-"
        return {}
