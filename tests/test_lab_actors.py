"""External Celery workers as the compose lab runs them (`--scale worker=N`, N = -n),
without Docker: a real Redis and N real ``celery worker`` processes that only listen on a
shared queue, used by a CeleryTier with ``external=True``.

* Actor scenarios need one slot more than -n (a producer or an owner beside the n
  others). With no one allowed to add workers, the actors beyond the workers' slots run
  in the harness, and the record says so.
* The tasks ran outside the harness's process tree, so the record's CPU %, peak RSS and
  processes are the workers' own (measured where the tasks ran), with their source named
  and the harness's tree kept beside them.

Skipped locally without a redis-server binary; in CI (CI=true) that fails instead.
"""
from __future__ import annotations

import secrets

import pytest

try:
    from celery_fixtures import require_redis_binary, start_worker
except ImportError:  # tests/ imported as a package
    from tests.celery_fixtures import require_redis_binary, start_worker

from taskrace.measuring.runner import HARNESS_SOURCE, MIN_CPU_WINDOW_S, prepare, run_one
from workers.celery_workers import stop_workers, wait_ready
from workers.infra.redis_server import EmbeddedRedis

N = 2


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A Redis and N workers on one shared queue: the compose lab's `worker` service."""
    require_redis_binary()
    queue = f"taskrace-lab-{secrets.token_hex(3)}"
    server = EmbeddedRedis().start()
    workers = []
    try:
        logs = tmp_path_factory.mktemp("lab-workers")
        workers = [start_worker(server.url, f"labworker{k}", logs, queues=queue) for k in range(1, N + 1)]
        wait_ready(workers, 60)
        yield {"url": server.url, "queue": queue, "nodes": {w.name for w in workers}}
    finally:
        stop_workers(workers)
        server.stop()


def lab_run(lab, monkeypatch, scenario: str, **params) -> dict:
    monkeypatch.setenv("TASKRACE_QUEUE", lab["queue"])
    sc, tier = prepare(scenario, params, "celery", N, {"redis_url": lab["url"], "external": True}, 0)
    return run_one(sc, tier)


def _node_names(record) -> set[str]:
    return {n.split("@", 1)[0] for n in record["nodes"]}


@pytest.mark.parametrize("scenario,params,coordinator", [
    ("pipeline", {"items": 40, "capacity": 4}, "producer"),
    ("bank", {"strategy": "queue", "trials": 1, "steps": 20, "delay": 0.001}, "owner"),
])
def test_actor_beyond_the_workers_runs_in_the_harness(lab, monkeypatch, scenario, params, coordinator):
    record = lab_run(lab, monkeypatch, scenario, **params)
    assert record["verdict"]["ok"], record["verdict"]
    tier = record["tier"]
    assert tier["external_workers"] and tier["actor_slots"] == N
    # n + 1 actors, N slots: exactly one (the coordinator) ran in the harness.
    assert record["metrics"]["actors_in_harness"] == 1 and tier["extra_actor_workers"] == 0
    assert _node_names(record) == {"harness"} | {f"labworker{k}" for k in range(1, N + 1)}, record["nodes"]
    harness_node = next(n for n in record["nodes"] if n.startswith("harness@"))
    assert record["nodes"][harness_node] == 1  # one actor, the coordinator
    assert record["metrics"]["source"] == f"worker nodes ({N}) + harness (1 actor)"
    # Processes: both workers and the harness ran actors; memory: the workers' own only.
    assert record["metrics"]["os_processes"] == N + 1
    assert record["metrics"]["peak_rss_bytes"] == sum(
        m["max_rss_bytes"] for node, m in record["node_metrics"].items() if not node.startswith("harness@"))
    assert record["metrics"]["harness"]["source"] == HARNESS_SOURCE


def test_actors_that_fit_stay_on_the_workers(lab, monkeypatch):
    """bank `none` with -n 2: two actors, two slots, nothing in the harness."""
    record = lab_run(lab, monkeypatch, "bank", strategy="none", trials=1, steps=20, delay=0.001)
    assert record["metrics"]["actors_in_harness"] == 0
    assert _node_names(record) == {f"labworker{k}" for k in range(1, N + 1)}, record["nodes"]


def test_cpu_memory_and_processes_are_the_workers_own(lab, monkeypatch):
    record = lab_run(lab, monkeypatch, "power-cpu", tasks=4, size=20000, exponent=300)
    m = record["metrics"]
    assert record["verdict"]["ok"]
    assert m["source"] == f"worker nodes ({len(record['nodes'])})" and m["worker_nodes"] == len(record["nodes"])
    # The tasks' CPU, summed from what each worker measured, over the run's wall time.
    cpu_s = sum(nm["cpu_s"] for nm in record["node_metrics"].values())
    assert cpu_s > 0 and m["cpu_seconds"] == pytest.approx(cpu_s, abs=0.002)
    # cpu_seconds is stored to 1 ms, cpu_percent to 0.1: recomputed, they agree within that.
    # (Over less than 0.1 s there is no CPU % at all, as for the harness's tree.)
    if record["wall_s"] < MIN_CPU_WINDOW_S:
        assert m["cpu_percent"] is None
    else:
        rounding = 100 * 0.0005 / record["wall_s"] + 0.05 + 1e-6
        assert abs(m["cpu_percent"] - 100 * m["cpu_seconds"] / record["wall_s"]) <= rounding
    # One pool process per worker node (concurrency 1): the processes that ran tasks.
    assert 1 <= m["os_processes"] == len(record["node_metrics"]) <= N
    assert m["peak_rss_bytes"] == sum(nm["max_rss_bytes"] for nm in record["node_metrics"].values())
    assert m["threads"] is None  # not measured outside the harness: shown as "-", not as the harness's
    # The harness's own tree is kept, and it is not what the columns show.
    assert m["harness"]["source"] == HARNESS_SOURCE and m["harness"]["os_processes"] >= 1
    # The -n workers told to consume the run's queue are in the record, also after stop()
    # handed them back (it was [] once: the lab's records said no node took the tasks).
    assert len(record["tier"]["nodes_for_tasks"]) == N, record["tier"]
    assert set(record["nodes"]) <= set(record["tier"]["nodes_for_tasks"]) <= set(record["tier"]["nodes_up"])
    assert set(m["how"]) >= {"cpu_percent", "peak_rss_bytes", "os_processes"}


def test_workers_the_harness_did_not_start_are_heard_too(lab, monkeypatch):
    """As in the lab: the workers were started by someone else, without -E. A listener to
    task events has the tier ask them (enable_events), and each task's queued, started and
    finished come from those workers, named as the record's nodes (handing them back with
    their events off is test_celery_events' to check)."""
    from taskrace import events

    from test_events import check_tasks

    with events.Recorder() as rec:
        record = lab_run(lab, monkeypatch, "power-io", tasks=4, sleep=0.05)
    assert record["verdict"]["ok"], record["verdict"]
    check_tasks(rec.events, 4, record)
    assert {e["worker"].split("@")[0] for e in rec.events if e.kind == "task.finished"} <= lab["nodes"]
