"""Celery's task events on taskrace's event stream (workers.celery_events).

Real parts really run: ``celery worker`` processes against an embedded Redis, a plain
Celery app sending a group of ``taskrace.call`` signatures the way the celery tier's map()
does, and Celery's own event receiver. Per task: queued <= started <= finished, one finish
per planned task, the worker as the outcome names it. Events off: no -E, and the broker
sees no event at all (PUBLISH counted with INFO commandstats: one per result, none more).
A worker the test starts itself (as the lab's are started) is turned on by broadcast
(``enable_events``) and handed back as it was found.

The first tests feed Celery events by hand (no Redis): the order guarantees, chunks,
other runs' ids, events that come before ``track``, lost tasks.
"""
from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import psutil
import pytest

from celery_fixtures import embedded_redis, celery_workers, start_worker  # noqa: F401 (fixtures)
from taskrace import events
from taskrace.measuring import counting
from workers.celery_events import CeleryTaskEvents, group_ids
from workers.celery_workers import stop_workers, wait_ready, worker_argv

NOOP = ("scenarios.power:calculate_raise_to", [[], 0])  # returns [] at once


# --- by hand, no broker ---------------------------------------------------------------------
def offline_tracker() -> CeleryTaskEvents:
    app = SimpleNamespace(conf=SimpleNamespace(broker_url="redis://unused", broker_transport_options={}))
    return CeleryTaskEvents(app, "celery")  # no queues: no depth samples


def ev(kind: str, task_id: str, ts: float, node: str = "w1@h", **extra) -> dict:
    return {"type": kind, "uuid": task_id, "timestamp": ts, "hostname": node, **extra}


def task_events(rec) -> list:
    return [e for e in rec.events if e.kind.startswith("task.")]


def assert_ordered_once(evs, indices) -> dict:
    """Per index, among the task events ``evs``: one queued, one started, one finished,
    in that order and by their times; returns {index: finished event}."""
    seen: dict[int, list] = {}
    for e in evs:
        seen.setdefault(e["index"], []).append(e)
    assert sorted(seen) == sorted(indices), (sorted(seen), sorted(indices))
    out = {}
    for i, evs in seen.items():
        assert [e.kind for e in evs] == ["task.queued", "task.started", "task.finished"], (i, evs)
        q, s, f = evs
        assert q["queued"] <= s["started"] <= f["finished"], (i, evs)
        assert f["started"] == s["started"] and f["worker"] == s["worker"], (i, evs)
        out[i] = f
    return out


def test_events_in_any_order_come_out_queued_started_finished():
    t = offline_tracker()
    with events.Recorder() as rec:
        # a: the worker's events came before apply_async returned (before track), and its
        # task-sent stamp is later than the start (Celery stamps it after the LPUSH).
        t._on_event(ev("task-started", "a", 10.0))
        t._on_event(ev("task-sent", "a", 10.5, node="harness@h"))
        # c: started arrives before task-sent does.
        t.track({"a": 0, "b": [1, 2, 3], "c": 4})
        t._on_event(ev("task-succeeded", "a", 11.0))
        # b: one chunk message carrying three calls.
        for kind, ts in (("task-sent", 20.0), ("task-received", 20.1), ("task-started", 20.2),
                         ("task-succeeded", 20.9), ("task-succeeded", 21.0)):  # twice: one finish
            t._on_event(ev(kind, "b", ts, node="w2@h"))
        t._on_event(ev("task-started", "c", 30.0))
        t._on_event(ev("task-sent", "c", 29.0))
        t._on_event(ev("task-failed", "c", 31.0, exception="ValueError('x')"))
        # another run on the same Redis: ignored, whatever it says
        t._on_event(ev("task-sent", "other", 1.0))
        t._on_event(ev("task-succeeded", "other", 2.0))
        assert t.drain(0) == []
    done = assert_ordered_once(task_events(rec), range(5))
    assert done[0]["started"] == 10.0 and done[0]["finished"] == 11.0
    assert [e["queued"] for e in task_events(rec) if e.kind == "task.queued" and e["index"] == 0] == [10.0]
    assert {done[i]["worker"] for i in (1, 2, 3)} == {"w2@h"} and done[1]["finished"] == 20.9
    assert done[4]["ok"] is False and "ValueError" in done[4]["error"]
    assert all(done[i]["ok"] is True for i in range(4))
    assert all(e["backend"] == "celery" for e in task_events(rec))


