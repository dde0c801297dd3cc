"""Celery app factory shared by the harness (client side) and ``celery worker``.

Workers are started as ``python -m celery -A workers.celery_app worker ...`` with
the broker URL in the ``TASKRACE_BROKER_URL`` env var -- never on argv, so the
Redis password does not show up in ``ps``.

Security posture: JSON only (a pickle message would be code execution on the
worker), and the one generic task only calls functions living under the
``scenarios.`` package, or in a module the worker's own environment names in
``TASKRACE_TASK_MODULES`` (comma-separated; ``taskrace.race`` on celery: the caller's
function, by its import path). A message can never widen that list.
"""
from __future__ import annotations

import importlib
import json
import os
import socket
import time

from celery import Celery
from celery.signals import celeryd_after_setup

from workers import celery_events
from workers.base import peak_rss
from workers.celery_workers import TASK_MODULES_ENV
from workers.delivery import ENV as DELIVERY_ENV, get_mode
import workers.redis_state  # noqa: F401  (registers the JSON types of shared-state handles)

TASK_CALL = "taskrace.call"
TASK_ACTOR = "taskrace.actor"
TASK_PING = "taskrace.ping"
TASK_OP = "taskrace.op"
TASK_PART = "taskrace.part"  # a chord's map task (workers.celery_chord): raises on error
TASK_REDUCE = "taskrace.reduce"  # a chord's body: the reduce, on a worker
ALLOWED_PREFIX = "scenarios."


def task_modules() -> tuple[str, ...]:
    """The modules TASKRACE_TASK_MODULES lets this worker call (never ``__main__``)."""
    names = (m.strip() for m in os.environ.get(TASK_MODULES_ENV, "").split(","))
    return tuple(m for m in names if m and m != "__main__")


def _allowed(module: str) -> bool:
    return module.startswith(ALLOWED_PREFIX) or any(module == m or module.startswith(m + ".")
                                                    for m in task_modules())


def _where_allowed() -> str:
    extra = task_modules()
    return f"'{ALLOWED_PREFIX}<module>:<name>'" + (f" or a function of {', '.join(extra)}" if extra else
                                                   f" (more modules: {TASK_MODULES_ENV} in the worker's environment)")


def _env_bool(name: str, default: bool) -> bool:
    v = os.environ.get(name)
    return default if v is None else v.strip().lower() in ("1", "true", "yes", "on")


# JSON of more app.conf settings, applied last on the harness's side and every worker's
# (``taskrace knobs`` turns Celery's settings one at a time); broker_transport_options are
# merged. Never the serializers: JSON only stays JSON only.
CONF_ENV = "TASKRACE_CELERY_CONF"
_FIXED = ("task_serializer", "result_serializer", "accept_content", "result_accept_content")


def env_conf() -> dict:
    conf = json.loads(os.environ.get(CONF_ENV) or "{}")
    if not isinstance(conf, dict) or any(k in conf for k in _FIXED):
        raise ValueError(f"{CONF_ENV}: a JSON object of settings, not the serializers")
    return conf


def apply_delivery(app: Celery, mode) -> None:
    """A delivery mode's settings (None: Celery's defaults), then the operator's own
    (TASKRACE_CELERY_CONF), which win. Again on an app already made, when the celery tier
    takes the mode its external workers run."""
    if mode is not None:
        app.conf.update(mode.settings)
        app.conf.broker_transport_options = {**app.conf.broker_transport_options,
                                             **mode.transport_options}
    extra = env_conf()
    transport = extra.pop("broker_transport_options", {})
    app.conf.update(extra)
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, **transport}


