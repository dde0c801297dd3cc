"""Lock-holder faults (taskrace/faultlab/lockholder.py): a process killed or paused inside
its critical section, on a multiprocessing.Lock and on a Redis lock with a lease.

Real worker processes, a real Redis (the embedded one). Every fault is fired by progress
(the holder after k increments says "I hold it"), so the counts below are exact; no
assertion depends on how fast this machine is.
"""
from __future__ import annotations

import json

import pytest
import redis

from celery_fixtures import embedded_redis, require_redis_binary  # noqa: F401 (fixture)
from celery_procs import alive, cmdline, descendants, is_redis_server
from taskrace.faultlab.lockholder import FAULTS, STORES, lock_holder_fault

# multiprocessing's own helpers live as long as this interpreter, shared by every run.
HELPER_MARKERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def started_since(before: set[int]) -> list[str]:
    """Processes this test process started since ``before`` that are still running."""
    return [f"{p.pid}: {cmdline(p)}" for p in descendants()
            if p.pid not in before and not any(m in cmdline(p) for m in HELPER_MARKERS)]


def check_common(r: dict, before: set[int]) -> None:
    assert json.loads(json.dumps(r)) == r  # JSON-able as it is
    assert r["pids"] and not [pid for pid in r["pids"] if alive(pid)], "a worker outlived the run"
    assert started_since(before) == []
    assert r["holder"]["pid"] in r["pids"]
    assert r["kept"] == (r["broken"] == [])
    assert r["summary"] and "\n" not in r["summary"]


@pytest.mark.parametrize("start_method, workers", [(None, 3), ("spawn", 2)])
def test_multiprocessing_kill_holder_deadlocks_and_ends(start_method, workers):
    before = {p.pid for p in descendants()}
    r = lock_holder_fault("multiprocessing", "kill-holder", workers=workers, start_method=start_method)
    check_common(r, before)
    assert r["deadlocked"] is True and r["completed"] is False
    assert r["broken"] == ["progress"]
    # The victim claimed the lock at exactly fault_after increments; nothing moved after.
    assert r["increments"] == r["counter"] == r["settings"]["fault_after"] < r["planned"]
    assert r["lock_held_at_end"] is True  # still held by a process that no longer exists
    assert r["holder"]["fate"] == "killed"
    survivors = [pid for pid in r["pids"] if pid != r["holder"]["pid"]]
    assert r["survivors_stuck"] == workers - 1 and sorted(r["stopped_by_pid"]) == sorted(survivors)
    assert r["max_holders_at_once"] == 1 and r["lock_not_owned_errors"] == 0
    assert r["detected_after_s"] >= r["settings"]["stall_s"]  # decided by the no-progress window
    assert "deadlock" in r["summary"]


def test_multiprocessing_pause_holder_just_waits():
    before = {p.pid for p in descendants()}
    r = lock_holder_fault("multiprocessing", "pause-holder")
    check_common(r, before)
    assert r["completed"] is True and r["deadlocked"] is False and r["kept"] is True
    assert r["increments"] == r["counter"] == r["planned"]
    assert r["max_holders_at_once"] == 1 and r["lost_updates"] == 0
    assert r["acquire_timeouts"] >= 1  # the survivor waited for the stopped holder
    assert r["lock_held_at_end"] is False


def test_redis_kill_holder_lease_frees_the_lock(embedded_redis):
    before = {p.pid for p in descendants()}
    r = lock_holder_fault("redis", "kill-holder", redis_url=embedded_redis.url)
    check_common(r, before)
    assert r["completed"] is True and r["deadlocked"] is False and r["kept"] is True
    assert r["increments"] == r["counter"] == r["planned"]
    assert r["max_holders_at_once"] == 1 and r["lost_updates"] == 0
    assert r["lock_not_owned_errors"] == 0 and r["lock_held_at_end"] is False
    client = redis.Redis.from_url(embedded_redis.url)
    try:
        assert client.keys("taskrace:lockholder:*") == []  # no key left behind
    finally:
        client.close()


def test_redis_pause_holder_two_holders_at_once():
    require_redis_binary()
    before = {p.pid for p in descendants()}
    r = lock_holder_fault("redis", "pause-holder")  # its own embedded Redis
    check_common(r, before)  # includes: that redis-server is gone
    assert not any(is_redis_server(p) for p in descendants() if p.pid not in before)
    assert r["max_holders_at_once"] >= 2
    assert r["lock_not_owned_errors"] >= 1  # the resumed holder's release()
    # It wrote back a count read before its pause, over the other holder's work.
    assert r["lost_updates"] >= 1 and r["counter"] == r["increments"] - r["lost_updates"]
    assert r["completed"] is True and r["deadlocked"] is False
    assert r["kept"] is False and r["broken"] == ["mutual exclusion"]


@pytest.mark.parametrize("kwargs, listed", [
    (dict(store="sqlite"), STORES),
    (dict(store="redis", fault="explode"), FAULTS),
    (dict(store="multiprocessing", start_method="teleport"), ("fork", "spawn")),
])
def test_unknown_choice_lists_the_choices(kwargs, listed):
    with pytest.raises(ValueError) as exc:
        lock_holder_fault(**kwargs)
    msg = str(exc.value)
    assert "\n" not in msg and all(choice in msg for choice in listed)


@pytest.mark.parametrize("kwargs", [dict(workers=1), dict(steps=1), dict(steps=10, fault_after=10)])
def test_bad_sizes(kwargs):
    with pytest.raises(ValueError):
        lock_holder_fault("multiprocessing", **kwargs)
