"""The seed's producer/consumer: Process 1 --> bounded Queue --> Process 2.

One producer puts ``--items`` numbers into a channel of capacity ``--capacity``; the
``-n`` consumers take them until each gets its stop marker. A full channel blocks the
producer (back-pressure), so the highest depth seen never exceeds the capacity. The
checker proves every item was consumed exactly once.

On an event loop the channel is an ``asyncio.Queue(capacity)`` and the actors are the
coroutine twins below: a full queue suspends the producer at ``await put`` until a
consumer's ``get`` makes room, which is the same back-pressure on one thread.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter

from scenarios.base import Execution, Param, Scenario, Verdict, coroutine_twin, task_errors
from workers.base import Actor

STOP = -1  # items are >= 0, so -1 can mark "no more items" (JSON-safe, unlike a sentinel object)


def produce(channel, items: int, consumers: int) -> dict:
    max_depth = 0
    for item in range(items):
        channel.put(item)
        max_depth = max(max_depth, _depth(channel))
    for _ in range(consumers):
        channel.put(STOP)
    return {"produced": items, "max_depth": max_depth}


def consume(channel, work_s: float) -> list[int]:
    taken = []
    while (item := channel.get()) != STOP:
        if work_s:
            time.sleep(work_s)  # stands for handling the item
        taken.append(item)
    return taken


@coroutine_twin(produce)
async def produce_async(channel, items: int, consumers: int) -> dict:
    max_depth = 0
    for item in range(items):
        await channel.put(item)  # suspends here while the queue is full: back-pressure
        max_depth = max(max_depth, _depth(channel))
    for _ in range(consumers):
        await channel.put(STOP)
    return {"produced": items, "max_depth": max_depth}


@coroutine_twin(consume)
async def consume_async(channel, work_s: float) -> list[int]:
    taken = []
    while (item := await channel.get()) != STOP:
        if work_s:
            await asyncio.sleep(work_s)
        taken.append(item)
    return taken


def _depth(channel) -> int:
    try:
        return channel.qsize()
    except NotImplementedError:  # multiprocessing.Queue.qsize on macOS
        return 0


class Pipeline(Scenario):
    name = "pipeline"
    summary = "one producer, -n consumers, a bounded queue: exactly-once and back-pressure"
    params = (
        Param("items", int, 100, "how many items the producer puts", min=1, max=10_000_000),
        Param("capacity", int, 10, "the channel's capacity (back-pressure bound)", min=1, max=1_000_000),
        Param("work", float, 0.0, "seconds a consumer spends per item", min=0, max=60),
    )

    def actors_needed(self, workers: int) -> int:
        return 1 + workers

    def execute(self, tier) -> Execution:
        consumers = tier.workers
        channel = tier.channel(self.p["capacity"])
        actors = [Actor("producer", produce, (channel, self.p["items"], consumers))]
        actors += [Actor(f"consumer-{k}", consume, (channel, self.p["work"])) for k in range(consumers)]
        outcomes = tier.run_actors(actors)
        return Execution(outcomes, units=self.p["items"],
                         data={"consumers": consumers, "bounded": tier.channel_bounded})

    def check(self, execution, tier) -> Verdict:
        errors = task_errors(execution.outcomes)
        producer, consumers = execution.outcomes[0], execution.outcomes[1:]
        taken = [item for o in consumers for item in (o.value or [])]
        counts = Counter(taken)
        items = self.p["items"]
        missing = [i for i in range(items) if counts[i] == 0]
        duplicated = sorted(i for i, c in counts.items() if c > 1)
        extra = sorted(i for i in counts if not 0 <= i < items)
        max_depth = (producer.value or {}).get("max_depth")
        bounded = execution.data["bounded"]
        within = not bounded or (max_depth is not None and max_depth <= self.p["capacity"])
        ok = not errors and not missing and not duplicated and not extra and within
        return Verdict(ok, f"{items} items once each", f"{len(counts)} distinct, {len(taken)} taken",
                       answer=sorted(taken),
                       details={"missing": missing[:20], "duplicated": duplicated[:20], "extra": extra[:20],
                                "max_depth": max_depth, "capacity": self.p["capacity"],
                                "capacity_enforced": bounded,
                                "per_consumer": [len(o.value or []) for o in consumers],
                                "errors": errors})
