"""The knob ladder's task, on the workers (``celery worker --include`` this module) and
on the harness's app (so ``chunks`` can be built): ``taskrace.knob(kind, i, key, total)``.

``kind`` "noop" returns None at once; "tiny" returns ``sum_of_powers([i], 2)`` (one
square). Where results are off the harness cannot read completions from the result
backend, so the worker counts them itself: after every *message* (one task, or one
``chunks`` message of many calls) a ``task_postrun`` handler runs ``INCRBY key calls`` on
the broker, and the message that brings the count to ``total`` pushes one token the
harness waits on (``BLPOP key:done``). One command per message, one per batch, counted
with the rest. A call that failed counts into ``key:failed`` instead: the ladder refuses
a batch with any.
"""
from __future__ import annotations

import os

from celery.signals import task_postrun

from scenarios.mapreduce import sum_of_powers

TASK = "taskrace.knob"
STARMAP = "celery.starmap"  # what Celery's chunks run: one message, many calls


def knob(kind: str, i: int, key: str | None = None, total: int = 0):
    return sum_of_powers([i], 2) if kind == "tiny" else None


def register(app) -> None:
    if TASK not in app.tasks:
        app.task(name=TASK)(knob)


_CLIENT: tuple[int, object] | None = None  # (pid, redis client): one per process, made after fork


def _client():
    global _CLIENT
    if _CLIENT is None or _CLIENT[0] != os.getpid():
        import redis

        url = os.environ.get("TASKRACE_BROKER_URL", "redis://127.0.0.1:6379/0")
        _CLIENT = (os.getpid(), redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5))
    return _CLIENT[1]


def _calls(name: str, args, kwargs) -> tuple[str | None, int, int]:
    """(counter key, calls in this message, total) of a message of the knob task."""
    if name == TASK and args and len(args) >= 4:
        return args[2], 1, int(args[3])
    if name == STARMAP:  # chunks: xstarmap(task=<signature>, it=[args, ...]), as keywords
        task, items = (kwargs or {}).get("task"), list((kwargs or {}).get("it") or [])
        if (task or {}).get("task") == TASK and items and len(items[0]) >= 4:
            return items[0][2], len(items), int(items[0][3])
    return None, 0, 0


@task_postrun.connect
def _count(sender=None, args=None, kwargs=None, state=None, **_) -> None:
    key, calls, total = _calls(getattr(sender, "name", ""), args, kwargs)
    if not key:
        return  # results on: completions are in the result backend
    r = _client()
    if state != "SUCCESS":
        r.incrby(f"{key}:failed", calls)
    if r.incrby(key, calls) == total:
        r.rpush(f"{key}:done", 1)


try:  # on a worker, started with -A workers.celery_app: the task on its app
    from workers.celery_app import app as _worker_app

    register(_worker_app)
except Exception:  # noqa: BLE001 - the harness registers it on its own app
    pass
