"""Celery's own task events, re-emitted on taskrace's one event stream (``taskrace.events``).

A task on a worker in a container, or on another host, is seen where it runs: the worker
says so through Celery's events, which travel through the broker, and a receiver in the
harness turns them into ``task.*`` events with the harness's task indices::

    harness                              Redis                       celery workers
    -------                              -----                       --------------
    apply_async(group)  --LPUSH msg----> taskrace.<run> ---BRPOP-->  task runs
      task-sent event   --PUBLISH------>                <-PUBLISH--  task-received/started/
                                          celeryev (pub/sub)          succeeded (a few per
    CeleryTaskEvents <---PSUBSCRIBE-----                              PUBLISH, batched)
      track({task_id: index})            LLEN taskrace.<run>
      -> task.queued / started /         HLEN unacked    <---every 0.2 s while tasks are open
         finished / lost, queue.depth

Celery's events are off by default (``worker_send_task_events``, ``task_send_sent_event``)
and stay off unless someone wants per-task events (``taskrace.events.wants_tasks()``):

* a worker the harness starts gets ``-E`` (``workers.celery_workers.worker_argv(events=True)``),
  or ``TASKRACE_TASK_EVENTS=1`` in its environment (read by ``make_app``);
* a worker someone else runs (the compose lab, a host that joined) is told by broadcast
  (``app.control.enable_events()``; ``stop()`` turns them off again where they were off);
* the app that sends tasks gets ``task_send_sent_event`` while a ``CeleryTaskEvents`` runs.

Why ``enable_events()`` needs ``QuietDispatcher``: taskrace's workers run
``--without-gossip --without-heartbeat``, and without ``-E`` Celery then starts no event
dispatcher at all: ``enable_events`` (which only adds the ``task`` group to a running
dispatcher) answers "event dispatcher unavailable", and Flower meets the same. The step
starts the dispatcher with its ``worker`` group only: no heartbeat, no gossip, nothing
goes out until a broadcast adds ``task``. Off by default adds no Redis command per task
(``taskrace bench`` counts it: 19.005 per no-op task before and after); what it costs is
one Redis connection per worker, opened at start-up.

Only tracked ids are re-emitted: Redis pub/sub ignores the database number, so another
run's events on the same Redis arrive too. Events of ids not tracked yet are kept a while
(a worker may start a task before ``apply_async`` of its group has returned) and replayed
when ``track`` names them.

Per task the stream guarantees queued <= started <= finished, one ``task.finished`` per
tracked index. The times are Celery's stamps (epoch seconds, taken where the event was
sent). Celery stamps ``task-sent`` after the message is already in Redis, and two hosts'
clocks may differ a little, so a stamp can come out before the one it follows: it is then
raised to it (a start "before" its send is reported at the send). A task whose start the
receiver never saw is queued and started at its finish. ``task-succeeded``
means the call returned (taskrace's task returns a scenario's error in its result, so a
failing function is ``ok`` True here; ``task-failed`` is a task that raised).
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import defaultdict

ENV = "TASKRACE_TASK_EVENTS"  # "1": make_app turns Celery's task events on (workers, senders)
DEPTH_INTERVAL_S = 0.2  # queue depth sampled this often while tracked tasks are open
KEEP_UNTRACKED_S = 60.0  # events of ids nobody tracked (yet) are kept this long
PROBE = "taskrace-probe"  # an event the receiver sends itself to know it is subscribed

log = logging.getLogger(__name__)


def wanted_by_env() -> bool:
    return os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes", "on")


STEP = "workers.celery_events:QuietDispatcher"  # make_app adds it to the worker's consumer


def _quiet_dispatcher():
    """The worker consumer step that keeps ``enable_events()`` working on a worker started
    without ``-E`` (see the module's text). Built on first use: only a worker pays for
    importing Celery's worker machinery, not the harness."""
    from celery.worker.consumer.events import Events

    class QuietDispatcher(Events):
        """Celery's Events step, for the workers it leaves out: it runs only when task
        events, gossip and heartbeat are all off, and then starts the dispatcher with its
        ``worker`` group only (there is no heartbeat or gossip to send: nothing goes out
        until ``enable_events`` adds the ``task`` group). It runs after the Tasks step, which
        built the task strategies with no dispatcher (they read ``enabled`` once): they are
        built again."""

        requires = ("celery.worker.consumer.tasks:Tasks",)

        def __init__(self, c, **kwargs) -> None:
            super().__init__(c, **kwargs)
            self.enabled = not self.send_events  # else Celery's own Events step runs
            self.send_events, self.groups = True, ["worker"]

        def start(self, c) -> None:
            super().start(c)
            c.update_strategies()

    return QuietDispatcher


def __getattr__(name: str):
    if name == "QuietDispatcher":
        cls = globals()["QuietDispatcher"] = _quiet_dispatcher()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def group_ids(result, spans=None, per_message: int = 1, total: int | None = None) -> dict[str, list[int]]:
    """``{task_id: [index, ...]}`` for a group's ``result`` (``apply_async`` of a group).
    ``spans[k]``: the indices message k carries (the tier's map() and run_actors() have
    them); without, message k carries ``per_message`` calls from k * per_message (celery
    ``chunks``), the last one up to ``total`` calls in all."""
    out = {}
    for k, r in enumerate(result.results):
        if spans is not None:
            out[r.id] = list(spans[k])
        else:
            end = (k + 1) * per_message if total is None else min((k + 1) * per_message, total)
            out[r.id] = list(range(k * per_message, end))
    return out


class _Task:
    """One tracked Celery task id (one message: several indices when chunked)."""

    __slots__ = ("indices", "queued", "started", "worker", "finished", "lost")

    def __init__(self, indices: list[int]) -> None:
        self.indices = indices
        self.queued: float | None = None  # the times emitted, once each
        self.started: float | None = None
        self.worker: str | None = None
        self.finished = False
        self.lost = False


class CeleryTaskEvents:
    """Celery's task events of one run, on the event stream, while a batch runs::

        tracker = CeleryTaskEvents(app, "celery", queues=[queue]).start()
        tracker.enable_remote()                      # workers someone else started
        result = group(...).apply_async()
        tracker.track(group_ids(result, spans))      # or {task_id: index, ...}
        ... wait for the results ...
        tracker.drain(2.0)                           # every finish emitted, or 2 s
        tracker.stop()

    ``start`` returns once the receiver is subscribed (it sees its own probe event), so no
    event of a task sent afterwards is missed."""

    def __init__(self, app, backend: str, queues=(), url: str | None = None,
                 depth_interval: float = DEPTH_INTERVAL_S) -> None:
        self.app = app
        self.backend = backend
        self.queues = [queues] if isinstance(queues, str) else list(queues)
        self.url = url or app.conf.broker_url
        self.depth_interval = depth_interval
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._tasks: dict[str, _Task] = {}
        self._open: set[str] = set()
        self._early: dict[str, list[tuple[float, str, dict]]] = defaultdict(list)
        self._early_pruned = time.monotonic()
        self._probe_id = uuid.uuid4().hex
        self._probed = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._receiver = None
        self._conn = None
        self._sent_before = None
        self._remote_enabled: list[str] = []
        self.error: BaseException | None = None  # why the receiver stopped, if it did
        self.counts = defaultdict(int)  # Celery events seen, by type (tracked ids only)

    @classmethod
    def if_wanted(cls, app, backend: str, **options) -> "CeleryTaskEvents | None":
        """Started, when someone listens to per-task events (``events.wants_tasks()``);
        otherwise None and nothing done: events off add nothing."""
        from taskrace import events

        return cls(app, backend, **options).start() if events.wants_tasks() else None

    # lifecycle ---------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> "CeleryTaskEvents":
        self._sent_before = self.app.conf.task_send_sent_event
        self.app.conf.task_send_sent_event = True  # read at every send
        self._conn = self.app.connection_for_read()
        self._receiver = self.app.events.Receiver(self._conn, handlers={"*": self._on_event})
        receiver = threading.Thread(target=self._receive, name="taskrace-celery-events", daemon=True)
        sampler = threading.Thread(target=self._sample, name="taskrace-queue-depth", daemon=True)
        self._threads = [receiver, sampler]
        receiver.start()
        deadline = time.monotonic() + timeout
        try:
            # The receiver subscribes on its first poll: send probes until it sees one.
            with self.app.events.default_dispatcher(hostname=f"taskrace-probe@{os.getpid()}") as probe:
                while not self._probed.wait(0.05):
                    if self.error is not None or time.monotonic() > deadline:
                        why = f" ({type(self.error).__name__}: {self.error})" if self.error else ""
                        raise RuntimeError(f"celery events: the receiver did not start within {timeout:.0f} s{why}")
                    probe.send(PROBE, probe_id=self._probe_id)
        except BaseException:
            self.stop()
            raise
        sampler.start()
        return self

    def enable_remote(self, destination: list[str] | None = None, timeout: float = 2.0) -> list[str]:
        """Ask running workers (all, or the nodes in ``destination``) to send task events;
        returns the nodes that had them off (``stop`` turns those off again)."""
        replies = self.app.control.enable_events(destination=destination, reply=True, timeout=timeout) or []
        turned = [node for reply in replies for node, answer in reply.items()
                  if (answer or {}).get("ok") == "task events enabled"]
        self._remote_enabled += [n for n in turned if n not in self._remote_enabled]
        return turned

    def stop(self) -> None:
        self._stopping.set()
        if self._receiver is not None:
            self._receiver.should_stop = True
        for t in self._threads:
            if t.is_alive() and t is not threading.current_thread():
                t.join(5)
        self._threads = []
        if self._remote_enabled:
            try:  # hand the workers back as we found them
                self.app.control.disable_events(destination=self._remote_enabled, reply=True, timeout=1.0)
            except Exception:  # noqa: BLE001 - best effort: the broker may be what failed
                pass
            self._remote_enabled = []
        if self._conn is not None:
            try:
                self._conn.release()
            except Exception:  # noqa: BLE001
                pass
            self._conn = None
        if self._sent_before is not None:
            self.app.conf.task_send_sent_event = self._sent_before
            self._sent_before = None

    def __enter__(self) -> "CeleryTaskEvents":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # the batch ---------------------------------------------------------------------
    def track(self, mapping: dict) -> None:
        """``{task_id: index}`` or ``{task_id: [index, ...]}`` (one message, several calls:
        celery ``chunks``). Call it right after ``apply_async``: events that came first
        are replayed now."""
        with self._lock:
            for task_id, index in mapping.items():
                indices = list(index) if isinstance(index, (list, tuple)) else [index]
                self._tasks[task_id] = _Task(indices)
                self._open.add(task_id)
            for task_id in mapping:
                for _, kind, event in self._early.pop(task_id, ()):
                    self._handle(kind, event)
            self._done.notify_all()
        self._sample_once()  # the queue as the batch left it in Redis

    def drain(self, timeout: float = 2.0) -> list[int]:
        """Wait until every tracked task's finish (or loss) has been emitted, at most
        ``timeout`` s; then forget the batch. Returns the indices still missing (none,
        unless the workers' events never came)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._open and self.error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._done.wait(min(left, 0.05))
            missing = sorted(i for tid in self._open for i in self._tasks[tid].indices)
            self._tasks.clear()
            self._open.clear()
        if missing:
            log.warning("celery events: no finish for %d task(s) within %.1f s", len(missing), timeout)
        return missing

    def pending(self) -> int:
        with self._lock:
            return len(self._open)

    # threads ------------------------------------------------------------------------
    def _receive(self) -> None:
        try:
            # safety_interval: how often the loop looks at should_stop between events.
            for _ in self._receiver.consume(limit=None, timeout=None, safety_interval=0.2, wakeup=False):
                if self._stopping.is_set():
                    break
        except Exception as exc:  # noqa: BLE001 - the broker went away: stop, say why
            if not self._stopping.is_set():
                self.error = exc
                log.warning("celery events: receiver stopped: %s: %s", type(exc).__name__, exc)
        finally:
            with self._lock:
                self._done.notify_all()

    def _sample(self) -> None:
        while not self._stopping.wait(self.depth_interval):
            if self._open:
                self._sample_once()

    def _sample_once(self) -> None:
        if not self.queues:
            return
        from taskrace import events
        from workers.redis_state import client

        opts = self.app.conf.broker_transport_options or {}
        prefix = opts.get("global_keyprefix", "")
        try:
            pipe = client(self.url).pipeline(transaction=False)
            for q in self.queues:
                pipe.llen(f"{prefix}{q}")
            pipe.hlen(f"{prefix}{opts.get('unacked_key', 'unacked')}")
            *depths, unacked = pipe.execute()
        except Exception:  # noqa: BLE001 - a missed sample is no reason to stop a run
            return
        for q, depth in zip(self.queues, depths):
            events.emit("queue.depth", queue=q, depth=depth, unacked=unacked, backend=self.backend)

    # events ---------------------------------------------------------------------------
    def _on_event(self, event: dict) -> None:
        kind = event.get("type", "")
        if kind == PROBE:
            if event.get("probe_id") == self._probe_id:
                self._probed.set()
            return
        with self._lock:
            task_id = event.get("uuid")
            if kind.startswith("task-") and task_id not in self._tasks:
                if task_id:
                    self._early[task_id].append((time.monotonic(), kind, event))
                    self._prune_early()
                return
            self._handle(kind, event)
            if not self._open:
                self._done.notify_all()

    def _prune_early(self) -> None:
        now = time.monotonic()
        if now - self._early_pruned < 1.0:
            return
        self._early_pruned = now
        for task_id in [t for t, evs in self._early.items() if now - evs[-1][0] > KEEP_UNTRACKED_S]:
            del self._early[task_id]

    def _handle(self, kind: str, event: dict) -> None:
        """One Celery event of a tracked task, or a worker's; under the lock."""
        if kind == "worker-offline":
            node = event.get("hostname")
            for task_id in list(self._open):
                t = self._tasks[task_id]
                if t.worker == node and t.started is not None:
                    self._lose(task_id, t, "worker-offline", node)
            return
        task_id = event.get("uuid")
        t = self._tasks.get(task_id)
        if t is None:
            return
        self.counts[kind] += 1
        ts = float(event.get("timestamp") or time.time())
        node = event.get("hostname")
        if kind == "task-sent":
            self._queued(task_id, t, ts)
        elif kind == "task-started":
            self._started(task_id, t, ts, node)
        elif kind in ("task-succeeded", "task-failed"):
            self._finished(task_id, t, ts, node, kind == "task-succeeded", event)
        elif kind == "task-revoked" or (kind == "task-rejected" and not event.get("requeue")):
            self._lose(task_id, t, kind, node)

    def _emit(self, kind: str, t: _Task, task_id: str, **fields) -> None:
        from taskrace import events

        for index in t.indices:
            events.emit(kind, backend=self.backend, index=index, task_id=task_id, **fields)

    def _queued(self, task_id: str, t: _Task, ts: float) -> None:
        if t.queued is None:
            t.queued = ts
            self._emit("task.queued", t, task_id, queued=ts)

    def _started(self, task_id: str, t: _Task, ts: float, node: str | None) -> None:
        if t.started is not None or t.finished:
            return
        self._queued(task_id, t, ts)  # task-sent not here (yet): queued at the latest then
        # Stamps of two processes (two hosts, in the lab) can disagree by a little: a
        # task-sent stamped after the worker's start. Each is kept >= the one before it.
        t.started, t.worker = max(ts, t.queued), node
        self._emit("task.started", t, task_id, started=t.started, worker=node)

    def _finished(self, task_id: str, t: _Task, ts: float, node: str | None, ok: bool, event: dict) -> None:
        if t.finished:
            return
        self._started(task_id, t, ts, node)  # no started event (events turned on mid-task)
        t.finished = True
        extra = {} if ok else {"error": event.get("exception")}
        self._emit("task.finished", t, task_id, started=t.started, finished=max(ts, t.started),
                   worker=t.worker or node, ok=ok, **extra)
        self._open.discard(task_id)

    def _lose(self, task_id: str, t: _Task, why: str, node: str | None) -> None:
        if t.finished or t.lost:
            return
        t.lost = True
        self._emit("task.lost", t, task_id, reason=why, worker=t.worker or node)
        self._open.discard(task_id)
