"""The columns of the results table, defined once.

Each column says what it is called, how to read its value from a run record, how to print
that value for a person, its width class, and whether it belongs to the compact set that
fits an 80-column terminal. The terminal table, markdown, CSV and the HTML page's table are
all built from COLUMNS, so they cannot drift apart.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

NONE = "-"  # a value this run does not have (no sequential baseline, too short to measure)


@dataclass(frozen=True)
class Row:
    """A record and its series label: the label depends on the other records (a sweep's
    labels name the options that vary), so it is worked out once for the whole table."""

    record: dict
    label: str


# Width classes: how a column may be laid out when the terminal is narrow.
#   text    words that may wrap onto a second line (the scenario label, the verdict)
#   name    one word, never wrapped (a backend)
#   number  right-aligned, never wrapped
#   flag    a short word, centred
JUSTIFY = {"text": "left", "name": "left", "number": "right", "flag": "center"}


@dataclass(frozen=True)
class Column:
    key: str  # what --columns and the CSV header call it
    header: str  # what a reader sees above it
    get: Callable[[Row], Any]  # the value as the record holds it (CSV); None when absent
    fmt: Callable[[Any], str]  # that value for a person (terminal, markdown, HTML)
    width: str  # width class, one of JUSTIFY
    compact: bool  # in the default table, the one that fits 80 columns
    short: Callable[[Row], str] | None = None  # a shorter form for the terminal table
    status: Callable[[Row], str | None] | None = None  # "ok", "unsafe" or "fail": colour / CSS class

    @property
    def justify(self) -> str:
        return JUSTIFY[self.width]

    def text(self, row: Row) -> str:
        value = self.get(row)
        return NONE if value is None else self.fmt(value)


# --- how values read ---------------------------------------------------------------------------

def seconds(value: float) -> str:
    """Three decimals, or three significant digits for a time under 0.1 s (0.00213)."""
    if value >= 0.1 or value == 0:
        return f"{value:.3f}"
    return f"{value:.{-math.floor(math.log10(value)) + 2}f}"


def rate(value: float) -> str:
    """Whole numbers from 100 up (37,425), three significant digits below (2.43)."""
    return f"{value:,.0f}" if value >= 99.95 else f"{value:.3g}"


def _metric(key: str) -> Callable[[Row], Any]:
    return lambda row: (row.record.get("metrics") or {}).get(key)


def _mb(row: Row) -> float | None:
    rss = (row.record.get("metrics") or {}).get("peak_rss_bytes")
    return None if rss is None else round(rss / 2**20, 1)


# --- the verdict -----------------------------------------------------------------------------

def verdict_status(record: dict) -> str:
    """ok; unsafe: a violation an unsafe strategy is there to show; fail: a real failure."""
    v = record.get("verdict") or {}
    if v.get("ok"):
        return "ok"
    return "unsafe" if v.get("unsafe") else "fail"


def verdict_full(record: dict) -> str:
    """The verdict in words: ok, what was visible (globals), trials violated and updates
    lost (bank), or FAIL with what the checker saw."""
    v = record.get("verdict") or {}
    ok = v.get("ok")
    if "visible" in v:
        return f"{'ok' if ok else 'FAIL'} ({'visible' if v['visible'] else 'not visible'})"
    if ok:
        return "ok"
    details = v.get("details") or {}
    if "violating_trials" in details:
        text = (f"{details['violating_trials']}/{details['trials']} trials violated, "
                f"{details.get('lost_updates', 0)} lost updates")
        return text if v.get("unsafe") else f"FAIL {text}"
    return f"FAIL {v.get('actual')}"


def verdict_short(record: dict) -> str:
    """The table's form: short enough for two lines of an 80-column table. A real failure
    is only "FAIL" here; the table's notes give its full text."""
    status = verdict_status(record)
    if status == "fail" and "visible" not in (record.get("verdict") or {}):
        return "FAIL"
    details = (record.get("verdict") or {}).get("details") or {}
    if status == "unsafe" and "violating_trials" in details:
        return f"{details['violating_trials']}/{details['trials']} viol., {details.get('lost_updates', 0)} lost"
    return verdict_full(record)


def _agrees(row: Row) -> bool | None:
    return row.record.get("agrees_with_sequential")


# --- the columns, in the order they are shown ---------------------------------------------------

COLUMNS: list[Column] = [
    Column("scenario", "scenario", lambda row: row.label, str, "text", True),
    Column("backend", "backend", lambda row: row.record["backend"], str, "name", True),
    Column("n", "n", lambda row: row.record["workers"], str, "number", True),
    Column("wall_s", "wall s", lambda row: row.record.get("wall_s"), seconds, "number", True),
    Column("speedup", "speedup", lambda row: row.record.get("speedup"), "{:.2f}".format, "number", True),
    Column("efficiency", "eff.", lambda row: row.record.get("efficiency"), "{:.0%}".format, "number", False),
    Column("tasks_per_s", "tasks/s", lambda row: row.record.get("throughput_per_s"), rate, "number", True),
    Column("cpu_percent", "CPU %", _metric("cpu_percent"), "{:.0f}".format, "number", True),
    Column("peak_rss_mb", "peak RSS MB", _mb, "{:,.0f}".format, "number", False),
    Column("procs", "procs", _metric("os_processes"), str, "number", False),
    Column("threads", "threads", _metric("threads"), str, "number", False),
    Column("agrees", "= seq", _agrees, lambda v: "yes" if v else "no", "flag", True,
           status=lambda row: {True: "ok", False: "fail"}.get(_agrees(row))),
    Column("verdict", "verdict", lambda row: verdict_full(row.record), str, "text", True,
           short=lambda row: verdict_short(row.record), status=lambda row: verdict_status(row.record)),
]
BY_KEY = {c.key: c for c in COLUMNS}


def select(keys: str) -> list[Column]:
    """``--columns a,b,c`` -> those columns, in that order; ValueError naming the choices."""
    names = [k.strip() for k in keys.split(",") if k.strip()]
    unknown = [k for k in names if k not in BY_KEY]
    if unknown or not names:
        what = f"unknown column {unknown[0]!r}" if unknown else "name at least one column"
        raise ValueError(f"--columns: {what}; choose from: {', '.join(BY_KEY)}")
    return [BY_KEY[k] for k in dict.fromkeys(names)]