def make_app(broker_url: str, delivery: str | None = None) -> Celery:
    app = Celery("taskrace", broker=broker_url, backend=broker_url)
    app.conf.update(
        # JSON everywhere: accept_content is what the worker will *decode*;
        # pickle messages are refused with kombu's ContentDisallowed.
        task_serializer="json", result_serializer="json",
        accept_content=["json"], result_accept_content=["json"],
        # prefetch 1 = fair dispatch, so a race measures workers, not buffering.
        worker_prefetch_multiplier=int(os.environ.get("TASKRACE_PREFETCH", "1")),
        task_acks_late=_env_bool("TASKRACE_ACKS_LATE", False),
        # Fail fast on a dead broker instead of Celery's default ~forever retry.
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=3,
        broker_connection_timeout=5,
        broker_transport_options={"socket_timeout": 5, "socket_connect_timeout": 5},
        # A lost result store should end a run in seconds, not after 20 retries.
        result_backend_transport_options={"retry_policy": {"max_retries": 3, "interval_start": 0,
                                                           "interval_step": 0.5, "interval_max": 1}},
        redis_socket_connect_timeout=5,
        result_expires=3600,  # don't leave result keys in a shared Redis forever
        worker_hijack_root_logger=False,  # the harness owns logging config
        worker_send_task_events=False, task_send_sent_event=False,  # less broker chatter
        enable_utc=True,
    )
    if celery_events.wanted_by_env():  # TASKRACE_TASK_EVENTS=1: Celery's task events on
        app.conf.update(worker_send_task_events=True, task_send_sent_event=True)
    app.steps["consumer"].add(celery_events.STEP)  # enable_events() works without -E
    delivery = delivery or os.environ.get(DELIVERY_ENV)
    # the mode's exact settings, on the harness and every worker (a fault run, or the celery
    # tier's --delivery)
    apply_delivery(app, get_mode(delivery) if delivery else None)
    app.task(name=TASK_CALL, bind=True)(_call)
    # Actors run for the whole race and wait on each other. acks_late + prefetch 1 means
    # a worker process holds only the actor it is running, never a second one queued
    # behind it (which would deadlock a producer waiting for its consumer).
    app.task(name=TASK_ACTOR, bind=True, acks_late=True)(_call)
    app.task(name=TASK_PING, bind=True)(_ping)
    # A chord (workers.celery_chord): its map tasks raise on error, so Celery marks them
    # failed and the body gets ChordError; the body resolves its reduce by name, as above.
    app.task(name=TASK_PART, bind=True)(_part)
    app.task(name=TASK_REDUCE, bind=True)(_reduce)
    # The fault lab's operations: no result (progress is counted where the effect lands,
    # in the state store), and the delivery's redelivered flag handed to the function.
    app.task(name=TASK_OP, bind=True, ignore_result=True)(_op)
    return app


_NODE: str | None = None  # this worker's node name, known once the worker is set up


@celeryd_after_setup.connect
def _remember_node(sender, instance, **kwargs) -> None:
    # Runs in the worker's main process before the pool forks, so children inherit it.
    global _NODE
    _NODE = sender


def _worker_id(task) -> str:
    # request.hostname is the node name ("w1@host"), which tells workers apart; a call
    # made inside celery.starmap (chunks) has an empty request, hence the fallback.
    return f"{task.request.hostname or _NODE or socket.gethostname()}:{os.getpid()}"


def _resolve(fn_path: str):
    """``scenarios.mod:qual.name`` -> callable, refusing anything outside scenarios (and
    the modules of TASKRACE_TASK_MODULES)."""
    mod_name, sep, qualname = fn_path.partition(":") if isinstance(fn_path, str) else ("", "", "")
    if not (sep and _allowed(mod_name) and qualname):
        raise PermissionError(f"refused fn_path {fn_path!r}: only {_where_allowed()} is allowed")
    parts = qualname.split(".")
    # No dunders: blocks scenarios.x:f.__globals__ / __builtins__ style escapes.
    if not all(p.isidentifier() and not p.startswith("__") for p in parts):
        raise PermissionError(f"refused fn_path {fn_path!r}: bad attribute name")
    obj = importlib.import_module(mod_name)
    for p in parts:
        obj = getattr(obj, p)
    # Blocks re-exports such as scenarios.x:os.system (module imported `os`).
    if not callable(obj) or not _allowed(str(getattr(obj, "__module__", ""))):
        raise PermissionError(f"refused fn_path {fn_path!r}: not a callable defined in an allowed module")
    return obj


