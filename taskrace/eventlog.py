"""The event stream on disk: ``--events FILE`` writes it as JSON lines as it happens, and
``read_log`` reads it back (to replay a run, or study it later).

Every string passes the records' redaction on its way out (``workers.infra.redact``): a
broker URL keeps no password, in the log as in the results.
"""
from __future__ import annotations

import json
import threading

from taskrace.events import Event, subscribe
from workers.infra.redact import scrub


class JsonLinesLog:
    """``--events FILE``: one JSON object a line, flushed as it comes, so a run can be
    followed with ``tail -f``, replayed (``taskrace.events.read_log``) and studied later.
    Every string passes the records' redaction (a broker URL keeps no password)."""

    def __init__(self, path: str, tasks: bool = True) -> None:
        self.path = path
        self._fh = open(path, "w", encoding="utf-8")
        self._write_lock = threading.Lock()
        self.count = 0
        self._sub = subscribe(self.write, tasks=tasks)

    def write(self, event: Event) -> None:
        line = json.dumps(scrub(event.to_dict()), default=str, separators=(",", ":")) + "\n"
        with self._write_lock:
            if not self._fh.closed:
                self._fh.write(line)
                self._fh.flush()
                self.count += 1

    def close(self) -> None:
        self._sub.close()
        with self._write_lock:
            self._fh.close()

    def __enter__(self) -> "JsonLinesLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_sink(target: str):
    """Where ``--events`` sends the stream: a JSON-lines file, or a Redis URL (the live
    view elsewhere follows it: ``taskrace.live.relay``). A context manager either way."""
    from taskrace.live.relay import RedisRelay, is_redis_url
    from taskrace.options import UsageError, check_writable

    if is_redis_url(target):
        try:
            return RedisRelay(target)
        except ConnectionError as exc:
            raise UsageError(f"--events: {exc}") from None
    check_writable(target)
    return JsonLinesLog(target)


class BadEventLog(ValueError):
    """An event log that cannot be read; the message is one line."""


def read_log(path: str) -> list[Event]:
    """The events a JsonLinesLog wrote, in order."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.readlines()
    except OSError as exc:
        raise BadEventLog(f"cannot read {path}: {exc.strerror or exc}") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            out.append(Event.from_dict(d))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise BadEventLog(f"{path}:{n} is not a taskrace event (JSON with kind and t)") from None
    return out
