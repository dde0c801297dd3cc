"""The event stream through Redis, for a live view in another process or container
(the lab's ``live`` service)::

    lab's run --events redis://redis:6379/0 --> RedisRelay --XADD--> taskrace:events
                                                (a thread: batches every 0.1 s)   |
    taskrace live redis://redis:6379/0  <--XREAD (blocking, from the start)--------+
       -> LiveState -> pages

Per-task events cost (Celery's task events go on for them): the relay asks for them, and
samples the machine's CPU for the page's chart, only while a live view follows (its key ``taskrace:live:following`` exists, refreshed every
second by ``follow``), so a lab that always relays its run measures the same when nobody
watches.

A Redis *stream*, not pub/sub: pub/sub ignores the database number (two labs on one
server would hear each other) and keeps nothing (a live service started after the run
would miss its start). A stream lives in the URL's database and keeps the last
``MAXLEN`` events, so a page opened late still gets the run from its beginning.
The emitting thread only puts the event on a queue: a slow Redis never slows the run.
"""
from __future__ import annotations

import json
import queue
import threading
import time

from taskrace import events
from taskrace.events import Event
from workers.infra.redact import redact_url, scrub

STREAM_KEY = "taskrace:events"
FOLLOWING_KEY = "taskrace:live:following"  # exists while a live view follows the stream
FOLLOWING_TTL_S = 5
MAXLEN = 200_000
FLUSH_S = 0.1


def is_redis_url(text: str | None) -> bool:
    return bool(text) and text.split("://", 1)[0] in ("redis", "rediss", "unix")


def _connect(url: str):
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        raise ConnectionError(f"cannot reach {redact_url(url)}: {exc}") from None
    return client


class RedisRelay:
    """``--events redis://...``: every event appended to the stream ``taskrace:events``."""

    def __init__(self, url: str, tasks: bool | None = None) -> None:
        """``tasks``: per-task events always (True), never (False), or while a live view
        follows (None, the default)."""
        self._r = _connect(url)
        self._tasks = tasks
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._sub = events.subscribe(self._queue.put, tasks=self._followed() if tasks is None else tasks)
        self._thread = threading.Thread(target=self._flush_loop, name="taskrace-relay", daemon=True)
        self._thread.start()

    def _followed(self) -> bool:
        try:
            return bool(self._r.exists(FOLLOWING_KEY))
        except Exception:  # noqa: BLE001 - unknown: no task events (the cheaper guess)
            return False

    def _flush(self) -> None:
        batch = []
        while True:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if not batch:
            return
        with self._r.pipeline(transaction=False) as pipe:
            for event in batch:
                line = json.dumps(scrub(event.to_dict()), default=str, separators=(",", ":"))
                pipe.xadd(STREAM_KEY, {"e": line}, maxlen=MAXLEN, approximate=True)
            try:
                pipe.execute()
            except Exception:  # noqa: BLE001 - a relay that fails must not fail the run
                pass

    def _flush_loop(self) -> None:
        from taskrace.live.cpu import INTERVAL_S, CpuMeter

        ticks, meter, followed = 0, None, self._tasks is not False and self._followed()
        every = max(1, round(INTERVAL_S / FLUSH_S))
        while not self._stop.wait(FLUSH_S):
            ticks += 1
            if ticks % 10 == 0 and self._tasks is not False:  # once a second: is a live view following?
                followed = self._followed()
                if self._tasks is None:
                    self._sub.want_tasks(followed)
            # The machine's CPU for the page, as --live's sampler tells it, while a live view
            # follows (the lab's live service has no view of the run's CPU): one read of
            # /proc/stat per sample, none when nobody watches.
            if followed and ticks % every == 0:
                if meter is None:
                    meter = CpuMeter()
                else:
                    events.emit("cpu.sample", **meter.read())
            elif not followed:
                meter = None
            self._flush()

    def close(self) -> None:
        self._sub.close()
        self._stop.set()
        self._thread.join(timeout=5)
        self._flush()
        self._r.close()

    def __enter__(self) -> "RedisRelay":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def follow(url: str, add, stop: threading.Event, block_ms: int = 500) -> None:
    """Feed ``add(event)`` with the stream's events, from its start, until ``stop``. A
    broker that goes away (the fault lab restarts it) is waited for, and the stream read
    on from the last event seen. Only a broker never reached raises (ConnectionError)."""
    import redis

    client = _connect(url)
    last = "0-0"
    announced = 0.0
    try:
        while not stop.is_set():
            try:
                if time.monotonic() - announced > 1:  # "a live view follows": the run's task events on
                    client.set(FOLLOWING_KEY, "1", ex=FOLLOWING_TTL_S)
                    announced = time.monotonic()
                reply = client.xread({STREAM_KEY: last}, count=5000, block=block_ms)
            except redis.RedisError:
                announced = 0.0
                stop.wait(1.0)  # redis-py reconnects on the next command
                continue
            for _key, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id
                    try:
                        add(Event.from_dict(json.loads(fields[b"e"])))
                    except (KeyError, ValueError, TypeError):
                        continue  # not ours: skip it
    finally:
        client.close()
