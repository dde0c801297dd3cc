"""Celery workers behind Redis: message passing through a broker, no shared memory.

How data crosses the process boundary::

    harness (caller)                    Redis                        celery worker processes
    ----------------                    -----                        -----------------------
    map(fn, args_list)
      taskrace.call("scenarios.m:fn",  --JSON--> list taskrace.<run> --> _call: fn(*args)
                    args)
      Outcome <---------------JSON----- celery-task-meta-<id> <------- {"value", "error",
                                                                        "started", "finished",
                                                                        "worker": node:pid}
    run_actors(actors)
      taskrace.actor(fn, args with    --JSON: key names only-------->  fn(RedisAccounts(key),
                     handles)                                              RedisLock, RedisChannel)
    accounts / lock / channel          keys taskrace:<run>:*  <-------  GET/SET/EVAL/BLPOP

Nothing is pickled: the app accepts JSON only, and a worker resolves functions by name
under ``scenarios.`` alone. The broker is ``--redis-url``/``REDIS_URL`` or, failing those,
a private Redis that this tier starts and removes (``workers.infra.redis_server``). Each run
uses its own queue and key prefix, so a shared Redis is safe to use.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from taskrace import events
from workers.base import Outcome, Tier, TierFailure, TierOption
from workers.celery_watch import (ACTOR_GRACE_S, INSPECT_TIMEOUT_S, PING_MISSES, SETTLE_SLACK_S, STALL_PING_S,
                                  message_id, ranges, Settled, Watch, why_lost)
from workers.celery_workers import (CELERY_ENV_OVERRIDES, POOLS, PROJECT_ROOT, TASK_MODULES_ENV, start_worker,
                                    stop_workers, wait_ready)
from workers.delivery import (ACTORS_REFUSED, EFFECTIVELY_ONCE, ENV as DELIVERY_ENV, KOMBU_DEFAULT_VISIBILITY_S,
                              MODES, redelivers_after_worker_death, resolve, saving_mode)
from workers.infra.latency_proxy import LatencyProxy, parse_latency, redis_target, through
from workers.infra.redis_server import EmbeddedRedis, check_redis, redact_url
from workers.redis_state import RedisAccounts, RedisChannel, RedisLock, client

# Actors that coordinate the others (the pipeline's producer, the bank queue's owner):
# the first to run in the harness when external workers have too few slots for all.
HARNESS_FIRST = ("producer", "owner")


def _path(fn) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


class CeleryTier(Tier):
    name = "celery"
    summary = "real celery worker processes fed through Redis: JSON messages, no shared memory"
    shares_memory = False
    needs_broker = True
    bank_strategies = ("none", "lock", "atomic", "optimistic", "queue")
    reduces_remotely = True  # map_reduce: a Celery chord (workers.celery_chord)
    cli_options = (
        TierOption("redis_url", "broker and result store (default: $REDIS_URL, else a private Redis "
                   "started for the run)", metavar="URL"),
        TierOption("pool", "worker pool", default="prefork", choices=POOLS),
        TierOption("concurrency", "slots per worker", type=int, default=1, metavar="N"),
        TierOption("prefetch", "worker_prefetch_multiplier", type=int, default=1, metavar="N"),
        TierOption("acks_late", "task_acks_late: acknowledge a task when it ends, not when it starts "
                   "(alone: --delivery acks-late-only)", switch=True),
        TierOption("delivery", "what the queue promises when a worker dies: the fault lab's modes, the same "
                   "settings (workers.delivery). Default at-most-once (Celery's defaults), acks-late-only "
                   "with --acks-late", choices=tuple(MODES)),
        TierOption("chunk", "calls per message (celery chunks)", type=int, default=1, metavar="N"),
        TierOption("external", "use workers someone else runs (the compose lab's worker service)",
                   switch=True, spelling="--external-workers"),
        TierOption("latency", "one-way delay between the workers and Redis, each direction, added "
                   "by a proxy (workers.infra.latency_proxy): 5ms, 0.005s, 5 (= ms), 2ms+-1ms (jitter); "
                   "only the workers pay it, the harness reaches Redis directly", metavar="DELAY"),
    )

    def __init__(self, workers: int = 1, redis_url: str | None = None, pool: str = "prefork",
                 concurrency: int = 1, prefetch: int = 1, acks_late: bool = False, chunk: int = 1,
                 task_timeout: float = 600.0, external: bool | None = None, queue: str | None = None,
                 scaler=None, latency=None, delivery: str | None = None, task_modules: dict | None = None,
                 **options) -> None:
        super().__init__(workers, **options)
        if pool not in POOLS:
            raise ValueError(f"unknown --pool {pool!r}; choose from: {', '.join(POOLS)}")
        for flag, value, low in (("--concurrency", concurrency, 1), ("--prefetch", prefetch, 1),
                                 ("--chunk", chunk, 1)):
            if value < low:
                raise ValueError(f"{flag} must be at least {low}, got {value}")
        self.redis_url = redis_url or os.environ.get("REDIS_URL") or None
        self.pool, self.concurrency, self.prefetch = pool, concurrency, prefetch
        # One DeliveryMode, resolved here: the harness's app and every worker get its name
        # (TASKRACE_DELIVERY), so both apply the very settings the fault lab prints. No
        # --delivery: $TASKRACE_DELIVERY (the compose lab gives its lab and workers the same).
        chosen = delivery or os.environ.get(DELIVERY_ENV) or None
        self.delivery = resolve(chosen, acks_late)
        # Nobody chose: external workers' own mode is adopted (when they agree on one), as
        # their number is; a chosen mode they do not run is refused (_check_external_delivery).
        self._delivery_chosen = bool(chosen or acks_late)
        self.chunk, self.task_timeout = chunk, task_timeout
        # task_modules: {module: the folder it imports from, or None}: modules besides
        # scenarios. the workers this tier starts may call (taskrace.race's function's),
        # told to them in TASKRACE_TASK_MODULES, their folders put on their PYTHONPATH.
        # External workers keep their own list (their operator's).
        self.task_modules = dict(task_modules or {})
        self.incidents: list[dict] = []  # workers that died under a run, and what it cost
        self.run_id = secrets.token_hex(4)
        # external: workers someone else runs (the compose lab's `worker` service), on a
        # shared queue; -n is then how many of them must be up. `scaler(n)` may make it so.
        # None: as $TASKRACE_EXTERNAL_WORKERS says (the lab's services set it); False: never,
        # for a caller that starts its own workers (the network study, behind its proxy).
        self.external = external if external is not None else os.environ.get("TASKRACE_EXTERNAL_WORKERS") == "1"
        self.scaler = scaler
        # Plain tasks go to this run's own queue, actors to a second one. Our -n workers
        # listen to both; workers added only to give every actor a slot (reserve) listen
        # to the actor queue alone, so plain tasks always meet exactly -n workers. With
        # external workers (all on the shared TASKRACE_QUEUE), -n of them are told to
        # consume this run's queue too (add_consumer), and the shared queue takes actors.
        self.queue = queue or f"taskrace.{self.run_id}"
        self.actor_queue = (os.environ.get("TASKRACE_QUEUE", "taskrace") if self.external
                            else f"{self.queue}.actors")
        self._main_nodes: list[str] = []
        self._task_nodes: list[str] = []  # ... kept for the record once stop() handed them back
        if self.external and not self.redis_url:
            raise ValueError("external workers need --redis-url or REDIS_URL (the broker they listen on)")
        # latency: a proxy (workers.infra.latency_proxy) between the workers this tier starts and
        # Redis, delay +- jitter each way. Only the workers pay it (the broker, results and
        # shared state they use); the harness reaches Redis directly, as if beside it.
        self.latency = parse_latency(latency) if latency is not None else None
        if self.latency is not None and self.external:
            raise ValueError("--latency delays the workers this tier starts; external workers "
                             "reach Redis on their own (put the proxy in front of them)")
        if self.latency is not None and self.redis_url:
            redis_target(self.redis_url)  # ValueError now for a unix:// broker
        self._proxy: LatencyProxy | None = None
        self._proxy_stats: dict = {}
        self.worker_url: str | None = None
        self.prefix = f"taskrace:{self.run_id}"
        self.url: str | None = None
        self.app = None
        self._embedded: EmbeddedRedis | None = None
        self._workers: list = []
        self._dead_pids: set[int] = set()  # workers of this tier seen dead (and replaced)
        self._retired: list = []  # ... kept for stop() to reap
        self._replaced = 0
        self._events = None  # workers.celery_events.CeleryTaskEvents while someone listens to tasks
        self._dead_nodes: set[str] = set()  # external workers taken for dead (no pings)
        self._logdir: str | None = None
        self._nodes_up: list[str] = []
        self.extra_workers = 0
        # External workers without a scaler: actors beyond their slots run in the harness.
        self._external_slots: int | None = None
        self.harness_actors = 0

    def describe(self) -> dict:
        return {"workers": self.workers, "pool": self.pool, "concurrency": self.concurrency,
                "prefetch_multiplier": self.prefetch, "acks_late": self.acks_late, "chunk": self.chunk,
                "broker": "embedded" if self._embedded or not self.redis_url else redact_url(self.redis_url),
                "queue": self.queue, "actor_queue": self.actor_queue, "extra_actor_workers": self.extra_workers,
                "actor_slots": self._external_slots,
                "external_workers": self.external, "latency": self._latency_record(),
                **({"task_modules": sorted(self.task_modules)} if self.task_modules else {}),
                "nodes_up": sorted(self._nodes_up) if self._nodes_up else [w.name for w in self._workers],
                "nodes_for_tasks": (self._main_nodes or self._task_nodes
                                    or [w.name for w in self._workers[:self.workers]]),
                "delivery": {**self.delivery.describe(), "settings_text": self.delivery.settings_text(),
                             "effectively_once": dict(EFFECTIVELY_ONCE, actors="refused: " + ACTORS_REFUSED)},
                "dead_workers": self.incidents}

    def _latency_record(self) -> dict | None:
        if self.latency is None:
            return None
        return {**self.latency.to_dict(), "paid_by": "workers", "round_trip_added_ms":
                round(2 * self.latency.delay * 1e3, 3), **{k: self._proxy_stats[k] for k in
                ("connections_total", "bytes_up", "bytes_down") if k in self._proxy_stats}}

    @property
    def acks_late(self) -> bool:
        """The delivery mode's (the one taken from external workers included)."""
        return bool(self.delivery.settings.get("task_acks_late"))

    # lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        for name in CELERY_ENV_OVERRIDES:  # they would override the URL we configure
            os.environ.pop(name, None)
        if self.redis_url:
            check_redis(self.redis_url)  # RedisUnavailable: one line, password hidden
            self.url = self.redis_url
        else:
            self._embedded = EmbeddedRedis().start()
            self.url = self._embedded.url
        self.worker_url = self.url
        if self.latency is not None:
            self._proxy = LatencyProxy(redis_target(self.url), self.latency).start()
            self.worker_url = through(self.url, *self._proxy.address)
        from workers.celery_app import make_app  # celery imports only when this tier runs

        self.app = make_app(self.url, self.delivery.name)
        # Task events for the event stream (taskrace.events) come from Celery's own
        # events, only while someone listens to tasks: off, they cost no Redis command.
        from workers.celery_events import CeleryTaskEvents

        try:
            self._events = CeleryTaskEvents.if_wanted(self.app, self.name, queues=[self.queue, self.actor_queue],
                                                      url=self.url)
        except RuntimeError as exc:
            raise TierFailure(f"celery: task events: {exc}") from None
        if self.external:
            self._await_external(self.workers)
            self._check_external_delivery()
            self._main_nodes = sorted(self._nodes_up)[:self.workers]
            replies = self.app.control.add_consumer(self.queue, destination=self._main_nodes,
                                                    reply=True, timeout=5.0)
            if len(replies) < len(self._main_nodes):
                raise TierFailure(f"celery: only {len(replies)} of {len(self._main_nodes)} external "
                                  f"workers took the run's queue")
            if self._events is not None:  # workers someone else started: asked to send them
                self._events.enable_remote(self._nodes_up)
            # A worker answers at once but polls the new queue only from its next BRPOP
            # (kombu's Redis transport blocks up to 1 s): wait that out, off the clock.
            time.sleep(1.5)
            return
        self._logdir = tempfile.mkdtemp(prefix="taskrace-celery-")
        self._start_workers(self.workers, "w", f"{self.queue},{self.actor_queue}")

    def _await_external(self, count: int, timeout: float = 120.0) -> None:
        """Scale the external workers to ``count`` (when a scaler is set) and wait until
        that many answer a ping."""
        if self.scaler is not None:
            self.scaler(count)
        deadline = time.monotonic() + timeout
        while True:
            replies = self.app.control.ping(timeout=1.0)
            self._nodes_up = [node for reply in replies for node in reply]
            if len(self._nodes_up) >= count:
                return
            if time.monotonic() > deadline:
                raise TierFailure(f"celery: {len(self._nodes_up)} external workers answer, "
                                  f"{count} needed (scale the worker service)")

    def _check_external_delivery(self) -> None:
        """Late acks and the visibility timeout act in the worker, not in the message: external
        workers apply the mode they were started with (their TASKRACE_DELIVERY). A harness
        promising another would judge their losses by the wrong rules: refused, one line."""
        want = self.delivery

        def key(settings: dict, visibility_timeout) -> tuple:
            return (bool(settings.get("task_acks_late")), bool(settings.get("task_reject_on_worker_lost")),
                    visibility_timeout)

        try:
            confs = self.app.control.inspect(destination=self._nodes_up, timeout=2.0).conf() or {}
        except Exception:  # noqa: BLE001 - cannot ask: the run's verdicts say what happened
            return
        theirs = {node: key(c, (c.get("broker_transport_options") or {}).get("visibility_timeout",
                                                                             KOMBU_DEFAULT_VISIBILITY_S))
                  for node, c in confs.items() if isinstance(c, dict)}
        # what the workers apply, by name (effectively-once's idempotency is the harness's: at-least-once)
        known = {key(m.settings, m.visibility_timeout_s): m for m in MODES.values() if not m.idempotent}
        if not self._delivery_chosen and len(set(theirs.values())) == 1 and next(iter(theirs.values())) in known:
            # A notebook in the lab started before its workers were restarted in another mode:
            # the run is judged by the rules the workers apply.
            from workers.celery_app import apply_delivery

            self.delivery = known[next(iter(theirs.values()))]
            apply_delivery(self.app, self.delivery)
            return
        odd = {node: k for node, k in theirs.items() if k != key(want.settings, want.visibility_timeout_s)}
        if odd:
            from scenarios.base import BadInput

            theirs = sorted({known[k].name if k in known else "other settings" for k in odd.values()})
            raise BadInput(f"celery --delivery {want.name}: the external workers {', '.join(sorted(odd))} run "
                           f"{' / '.join(theirs)} (late acks and the visibility timeout act in the worker); start "
                           f"them with TASKRACE_DELIVERY={want.name} (the lab: TASKRACE_DELIVERY={want.name} "
                           f"docker compose up, which gives the lab the same mode)")

    def _start_workers(self, count: int, tag: str, queues: str) -> None:
        if self.external:
            self._await_external(self.workers + self.extra_workers + count)
            return
        first = len(self._workers) + self._replaced + 1  # replacements took numbers too
        batch = [start_worker(self.worker_url, f"taskrace-{self.run_id}-{tag}{first + k}", self._logdir,
                              env=self._worker_env(), queues=queues, concurrency=self.concurrency,
                              pool=self.pool, events=self._events is not None) for k in range(count)]
        self._workers += batch
        try:
            wait_ready(batch)
        except (RuntimeError, TimeoutError) as exc:
            raise TierFailure(str(exc)) from None

    def _worker_env(self) -> dict:
        """What a worker of this tier is told: prefetch, late acks, and the delivery mode
        (whose settings make_app applies there as it does here)."""
        env = {"TASKRACE_PREFETCH": str(self.prefetch), "TASKRACE_ACKS_LATE": str(int(self.acks_late)),
               DELIVERY_ENV: self.delivery.name}
        if self.task_modules:
            given = [m for m in os.environ.get(TASK_MODULES_ENV, "").split(",") if m.strip()]
            env[TASK_MODULES_ENV] = ",".join(dict.fromkeys([*given, *self.task_modules]))
            folders = [str(f) for f in self.task_modules.values() if f]
            if folders:
                env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(
                    [*folders, str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
        return env

    def stop(self, abort: bool = False) -> None:
        if self._events is not None:  # first: disable_events must reach live workers
            self._events.stop()
            self._events = None
        stop_workers(self._workers + self._retired, timeout=3 if abort else 10)
        if self._proxy is not None:  # after the workers: their warm shutdown still talks to Redis
            self._proxy_stats = self._proxy.stats()
            self._proxy.stop()
            self._proxy = None
        if self._main_nodes and self.app is not None:
            try:  # hand the external workers back as we found them
                self.app.control.cancel_consumer(self.queue, destination=self._main_nodes,
                                                 reply=True, timeout=2.0)
            except Exception:  # noqa: BLE001 - best effort; the broker may be what failed
                pass
            self._task_nodes, self._main_nodes = self._main_nodes, []
        if self.url and self.redis_url:  # someone else's Redis: leave it as we found it
            try:
                r = client(self.url)
                for key in r.scan_iter(match=f"{self.prefix}:*", count=500):
                    r.delete(key)
                for queue in {self.queue, self.actor_queue}:
                    r.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
            except Exception:  # noqa: BLE001 - best effort; the broker may be what failed
                pass
        if self.app is not None:
            # Results abandoned by Ctrl-C would try to unsubscribe at exit from a Redis
            # that may be gone, retrying for ~20 s: forget them first.
            consumer = getattr(self.app.backend, "result_consumer", None)
            if consumer is not None:
                consumer.subscribed_to.clear()
                consumer.stop()
            self.app.close()
            self.app = None
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None
        if self._logdir:
            shutil.rmtree(self._logdir, ignore_errors=True)
            self._logdir = None

    # running work ------------------------------------------------------------------
    def map(self, fn, args_list, chunksize=1) -> list[Outcome]:
        from celery import group

        items = [(_path(fn), list(args)) for args in args_list]
        chunk = max(chunksize, self.chunk)
        submitted = time.perf_counter()
        if chunk > 1:
            # celery's chunks: one message carries `chunk` calls (celery.starmap).
            sig = self.app.tasks["taskrace.call"].chunks(items, chunk).group()
            result = sig.apply_async(queue=self.queue)
        else:
            result = group(self.app.signature("taskrace.call", args=item, queue=self.queue)
                           for item in items).apply_async()
        spans = [list(range(j, min(j + chunk, len(items)))) for j in range(0, len(items), chunk)]
        if self._events is not None:
            from workers.celery_events import group_ids

            self._events.track(group_ids(result, spans))
        arrivals = self._collect(result, spans, what=_path(fn))
        if self._events is not None:
            self._events.drain()  # bounded: Celery's events may trail the results a little
        # a chunk that never came back (a dead worker) is one error dict for all its calls
        flat = [(d, seen) for (value, seen), span in zip(arrivals, spans)
                for d in (value if chunk > 1 and isinstance(value, list) else [value] * len(span))]
        return [self._outcome(i, d, submitted, seen) for i, (d, seen) in enumerate(flat)]

    def map_reduce(self, fn, args_list, reduce_fn):
        """A chord: map tasks and a reduce callback on the workers (workers.celery_chord)."""
        from workers.celery_chord import run_chord

        return run_chord(self, fn, args_list, reduce_fn)

    def refuses(self, scenario) -> str | None:
        """effectively-once promises what actors cannot keep here (no idempotency keys on
        their shared state): refused before anything starts."""
        if self.delivery.idempotent and scenario.actors_needed(self.workers) > 0:
            return f"celery {ACTORS_REFUSED}"
        return None

    def reserve(self, actors: int) -> None:
        """Actors wait on each other (a producer on its consumers): each needs a slot of
        its own at once, or the race deadlocks. Add workers, before the clock starts,
        and say so in the record. External workers that nobody may resize (the compose
        lab's `--scale worker=N`) lend every slot they have, and the actors beyond those
        run in the harness (``harness@<host>`` among the record's nodes)."""
        if self.external and self.scaler is None:
            self.harness_actors = max(0, actors - self._slots_of_external())
            return
        slots = (self.workers + self.extra_workers) * self.concurrency
        if actors > slots:
            more = math.ceil((actors - slots) / self.concurrency)
            self._start_workers(more, "x", self.actor_queue)
            self.extra_workers += more

    def _slots_of_external(self) -> int:
        """Process slots of every external node (all consume the actor queue), asked
        once per run: each node's pool size, or --concurrency if a node does not say."""
        if self._external_slots is None:
            stats = {}
            try:
                stats = self.app.control.inspect(destination=self._nodes_up, timeout=1.0).stats() or {}
            except Exception:  # noqa: BLE001 - the nodes answered a ping: count them instead
                pass
            self._external_slots = sum(
                int(((stats.get(node) or {}).get("pool") or {}).get("max-concurrency") or self.concurrency)
                for node in self._nodes_up)
        return self._external_slots

    def run_actors(self, actors) -> list[Outcome]:
        if self.delivery.idempotent:
            from scenarios.base import BadInput  # one line, exit 2, before anything is sent

            raise BadInput(f"celery {ACTORS_REFUSED}")
        self.reserve(len(actors))  # in case the scenario did not say in advance
        from celery import group

        here = self._harness_side(actors, self.harness_actors)
        remote = [i for i in range(len(actors)) if i not in here]
        submitted = time.perf_counter()
        result = group(self.app.signature("taskrace.actor", args=(_path(actors[i].fn), list(actors[i].args)),
                                          queue=self.actor_queue) for i in remote).apply_async() if remote else None
        if self._events is not None and remote:
            from workers.celery_events import group_ids

            self._events.track(group_ids(result, [[i] for i in remote]))
        local = {i: {} for i in here}
        if self._events is not None:  # actors run here are no Celery tasks: told by hand
            for i in here:
                events.emit("task.queued", backend=self.name, index=i, queued=events.epoch(submitted))
        threads = [threading.Thread(target=_run_here, args=(actors[i], local[i]), daemon=True,
                                    name=f"taskrace-actor-{actors[i].name}") for i in here]
        for t in threads:
            t.start()
        arrivals = dict(zip(remote, self._collect(result, [[i] for i in remote], actors=True,
                                                  what=", ".join(sorted({a.name.split("-")[0] for a in actors}))))
                        ) if remote else {}
        deadline = time.monotonic() + self.task_timeout
        for i, t in zip(here, threads):
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                raise TierFailure(f"celery: actor {actors[i].name!r} in the harness still running after "
                                  f"the {self.task_timeout:.0f} s timeout")
            arrivals[i] = (local[i], local[i]["seen"])
            if self._events is not None:
                self._tell_done(self._outcome(i, local[i], submitted, local[i]["seen"]))
        if self._events is not None and remote:
            self._events.drain()
        return [self._outcome(i, arrivals[i][0], submitted, arrivals[i][1]) for i in range(len(actors))]

    @staticmethod
    def _harness_side(actors, count: int) -> list[int]:
        """Which ``count`` actors run in the harness: coordinators first (producer,
        owner), then from the end of the list."""
        if count <= 0:
            return []
        order = ([i for i, a in enumerate(actors) if a.name in HARNESS_FIRST]
                 + [i for i in reversed(range(len(actors))) if actors[i].name not in HARNESS_FIRST])
        return sorted(order[:count])

    def _collect(self, result, spans: list[list[int]], actors: bool = False, what: str = "") -> list[tuple]:
        """Wait for every result, noting when each arrives; fail in one line, with the
        count of completed tasks, if the broker goes away or the run times out.

        No stall on a dead worker: between results (join_native's on_interval, after each
        result or each 1 s drain tick) the workers are looked at, at most every
        LOOK_EVERY_S (a waitpid for the ones this tier started; pings after a stall for
        external ones). Once one died, each look also asks what every missing result can
        still become (``_fates``): a task queued with a live consumer, running or reserved
        on a live worker, or unacknowledged and restored before the timeout can still
        arrive; one acknowledged by the dead worker, parked in the unacked index until
        kombu's visibility timeout, or queued with no live worker cannot. When every
        missing one cannot, on two looks CONFIRM_S apart, the wait ends: those tasks come
        back as errors naming them (the checker fails the point, the CLI exits 1) and the
        record gets an incident (``describe()["dead_workers"]``) with its stated bound."""
        watch = Watch(self, result.results, spans, actors)
        watch.what = what
        total = len(watch.ids)
        # interval: how often the result keys are polled; Celery's 0.5 s default would add
        # up to half a second to every run and hide the per-task cost we measure.
        self._watched(watch, lambda: result.join_native(timeout=self.task_timeout, callback=watch.arrived,
                                                        propagate=False, interval=0.002,
                                                        on_interval=watch.on_interval),
                      result.results, lambda: f"{len(watch.values)}/{total} tasks completed before the "
                                              f"{self.task_timeout:.0f} s timeout (workers dead or stuck?)")
        return [watch.values[k] for k in range(total)]  # (value, when the caller had it)

    def _watched(self, watch: "Watch", wait, waited_on: list, timed_out) -> None:
        """Run ``wait()``, a blocking wait whose on_interval is ``watch.on_interval``: the
        one way every wait of this tier (a group's join, a chord's body) ends on a dead
        worker. Settled (nothing more can arrive): stop waiting for ``waited_on``'s missing
        results. A death, a killed pool child or a redelivery seen: one incident in the
        record (``_settle``). The task timeout, or the broker lost: TierFailure, one line
        (``timed_out()`` says what had completed)."""
        from celery.exceptions import TimeoutError as CeleryTimeout
        from kombu.exceptions import OperationalError
        import redis

        try:
            wait()
        except Settled:
            self._forget(waited_on, watch)
        except CeleryTimeout:
            raise TierFailure(f"celery: {timed_out()}") from None
        except (redis.RedisError, OperationalError, OSError, RuntimeError) as exc:
            # Celery's result consumer gives up with RuntimeError("Retry limit exceeded")
            # caused by the Redis error: the same story, one line.
            cause = exc.__cause__ if isinstance(exc, RuntimeError) else exc
            if not isinstance(cause, (redis.RedisError, OperationalError, OSError)):
                raise
            raise TierFailure(f"celery: broker lost mid-run after {len(watch.values)}/{len(watch.ids)} tasks "
                              f"completed ({type(cause).__name__})") from None
        if watch.deaths or watch.child_lost or watch.redelivered:
            self._settle(watch)

    # dead workers ------------------------------------------------------------------
    def _look_for_deaths(self, watch: "Watch") -> None:
        """Workers of this tier whose main process is gone (a waitpid each), or external
        ones that stopped answering pings once no result came for STALL_PING_S. A dead
        worker this tier started is replaced at once, as a supervisor would (its boot
        is not waited for here: it joins the queue when ready)."""
        now = time.monotonic()
        if self.external:
            if now - watch.last_arrival < STALL_PING_S or not self._main_nodes:
                return
            try:
                answered = {node for reply in self.app.control.ping(destination=self._main_nodes, timeout=1.0)
                            for node in reply}
            except Exception:  # noqa: BLE001 - the broker itself: join_native will say so
                return
            for node in self._main_nodes:
                watch.misses[node] = 0 if node in answered else watch.misses.get(node, 0) + 1
                if watch.misses[node] == PING_MISSES and node not in self._dead_nodes:
                    self._dead_nodes.add(node)
                    watch.died(node, None, f"stopped answering pings ({PING_MISSES} in a row)")
            return
        for w in list(self._workers):
            if w.pid in self._dead_pids or w.proc.poll() is None:
                continue
            self._dead_pids.add(w.pid)
            code = w.proc.returncode
            how = (f"main process killed by {signal.Signals(-code).name}" if code < 0 and
                   -code in signal.valid_signals() else f"main process exited with code {code}")
            watch.died(self._node(w), w.pid, how)
            new = self._replace(w)
            if new is not None:
                watch.replaced.append(self._node(new))

    def _replace(self, w):
        """Start a worker in the place of ``w`` (dead, or about to be killed), on the same
        queues; it joins them when it is ready. None if it could not be started."""
        actor_only = w.name.startswith(f"taskrace-{self.run_id}-x")
        tag, queues = ("x", self.actor_queue) if actor_only else ("w", f"{self.queue},{self.actor_queue}")
        self._replaced += 1
        name = f"taskrace-{self.run_id}-{tag}{len(self._workers) + self._replaced}"
        try:
            new = start_worker(self.worker_url, name, self._logdir, env=self._worker_env(), queues=queues,
                               concurrency=self.concurrency, pool=self.pool, events=self._events is not None)
        except OSError:
            return None
        # in the dead one's place: the first -n stay the run's main workers (the record's
        # nodes_for_tasks); the dead one is kept aside, for stop() to reap
        self._workers[self._workers.index(w)] = new
        self._retired.append(w)
        return new

    def _recycle(self, nodes: set[str], watch: "Watch") -> None:
        """Kill the workers running these nodes (actors stuck on a lost peer) and start
        others in their place, so the next run finds free slots."""
        doomed = [w for w in self._workers if self._node(w) in nodes and w.proc.poll() is None]
        for w in doomed:  # stuck: a warm shutdown would wait for the task, so SIGKILL, tree first
            self._dead_pids.add(w.pid)
            for pid in sorted(w.tree_pids(), key=lambda pid: pid != w.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for w in doomed:
            try:
                w.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        for w in doomed:
            new = self._replace(w)
            if new is not None:
                watch.replaced.append(self._node(new))

    @staticmethod
    def _node(w) -> str:
        return f"{w.name}@{socket.gethostname()}"

    def _live_nodes(self) -> tuple[list[str], list[str]]:
        """(nodes that may hold tasks and can answer, nodes still booting): this tier's
        live workers, or the external ones not taken for dead."""
        if self.external:
            return [n for n in (self._nodes_up or self._main_nodes) if n not in self._dead_nodes], []
        ready, booting = [], []
        for w in self._workers:
            if w.pid in self._dead_pids or w.proc.poll() is not None:
                continue
            (ready if w.ready_after is not None or " ready." in w.log() else booting).append(self._node(w))
        return ready, booting

    def _fates(self, watch: "Watch") -> dict[int, tuple[str, str]]:
        """What each missing result can still become: message index -> (fate, where).
        Fates that can arrive: running (active or reserved on a live worker), queued (a
        live consumer will take it), returning (unacknowledged, restored before the
        timeout), unknown (a live worker did not answer: it may hold it). Fates that
        cannot: gone (acknowledged by a dead worker), parked (unacknowledged, restored
        only after the timeout), stranded (queued, no live worker)."""
        pending = {tid: k for tid, k in watch.index.items() if k not in watch.values}
        if watch.body is not None and len(pending) > 1:  # a chord's body: not sent before its header is done
            pending = {tid: k for tid, k in pending.items() if k != watch.body}
        if not pending:
            return {}
        fates: dict[int, tuple[str, str]] = {}
        live, booting = self._live_nodes()
        # A booting replacement takes tasks only from its "ready." on: if one took a task in
        # the moment before, it answers by the next look, and nothing is lost on one look.
        silent = False
        if live:
            try:
                inspect = self.app.control.inspect(destination=live, timeout=INSPECT_TIMEOUT_S)
                replies: dict = {}
                for part in (inspect.active() or {}, inspect.reserved() or {}):
                    for node, tasks in part.items():
                        replies.setdefault(node, []).extend(tasks or [])
            except Exception:  # noqa: BLE001 - cannot tell: nothing is called lost on this look
                return {k: ("unknown", "") for k in pending.values()}
            silent = silent or any(node not in replies for node in live)
            for node, tasks in replies.items():
                for t in tasks:
                    if t.get("id") in pending:
                        fates[pending[t["id"]]] = ("running", node)
        try:
            r = client(self.url)
            with r.pipeline(transaction=False) as pipe:
                pipe.lrange(self.queue, 0, -1)
                pipe.lrange(self.actor_queue, 0, -1)
                pipe.hgetall("unacked")
                pipe.zrange("unacked_index", 0, -1, withscores=True)
                pipe.time()
                queued_a, queued_b, unacked, index, (sec, usec) = pipe.execute()
        except Exception:  # noqa: BLE001 - a broker gone: join_native says so
            return {k: ("unknown", "") for k in pending.values()}
        now = sec + usec / 1e6
        consumers = bool(live or booting)
        if self.external:  # only the -n main nodes were told to consume this run's queue
            consumers = any(n not in self._dead_nodes for n in self._main_nodes)
        for raw in queued_a + queued_b:
            tid = message_id(raw)
            if tid in pending and pending[tid] not in fates:
                fates[pending[tid]] = ("queued", "") if consumers else ("stranded", "")
        restore_after = self.delivery.visibility_timeout_s + self.delivery.restore_period_s
        horizon = self.task_timeout - (time.monotonic() - watch.t0)
        scores = {tag.decode() if isinstance(tag, bytes) else tag: score for tag, score in index}
        for tag, raw in unacked.items():
            tag = tag.decode() if isinstance(tag, bytes) else tag
            try:
                tid = message_id(json.loads(raw)[0])
            except (ValueError, IndexError, TypeError):
                continue
            if tid in pending and pending[tid] not in fates:
                due = scores.get(tag, now) + restore_after - now
                fates[pending[tid]] = ("returning", f"{max(0.0, due):.1f}") if due < horizon else \
                    ("parked", f"{max(0.0, due):.0f}")
        for k in pending.values():
            fates.setdefault(k, ("unknown", "") if silent else ("gone", ""))
        return fates

    def _stored_results(self, ids: list[str]) -> dict:
        """task id -> its result (an exception for a failed task) for those of ``ids``
        whose result is in the backend and final: one MGET. Empty if Redis cannot say."""
        from celery import states

        backend = self.app.backend
        try:
            raw = backend.mget([backend.get_key_for_task(tid) for tid in ids])
            metas = [backend.decode_result(v) if v is not None else None for v in raw]
        except Exception:  # noqa: BLE001 - a broker gone: the wait itself says so
            return {}
        return {tid: m["result"] for tid, m in zip(ids, metas) if m and m.get("status") in states.READY_STATES}

    def _state_digest(self) -> str | None:
        """A digest of this run's shared state (every key under the tier's prefix, DUMPed):
        it changes while actors make progress. None if Redis cannot say."""
        try:
            r = client(self.url)
            keys = sorted(r.scan_iter(match=f"{self.prefix}:*", count=500))
            with r.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.dump(key)
                values = pipe.execute()
        except Exception:  # noqa: BLE001 - cannot tell: nothing is called stuck
            return None
        return hashlib.sha1(repr(list(zip(keys, values))).encode()).hexdigest()

    def _forget(self, results: list, watch: "Watch") -> None:
        """Stop waiting for the results that cannot arrive (no subscription left behind)."""
        backend = self.app.backend
        for r in results:
            if watch.index[r.id] not in watch.values:
                try:
                    backend.remove_pending_result(r)
                except Exception:  # noqa: BLE001 - best effort
                    pass

    def _settle(self, watch: "Watch") -> None:
        """Turn what the watch saw into errors on the lost tasks and one incident in the
        record; wait for replacement workers so the next run has -n again."""
        mode = self.delivery
        ended = time.monotonic()
        lost = sorted(set(watch.lost) | set(watch.child_lost))
        tasks_of = lambda ks: [i for k in ks for i in watch.spans[k]]  # noqa: E731
        lost_tasks = tasks_of(lost)
        redelivered = tasks_of(sorted(k for k, (v, _) in watch.values.items()
                                      if isinstance(v, dict) and v.get("redelivered")))
        nodes = ", ".join(d["node"] for d in watch.deaths) or "a pool child"
        save = saving_mode(mode, pool_child=bool(watch.child_lost) and not watch.lost)
        names = ranges(lost_tasks)
        total = sum(len(s) for s in watch.spans)
        if lost:
            one = len(lost_tasks) == 1
            head = (f"{len(lost_tasks)} of {total} tasks lost ({'task' if one else 'tasks'} {names}) under "
                    f"--delivery {mode.name}" + (f"; --delivery {save} would have "
                                                 + (f"sent {'it' if one else 'them'} back" if watch.child_lost
                                                    else f"redelivered {'it' if one else 'them'}") if save else ""))
            first = lost_tasks[0]
            for k in lost:
                why = (f"its pool child was killed ({watch.child_lost[k]})" if k in watch.child_lost
                       else why_lost(watch.lost[k], nodes, mode))
                text = f"lost: {why}; {head}" if first in watch.spans[k] else f"lost: {why} (see task {first})"
                seen = watch.values[k][1] if k in watch.values else time.perf_counter()
                watch.values[k] = ({"error": text, "lost": True}, seen)
        # the bound this incident had to end within, from the work and the visibility timeout
        runs = [d["finished"] - d["started"] for v, _ in watch.values.values()
                for d in (v if isinstance(v, list) else [v])
                if isinstance(d, dict) and d.get("finished") is not None and d.get("started") is not None]
        work = max(runs, default=0.0) * (max(len(s) for s in watch.spans) if watch.spans else 1)
        left = watch.pending_at_notice or 0
        slots = max(1, watch.survivors * self.concurrency)
        redeliver = (mode.visibility_timeout_s + mode.restore_period_s
                     if redelivers_after_worker_death(mode) and watch.deaths else 0.0)
        boot = max((w.ready_after or 0.0 for w in self._workers), default=0.0) * 2 if not watch.survivors else 0.0
        # actors: their progress after the death (the shared state still changing), then the
        # grace in which it must not change, then their worker killed (0.5 s)
        grace = (max(0.0, watch._changed_at - (watch.noticed_at or ended)) + 0.5
                 + max(ACTOR_GRACE_S, (watch.noticed_at or ended) - watch.t0)) if watch.actors else 0.0
        bound = SETTLE_SLACK_S + redeliver + boot + grace + work * math.ceil(left / slots)
        noticed = watch.noticed_at
        incident = {
            "mode": mode.name, "kind": "actors" if watch.actors else "tasks", "what": watch.what, "tasks": total,
            "died": watch.deaths, "replaced_by": watch.replaced,
            "lost": lost_tasks,
            # gone: acknowledged by the dead worker; parked: unacknowledged, restored only after the
            # timeout; stranded: queued, no live worker; abandoned: an actor stuck on a lost peer
            "lost_how": {str(i): "pool child killed" if k in watch.child_lost else watch.lost[k][0]
                         for k in lost for i in watch.spans[k]},
            "redelivered": redelivered,
            "stuck_for_s": watch.stuck_for,  # actors abandoned: how long nothing had changed
            "redelivered_note": "ran again from a message kombu gave back (visibility timeout or a killed pool "
                                "child's reject): under at-least-once its first run was cut short or is a "
                                "duplicate (ran twice)" if redelivered else None,
            "would_have_saved": save if lost else None,
            "verdict": (f"lost {len(lost_tasks)}: {'task' if len(lost_tasks) == 1 else 'tasks'} {names}" if lost
                        else f"no task lost ({len(redelivered)} redelivered)" if redelivered else "no task lost"),
            "ended_s": round(ended - watch.t0, 3),
            # noticed: a worker's death or a WorkerLostError (a redelivery alone notices nothing)
            "noticed_s": None, "ended_after_notice_s": None, "bound_s": None, "bound": None, "within_bound": None,
        }
        if noticed is not None:
            incident.update(
                noticed_s=round(noticed - watch.t0, 3), ended_after_notice_s=round(ended - noticed, 3),
                bound_s=round(bound, 3), within_bound=ended - noticed <= bound,
                bound=(f"after the death was noticed: {SETTLE_SLACK_S:.0f} s to notice and confirm + "
                       f"{redeliver:g} s redelivery (visibility_timeout + restore sweep, late acks only) + "
                       f"{boot:.1f} s worker boot (no survivor) + "
                       + (f"{grace:.1f} s for actors (progress after the death, then shared state "
                          f"unchanged for the grace, worker killed) + "
                          if watch.actors else "") + f"the longest message's run {work:.3f} s x "
                       f"ceil({left} unfinished / {slots} surviving slots)"))
        self.incidents.append(incident)
        booting = [w for w in self._workers if w.proc.poll() is None and w.ready_after is None]
        if booting:
            try:
                wait_ready(booting)
            except (RuntimeError, TimeoutError) as exc:
                raise TierFailure(f"celery: a replacement for a dead worker did not start: {exc}") from None

    @staticmethod
    def _outcome(index: int, d: dict, submitted: float, seen: float) -> Outcome:
        return Outcome(index, d.get("value"), d.get("error"), submitted=submitted,
                       started=d.get("started"), finished=d.get("finished"), seen=seen,
                       worker=d.get("worker", ""), cpu_s=d.get("cpu_s"), max_rss=d.get("max_rss"))

    # shared state --------------------------------------------------------------------
    def accounts(self, balances):
        return RedisAccounts(f"{self.prefix}:acct:{secrets.token_hex(3)}", len(balances), self.url).create(balances)

    def lock(self):
        return RedisLock(f"{self.prefix}:lock:{secrets.token_hex(3)}", self.url)

    def channel(self, maxsize=0):
        return RedisChannel(f"{self.prefix}:chan:{secrets.token_hex(3)}", maxsize, self.url).create()


def _run_here(actor, out: dict) -> None:
    """An actor run in the harness, in a thread, as a worker runs ``taskrace.actor``: its
    handles talk to the same Redis, its result goes through JSON, and it reports where
    it ran (``harness@<host>``), its thread's CPU time and the process's peak memory."""
    from workers.base import peak_rss

    cpu0 = time.thread_time()
    started = time.perf_counter()
    value, error = None, None
    try:
        value = json.loads(json.dumps(actor.fn(*actor.args)))
    except Exception as exc:  # noqa: BLE001 - reported in the outcome, as a worker does
        error = f"{type(exc).__name__}: {exc}"
    finished = time.perf_counter()
    out.update(value=value, error=error, started=started, finished=finished,
               worker=f"harness@{socket.gethostname()}:{os.getpid()}",
               cpu_s=time.thread_time() - cpu0, max_rss=peak_rss(), seen=time.perf_counter())