def test_a_stamp_before_the_one_it_follows_is_raised_to_it():
    t = offline_tracker()
    with events.Recorder() as rec:
        t.track({"a": 0})
        t._on_event(ev("task-sent", "a", 10.2))
        t._on_event(ev("task-started", "a", 10.1))  # another clock, a little behind
        t._on_event(ev("task-succeeded", "a", 10.15))
    done = assert_ordered_once(task_events(rec), [0])
    assert done[0]["started"] == 10.2 and done[0]["finished"] == 10.2


def test_revoked_rejected_and_offline_workers_lose_their_tasks_once():
    t = offline_tracker()
    with events.Recorder() as rec:
        t.track({"r": 0, "j": 1, "q": 2, "o": [3, 4], "ok": 5})
        t._on_event(ev("task-revoked", "r", 1.0))
        t._on_event(ev("task-rejected", "q", 1.0, requeue=True))  # back in the queue: not lost
        t._on_event(ev("task-rejected", "j", 1.0, requeue=False))
        t._on_event(ev("task-started", "o", 1.0, node="w9@h"))
        t._on_event(ev("task-started", "ok", 1.0, node="w1@h"))
        t._on_event({"type": "worker-offline", "hostname": "w9@h", "timestamp": 2.0})
        t._on_event(ev("task-revoked", "r", 3.0))  # said twice: lost once
        assert t.drain(0) == [2, 5]  # neither finished nor lost: missing
    lost = sorted(e["index"] for e in rec.events if e.kind == "task.lost")
    assert lost == [0, 1, 3, 4]
    assert {e["reason"] for e in rec.events if e.kind == "task.lost" and e["index"] in (3, 4)} == {"worker-offline"}
    assert not [e for e in rec.events if e.kind == "task.finished"]


def test_worker_argv_sends_events_only_when_asked():
    assert "-E" not in worker_argv("w", "q")
    assert "-E" in worker_argv("w", "q", events=True)


# --- real workers -------------------------------------------------------------------------------
def send_group(app, queue: str, n: int, chunk: int = 1):
    """A group of taskrace.call signatures on the queue, as the celery tier's map() sends it."""
    from celery import group

    items = [NOOP] * n
    if chunk > 1:
        return app.tasks["taskrace.call"].chunks(items, chunk).group().apply_async(queue=queue)
    return group(app.signature("taskrace.call", args=item, queue=queue) for item in items).apply_async()


def nodes_of(values, chunk: int = 1) -> list[str]:
    flat = [d for v in values for d in (v if chunk > 1 else [v])]
    return [d["worker"].rsplit(":", 1)[0] for d in flat]


def cmdline(worker) -> list[str]:
    return psutil.Process(worker.pid).cmdline()