def _call(self, fn_path: str, args: list | None = None) -> dict:
    # Errors are returned, not raised: one bad task must not abort a race.
    # perf_counter is CLOCK_MONOTONIC on Linux, i.e. comparable across processes on one host.
    cpu0 = time.thread_time()
    started = time.perf_counter()
    value, error = None, None
    try:
        fn = _resolve(fn_path)
        if not isinstance(args, (list, tuple)):
            raise TypeError(f"args must be a list, got {type(args).__name__}")
        value = fn(*args)
    except Exception as exc:  # noqa: BLE001 - reported in the result
        error = f"{type(exc).__name__}: {exc}"
    finished = time.perf_counter()
    if error is None:
        try:  # a non-JSON value would otherwise fail inside the result backend
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            value, error = None, f"TypeError: result not JSON-serialisable: {exc}"
    # CPU time and peak memory, measured where the task ran: per worker node (and so per
    # container in the compose lab) without any access to the Docker engine.
    out = {"value": value, "error": error, "started": started, "finished": finished,
           "worker": _worker_id(self), "cpu_s": time.thread_time() - cpu0, "max_rss": peak_rss()}
    # A message kombu gave back (visibility timeout, a rejected task of a killed pool
    # child) says so: the harness then reports the task as redelivered (it ran again).
    # Only then, so the usual result is not one byte longer.
    if (self.request.delivery_info or {}).get("redelivered"):
        out["redelivered"] = True
    return out


class PartFailed(RuntimeError):
    """A chord's map task failed: raised so that Celery marks it failed (its chord's body
    then gets ChordError instead of running)."""


def _part(self, fn_path: str, args: list | None = None) -> dict:
    out = _call(self, fn_path, args)
    if out["error"] is not None:
        raise PartFailed(out["error"])
    return out


def _reduce(self, parts: list, fn_path: str) -> dict:
    """A chord's body: ``parts`` are its map tasks' results (``_part``'s dicts, in header
    order); ``fn_path`` reduces their values. Returns ``_call``'s dict for the reduce, with
    each part's dict minus its value (the harness gets the parts' timings from here)."""
    cpu0 = time.thread_time()
    started = time.perf_counter()
    value, error = None, None
    try:
        if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
            raise TypeError("a chord's body takes its header's results, a list of dicts")
        value = _resolve(fn_path)([p.get("value") for p in parts])
        json.dumps(value)
    except Exception as exc:  # noqa: BLE001 - reported in the result
        value, error = None, f"{type(exc).__name__}: {exc}"
    return {"value": value, "error": error, "started": started, "finished": time.perf_counter(),
            "worker": _worker_id(self), "cpu_s": time.thread_time() - cpu0, "max_rss": peak_rss(),
            "parts": [{k: v for k, v in p.items() if k != "value"} for p in parts]
            if isinstance(parts, list) else [],
            # what the header carried into the body, as JSON: the chord's cost per result byte
            "carried_bytes": len(json.dumps(parts, separators=(",", ":")))}


def _op(self, fn_path: str, args: list) -> None:
    """One operation of the fault lab. Errors propagate (Celery logs them): the fault lab
    counts effects in the state store, not task results."""
    info = self.request.delivery_info or {}
    _resolve(fn_path)(*args, redelivered=bool(info.get("redelivered")), worker=_worker_id(self))


def _ping(self) -> dict:
    return {"hostname": self.request.hostname or socket.gethostname(), "pid": os.getpid()}


# Module-level app for `celery -A workers.celery_app worker`; URL only from env.
app = make_app(os.environ.get("TASKRACE_BROKER_URL", "redis://127.0.0.1:6379/0"))
