"""The results schema: one record per run, gathered in one JSON document.

    {"schema": "taskrace.results/1", "created": ..., "environment": {...},
     "runs": [{"scenario", "backend", "workers", "strategy", "params", "tier",
               "wall_s", "timings": {...}, "tasks", "throughput_per_s",
               "metrics": {...}, "task_timing": {...}, "verdict": {...},
               "answer_digest", "environment": {...}}, ...]}

Every record carries its environment (the Python build, the GIL, the cores) so records
from different machines can be pooled and still explained. Timestamps inside a record
come from one host's monotonic clock.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import platform
import sys
import time
from importlib import metadata

from taskrace.reporting.documents import write_document
from workers.infra.redact import scrub

SCHEMA = "taskrace.results/1"
PACKAGES = ("taskrace", "celery", "kombu", "redis", "psutil", "rich", "docker", "matplotlib")


def environment() -> dict:
    gil = getattr(sys, "_is_gil_enabled", None)
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "build": " ".join(platform.python_build()),
        "compiler": platform.python_compiler(),
        "gil_enabled": gil() if gil else True,  # builds before 3.13 always have the GIL
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "default_start_method": multiprocessing.get_start_method(allow_none=True) or
                                multiprocessing.get_context().get_start_method(),
        "packages": versions,
        "clock": "time.perf_counter (CLOCK_MONOTONIC on Linux): comparable within one host only",
    }


def digest(answer) -> str:
    """A short fingerprint of a scenario's canonical answer, to compare tiers."""
    blob = json.dumps(answer, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def document(records: list[dict], fits: list[dict] | None = None, capacity: dict | None = None) -> dict:
    """The whole results file. ``capacity`` is taskrace.measuring.capacity's measure of the CPUs,
    taken before and after the runs: {"before": {...}, "after": {...}}."""
    env = environment()
    if capacity:
        env["cpu_capacity"] = capacity
    # Every string passes workers.infra.redact on its way out (URL userinfo, --password values):
    # whatever a record picked up, results and the report built from them carry no secret.
    return scrub({"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "environment": env, "runs": records, "fits": fits or []})


def write_json(path: str, records: list[dict], fits: list[dict] | None = None,
               capacity: dict | None = None) -> None:
    write_document(path, document(records, fits, capacity))


class ResultsWriter:
    """``--json FILE`` as the event stream's subscriber: the file is written again, whole,
    as each point ends (``point.end``), so a run cut short by Ctrl-C, a broker that goes
    away or a dead machine still leaves every point it finished; the command writes the
    complete document (fits, CPU capacity) over it at the end."""

    def __init__(self, path: str) -> None:
        from taskrace import events

        self.path, self.records = path, []
        self._sub = events.subscribe(self.on_event, tasks=False)

    def on_event(self, event) -> None:
        if event.kind == "point.end":
            self.records.append(event["record"])
            write_json(self.path, self.records)

    def close(self) -> None:
        self._sub.close()

    def __enter__(self) -> "ResultsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BadResults(ValueError):
    """A results file that cannot be used; the message is one line."""


REQUIRED_RUN_KEYS = ("scenario", "backend", "workers", "wall_s", "verdict", "metrics")


def load_json(path: str) -> dict:
    """Read and check a results document; BadResults (one line) if it is missing, empty,
    not JSON, or not taskrace results."""
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError as exc:
        raise BadResults(f"cannot read {path}: {exc.strerror or exc}") from None
    if not text.strip():
        raise BadResults(f"{path} is empty")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadResults(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("runs"), list):
        raise BadResults(f"{path} is not a taskrace results file (expected schema {SCHEMA})")
    for i, run in enumerate(doc["runs"]):
        missing = [k for k in REQUIRED_RUN_KEYS if not isinstance(run, dict) or k not in run]
        if missing:
            raise BadResults(f"{path}: run {i} lacks {', '.join(missing)}")
    if not doc["runs"]:
        raise BadResults(f"{path} holds no runs")
    return scrub(doc)  # a file written before redaction existed must not pass a secret on
