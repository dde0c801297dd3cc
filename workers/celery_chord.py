"""Map-reduce the way Celery users write it: a ``chord``, a group of map tasks whose
results a reduce callback (the body) takes on a worker, instead of the harness adding
them up (``CeleryTier.map_reduce``, the mapreduce scenario's ``--reduce chord``).

What it costs, beside the harness-side reduce, is counted on the broker
(``taskrace.measuring.counting``): Redis commands per map task (each header task runs
the Redis backend's chord script: its result into the join key, the counter, expiries;
the last one reads them all back and sends the body), bytes on the wire per byte of
result the header carries into the body, and how long the body waited after the last
map task finished (from the tasks' own ``perf_counter`` stamps: one host's clock). The
reference, the same map tasks as a plain group (``taskrace.call``, what ``map`` sends),
is counted on the same workers right after the timed run (``ChordRun.count_reference``).

A map task that fails is raised (``taskrace.part``), so Celery marks it failed and the
body gets ``ChordError`` instead of running: the run ends with that task's error, one
line, once the header's other tasks are done. Everything is JSON; the body resolves its
reduce by name under ``scenarios.``, as ``taskrace.call`` does.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Callable

from workers.base import Outcome

HOW = ("celery chord: a group of map tasks (taskrace.part) and a reduce callback (taskrace.reduce) on a "
       "worker, results through the Redis backend's chord join; one map task per message")
REFERENCE = ("the same map tasks as a plain group (taskrace.call, what --reduce harness sends), on the same "
             "workers, counted right after the timed run")


def _path(fn) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


class _Broker:
    """Commands (INFO commandstats) and bytes on the wire (INFO stats) between two
    snapshots, server-wide; its own INFO calls left out."""

    def __init__(self, url: str) -> None:
        from taskrace.measuring.counting import CommandCounter

        self.counter = CommandCounter(url)

    def __enter__(self) -> "_Broker":
        self._window = self.counter.window().__enter__()
        self._net = self._bytes()
        return self

    def __exit__(self, *exc) -> None:
        net = self._bytes()
        self._window.__exit__(*exc)
        self.counter.close()
        self.commands = {k: v for k, v in self._window.delta.items() if k != "info"}
        self.net_bytes = net - self._net

    def _bytes(self) -> int:
        stats = self.counter.client.info("stats")
        return int(stats["total_net_input_bytes"]) + int(stats["total_net_output_bytes"])


@dataclass
class ChordRun:
    """One chord: ``outcomes`` (one per map task, then the reduce's), ``record`` (its
    cost, for the results: ``record["chord"]``)."""

    tier: object
    fn: Callable
    args_list: list
    outcomes: list
    record: dict

    @property
    def reduce(self) -> Outcome:
        return self.outcomes[-1]

    def count_reference(self) -> None:
        """Count the plain group beside the chord (off the clock: the checker's time) and
        put the chord's extra cost per map task and per result byte in the record."""
        from celery import group

        tier, n = self.tier, len(self.args_list)
        items = [(_path(self.fn), list(args)) for args in self.args_list]
        with _Broker(tier.url) as broker:
            t0 = time.perf_counter()
            result = group(tier.app.signature("taskrace.call", args=item, queue=tier.queue)
                           for item in items).apply_async()
            values = result.join_native(timeout=tier.task_timeout, propagate=False, interval=0.002)
            wall = time.perf_counter() - t0
        plain = sum(broker.commands.values())
        chord = self.record["redis_commands"]
        carried = self.record["carried_bytes"]
        try:
            answer = sum(d["value"] for d in values)
        except (TypeError, KeyError):
            answer = None
        self.record["reference"] = {"how": REFERENCE, "wall_s": round(wall, 6), "redis_commands": plain,
                                    "commands_per_map_task": round(plain / n, 3), "net_bytes": broker.net_bytes,
                                    "agrees": answer == self.reduce.value}
        self.record["extra_commands_per_map_task"] = round((chord - plain) / n, 3)
        self.record["extra_net_bytes_per_result_byte"] = (
            round((self.record["net_bytes"] - broker.net_bytes) / carried, 3) if carried else None)
        self.record["commands_by_name_extra"] = {
            k: self.record["commands"].get(k, 0) - broker.commands.get(k, 0)
            for k in sorted(set(self.record["commands"]) | set(broker.commands))
            if self.record["commands"].get(k, 0) != broker.commands.get(k, 0)}


def run_chord(tier, fn: Callable, args_list: list[tuple], reduce_fn: Callable) -> ChordRun:
    """Send ``chord(group(part(fn, args) ...), reduce(reduce_fn))`` on ``tier``'s queue and
    wait for the body; one Outcome per map task (from the parts' stamps the body hands
    back) and one for the reduce.

    The wait is the tier's own, watched for dead workers (``CeleryTier._watched``, the
    group's watch): the map tasks are messages 0..n-1, read from the backend only once a
    worker died (the harness waits on the body alone, so a healthy chord costs no extra
    command), and the body is message n, sent only when its header is done. A map task
    that cannot arrive any more (lost under the delivery mode) ends the wait: the lost
    ones named, the reduce never ran, the incident with its bound in the record."""
    from celery import chord, group
    from celery.result import ResultSet

    from workers.celery_watch import Watch

    n = len(args_list)
    header = group(tier.app.signature("taskrace.part", args=(_path(fn), list(args)), queue=tier.queue)
                   for args in args_list)
    body = tier.app.signature("taskrace.reduce", args=(_path(reduce_fn),), queue=tier.queue)
    with _Broker(tier.url) as broker:
        submitted = time.perf_counter()
        result = chord(header)(body)
        parts = list(result.parent.results)
        ids = [r.id for r in parts]
        if tier._events is not None:
            tier._events.track({**{tid: i for i, tid in enumerate(ids)}, result.id: n})
        watch = Watch(tier, parts + [result], [[i] for i in range(n + 1)], False, polled=ids, body=n)
        watch.what = f"{_path(fn)} as a chord (map tasks 0-{n - 1}, the reduce task {n})"
        got: list = []

        def wait() -> None:
            # the body joined as a one-result set: AsyncResult.get calls on_interval only once
            d, = ResultSet([result]).join_native(timeout=tier.task_timeout, propagate=False, interval=0.002,
                                                 on_interval=watch.on_interval)
            got.append(d)
            if isinstance(d, dict):  # the parts' dicts, as if they had arrived one by one
                for tid, part in zip(ids, d.get("parts") or []):
                    watch.arrived(tid, part)
            watch.arrived(result.id, d)

        tier._watched(watch, wait, [result], lambda: f"the chord's body did not come back within the "
                                                     f"{tier.task_timeout:.0f} s timeout (workers dead or stuck?)")
        seen = time.perf_counter()
        if tier._events is not None:
            tier._events.drain()
    outcomes = [Outcome(i, submitted=submitted, seen=seen) for i in range(n)]
    if not got:  # settled: map tasks lost with a dead worker, so the body was never sent
        for i in range(n):
            value, when = watch.values.get(i, (None, seen))
            o = outcomes[i]
            o.seen = when
            if isinstance(value, dict):
                o.value, o.error = value.get("value"), value.get("error")
                o.started, o.finished = value.get("started"), value.get("finished")
                o.worker, o.cpu_s, o.max_rss = value.get("worker", ""), value.get("cpu_s"), value.get("max_rss")
            elif value is None:
                o.error = "lost: no result, and none can come any more"
        outcomes.append(Outcome(n, submitted=submitted, seen=seen))
        return ChordRun(tier, fn, args_list, outcomes, _record(n, broker, None, outcomes))
    d = got[0]
    if isinstance(d, BaseException):  # ChordError: a map task failed, the body never ran
        failed, text = _failed_part(d, ids)
        where = f"map task {failed}" if failed is not None else "a map task"
        message = f"ChordError: {where} failed ({text}); the reduce callback never ran"
        outcomes[failed if failed is not None else 0].error = message
        outcomes.append(Outcome(n, submitted=submitted, seen=seen))
        return ChordRun(tier, fn, args_list, outcomes, _record(n, broker, None, outcomes))
    for o, part in zip(outcomes, d.get("parts") or []):
        o.started, o.finished, o.worker = part.get("started"), part.get("finished"), part.get("worker", "")
        o.cpu_s, o.max_rss = part.get("cpu_s"), part.get("max_rss")
    outcomes.append(Outcome(n, d.get("value"), d.get("error"), submitted=submitted, started=d.get("started"),
                            finished=d.get("finished"), seen=seen, worker=d.get("worker", ""),
                            cpu_s=d.get("cpu_s"), max_rss=d.get("max_rss")))
    return ChordRun(tier, fn, args_list, outcomes, _record(n, broker, d, outcomes))


def _record(n: int, broker: _Broker, body: dict | None, outcomes: list[Outcome]) -> dict:
    total = sum(broker.commands.values())
    reduce, parts = outcomes[-1], outcomes[:-1]
    last = max((o.finished for o in parts if o.finished is not None), default=None)
    wait = (reduce.started - last) if reduce.started is not None and last is not None else None
    return {
        "how": HOW, "map_tasks": n, "ran": body is not None,
        "reduce_worker": reduce.worker.rsplit(":", 1)[0] if reduce.worker else None,
        # last map task finished -> the reduce started (both stamped where they ran)
        "reduce_wait_s": None if wait is None else round(wait, 6),
        "reduce_s": (round(reduce.finished - reduce.started, 6)
                     if reduce.started is not None and reduce.finished is not None else None),
        "redis_commands": total, "commands_per_map_task": round(total / n, 3) if n else None,
        "commands": broker.commands, "net_bytes": broker.net_bytes,
        "carried_bytes": (body or {}).get("carried_bytes"),
        # filled by ChordRun.count_reference (after the timed run): the chord beside the plain group
        "reference": None, "extra_commands_per_map_task": None, "extra_net_bytes_per_result_byte": None,
    }


def _failed_part(exc: BaseException, ids: list[str]) -> tuple[int | None, str]:
    """(which map task, what it raised) from ChordError's 'Dependency <id> raised <exc>'."""
    text = str(exc)
    m = re.search(r"Dependency (\S+) raised (.*)", text)
    if not m:
        return None, f"{type(exc).__name__}: {text}"
    index = ids.index(m.group(1)) if m.group(1) in ids else None
    inner = m.group(2)
    inner_m = re.match(r"\w+\((['\"])(.*)\1,?\)$", inner)  # PartFailed('ValueError: ...') -> its text
    return index, inner_m.group(2) if inner_m else inner