def test_workers_started_with_events_report_every_task(embedded_redis, celery_workers):
    from workers.celery_app import make_app

    workers = celery_workers(2, queues="ev", events=True)
    assert all("-E" in cmdline(w) for w in workers)
    app = make_app(embedded_redis.url)
    try:
        with events.Recorder() as rec, CeleryTaskEvents(app, "celery", queues=["ev"]) as tracker:
            result = send_group(app, "ev", 16)
            tracker.track(group_ids(result))
            values = result.join_native(timeout=60, interval=0.002)
            assert tracker.drain(5.0) == []
            plain = task_events(rec)
            chunked = send_group(app, "ev", 11, chunk=4)  # 3 messages: 4, 4 and 3 calls
            tracker.track(group_ids(chunked, per_message=4, total=11))
            chunk_values = chunked.join_native(timeout=60, interval=0.002)
            assert tracker.drain(5.0) == []
    finally:
        app.close()
    done = assert_ordered_once(plain, range(16))
    # The worker of each task is the node its outcome names.
    assert [done[i]["worker"] for i in range(16)] == nodes_of(values)
    assert {n.split("@")[0] for n in nodes_of(values)} <= {"w1", "w2"}
    # The chunks: 11 indices out of 3 ids, each index once, the node of its chunk.
    done = assert_ordered_once(task_events(rec)[len(plain):], range(11))
    assert [done[i]["worker"] for i in range(11)] == nodes_of(chunk_values, 4)
    assert [len([i for i in done if done[i]["task_id"] == tid]) for tid in
            dict.fromkeys(done[i]["task_id"] for i in range(11))] == [4, 4, 3]
    assert all(d["ok"] is True for d in done.values())
    # The queue's depth was sampled, at least once per batch (as track() leaves it).
    depth = [e for e in rec.events if e.kind == "queue.depth"]
    assert len(depth) >= 2 and {e["queue"] for e in depth} == {"ev"}
    assert all(e["depth"] >= 0 and e["unacked"] >= 0 for e in depth)


def test_events_not_wanted_send_nothing(embedded_redis):
    """The tier with only a progress-bar kind of subscriber (no per-task events): its
    workers start without -E and the broker carries no event, not even task-sent."""
    from workers import get_tier

    with events.subscribe(lambda e: None, tasks=False):
        assert events.active() and not events.wants_tasks()
        tier = get_tier("celery")(2, redis_url=embedded_redis.url)
        with tier:
            assert len(tier._workers) == 2 and all("-E" not in cmdline(w) for w in tier._workers)
            counter = counting.CommandCounter(tier.url)
            try:
                fn = __import__("scenarios.power", fromlist=["x"]).calculate_raise_to
                tier.map(fn, [([], 0)] * 4)  # connections, imports
                with counter.window() as w:
                    outcomes = tier.map(fn, [([], 0)] * 30)
            finally:
                counter.close()
    assert len(outcomes) == 30 and not any(o.error for o in outcomes)
    # One PUBLISH per task (its result to the waiting caller), none for events; nobody
    # subscribed to Celery's events either.
    assert w.delta.get("publish") == 30, w.delta
    assert not {"psubscribe", "llen", "hlen"} & set(w.delta), w.delta


def test_a_worker_started_elsewhere_is_turned_on_by_broadcast_and_back_off(embedded_redis, tmp_path):
    """As in the lab: a worker nobody here started with -E (started the way the compose
    service starts it) is seen once enable_events() reaches it, and is left as it was."""
    from workers.celery_app import make_app

    worker = start_worker(embedded_redis.url, "lab1", tmp_path, queues="lab")
    app = make_app(embedded_redis.url)
    counter = counting.CommandCounter(embedded_redis.url)
    try:
        wait_ready([worker])
        assert "-E" not in cmdline(worker)
        with events.Recorder() as rec:
            tracker = CeleryTaskEvents(app, "celery", queues=["lab"]).start()
            try:
                turned = tracker.enable_remote()
                result = send_group(app, "lab", 8)
                tracker.track(group_ids(result))
                values = result.join_native(timeout=60, interval=0.002)
                assert tracker.drain(5.0) == []
            finally:
                tracker.stop()
        assert turned == [f"lab1@{nodes_of(values)[0].split('@')[1]}"]
        done = assert_ordered_once(task_events(rec), range(8))
        assert [done[i]["worker"] for i in range(8)] == nodes_of(values)
        assert app.conf.task_send_sent_event is False  # the sender as it was, too
        # Handed back: the same worker, the next batch, no event on the broker.
        with counter.window() as w:
            send_group(app, "lab", 10).join_native(timeout=60, interval=0.002)
        assert w.delta.get("publish") == 10, w.delta
    finally:
        counter.close()
        app.close()
        stop_workers([worker])
