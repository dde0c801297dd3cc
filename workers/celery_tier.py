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
a private Redis that this tier starts and removes (``workers.redis_server``). Each run
uses its own queue and key prefix, so a shared Redis is safe to use.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time

from workers.base import Outcome, Tier, TierFailure, TierOption
from workers.celery_workers import CELERY_ENV_OVERRIDES, POOLS, start_worker, stop_workers, wait_ready
from workers.latency_proxy import LatencyProxy, parse_latency, redis_target, through
from workers.redis_server import EmbeddedRedis, check_redis, redact_url
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
    cli_options = (
        TierOption("redis_url", "broker and result store (default: $REDIS_URL, else a private Redis "
                   "started for the run)", metavar="URL"),
        TierOption("pool", "worker pool", default="prefork", choices=POOLS),
        TierOption("concurrency", "slots per worker", type=int, default=1, metavar="N"),
        TierOption("prefetch", "worker_prefetch_multiplier", type=int, default=1, metavar="N"),
        TierOption("acks_late", "task_acks_late: acknowledge a task when it ends, not when it starts",
                   switch=True),
        TierOption("chunk", "calls per message (celery chunks)", type=int, default=1, metavar="N"),
        TierOption("external", "use workers someone else runs (the compose lab's worker service)",
                   switch=True, spelling="--external-workers"),
        TierOption("latency", "one-way delay between the workers and Redis, each direction, added "
                   "by a proxy (workers.latency_proxy): 5ms, 0.005s, 5 (= ms), 2ms+-1ms (jitter); "
                   "only the workers pay it, the harness reaches Redis directly", metavar="DELAY"),
    )

    def __init__(self, workers: int = 1, redis_url: str | None = None, pool: str = "prefork",
                 concurrency: int = 1, prefetch: int = 1, acks_late: bool = False, chunk: int = 1,
                 task_timeout: float = 600.0, external: bool = False, queue: str | None = None,
                 scaler=None, latency=None, **options) -> None:
        super().__init__(workers, **options)
        if pool not in POOLS:
            raise ValueError(f"unknown --pool {pool!r}; choose from: {', '.join(POOLS)}")
        for flag, value, low in (("--concurrency", concurrency, 1), ("--prefetch", prefetch, 1),
                                 ("--chunk", chunk, 1)):
            if value < low:
                raise ValueError(f"{flag} must be at least {low}, got {value}")
        self.redis_url = redis_url or os.environ.get("REDIS_URL") or None
        self.pool, self.concurrency, self.prefetch = pool, concurrency, prefetch
        self.acks_late, self.chunk, self.task_timeout = acks_late, chunk, task_timeout
        self.run_id = secrets.token_hex(4)
        # external: workers someone else runs (the compose lab's `worker` service), on a
        # shared queue; -n is then how many of them must be up. `scaler(n)` may make it so.
        self.external = external or os.environ.get("TASKRACE_EXTERNAL_WORKERS") == "1"
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
        if self.external and not self.redis_url:
            raise ValueError("external workers need --redis-url or REDIS_URL (the broker they listen on)")
        # latency: a proxy (workers.latency_proxy) between the workers this tier starts and
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
                "nodes_up": sorted(self._nodes_up) if self._nodes_up else [w.name for w in self._workers],
                "nodes_for_tasks": self._main_nodes or [w.name for w in self._workers[:self.workers]]}

    def _latency_record(self) -> dict | None:
        if self.latency is None:
            return None
        return {**self.latency.to_dict(), "paid_by": "workers", "round_trip_added_ms":
                round(2 * self.latency.delay * 1e3, 3), **{k: self._proxy_stats[k] for k in
                ("connections_total", "bytes_up", "bytes_down") if k in self._proxy_stats}}

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

        self.app = make_app(self.url)
        if self.external:
            self._await_external(self.workers)
            self._main_nodes = sorted(self._nodes_up)[:self.workers]
            replies = self.app.control.add_consumer(self.queue, destination=self._main_nodes,
                                                    reply=True, timeout=5.0)
            if len(replies) < len(self._main_nodes):
                raise TierFailure(f"celery: only {len(replies)} of {len(self._main_nodes)} external "
                                  f"workers took the run's queue")
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

    def _start_workers(self, count: int, tag: str, queues: str) -> None:
        if self.external:
            self._await_external(self.workers + self.extra_workers + count)
            return
        env = {"TASKRACE_PREFETCH": str(self.prefetch), "TASKRACE_ACKS_LATE": str(int(self.acks_late))}
        batch = [start_worker(self.worker_url, f"taskrace-{self.run_id}-{tag}{len(self._workers) + k + 1}",
                              self._logdir, env=env, queues=queues, concurrency=self.concurrency,
                              pool=self.pool) for k in range(count)]
        self._workers += batch
        try:
            wait_ready(batch)
        except (RuntimeError, TimeoutError) as exc:
            raise TierFailure(str(exc)) from None

    def stop(self, abort: bool = False) -> None:
        stop_workers(self._workers, timeout=3 if abort else 10)
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
            self._main_nodes = []
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
        arrivals = self._collect(result)
        flat = [(d, seen) for value, seen in arrivals for d in (value if chunk > 1 else [value])]
        return [self._outcome(i, d, submitted, seen) for i, (d, seen) in enumerate(flat)]

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
        self.reserve(len(actors))  # in case the scenario did not say in advance
        from celery import group

        here = self._harness_side(actors, self.harness_actors)
        remote = [i for i in range(len(actors)) if i not in here]
        submitted = time.perf_counter()
        result = group(self.app.signature("taskrace.actor", args=(_path(actors[i].fn), list(actors[i].args)),
                                          queue=self.actor_queue) for i in remote).apply_async() if remote else None
        local = {i: {} for i in here}
        threads = [threading.Thread(target=_run_here, args=(actors[i], local[i]), daemon=True,
                                    name=f"taskrace-actor-{actors[i].name}") for i in here]
        for t in threads:
            t.start()
        arrivals = dict(zip(remote, self._collect(result))) if remote else {}
        deadline = time.monotonic() + self.task_timeout
        for i, t in zip(here, threads):
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                raise TierFailure(f"celery: actor {actors[i].name!r} in the harness still running after "
                                  f"the {self.task_timeout:.0f} s timeout")
            arrivals[i] = (local[i], local[i]["seen"])
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

    def _collect(self, result) -> list[tuple]:
        """Wait for every result, noting when each arrives; fail in one line, with the
        count of completed tasks, if the broker goes away or the run times out."""
        from celery.exceptions import TimeoutError as CeleryTimeout
        from kombu.exceptions import OperationalError
        import redis

        index = {r.id: i for i, r in enumerate(result.results)}
        total = len(index)
        values: dict[int, tuple] = {}

        def arrived(task_id, value):
            values[index[task_id]] = (value, time.perf_counter())

        try:
            # interval: how often the result keys are polled; Celery's 0.5 s default would add
            # up to half a second to every run and hide the per-task cost we measure.
            result.join_native(timeout=self.task_timeout, callback=arrived, propagate=True,
                               interval=0.002)
        except CeleryTimeout:
            raise TierFailure(f"celery: {len(values)}/{total} tasks completed before the "
                              f"{self.task_timeout:.0f} s timeout (workers dead or stuck?)") from None
        except (redis.RedisError, OperationalError, OSError, RuntimeError) as exc:
            # Celery's result consumer gives up with RuntimeError("Retry limit exceeded")
            # caused by the Redis error: the same story, one line.
            cause = exc.__cause__ if isinstance(exc, RuntimeError) else exc
            if not isinstance(cause, (redis.RedisError, OperationalError, OSError)):
                raise
            raise TierFailure(f"celery: broker lost mid-run after {len(values)}/{total} tasks "
                              f"completed ({type(cause).__name__})") from None
        return [values[i] for i in range(total)]  # (value, when the caller had it)

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
