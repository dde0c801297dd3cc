"""The Celery tier, in this process: real Redis, real ``celery worker`` processes.

No eager mode, no mocks: every run below is on N real ``celery worker`` processes and a
real redis-server. The runs of sections 1 and 2 share a started tier (one per set of tier
options), as ``compare`` shares one among its points; the others start their own (Redis and
workers, unless a Redis URL is given) and stop them again. In CI (CI=true) nothing here may
skip: ``require_redis_binary`` fails instead.

Faults and the command line (broker down, broker lost mid-run, Ctrl-C, REDIS_URL in a
subprocess) are in test_celery_faults.py.
"""
from __future__ import annotations

import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import redis

try:
    from celery_fixtures import require_redis_binary
    from celery_procs import descendants, is_celery_worker, is_redis_server, tempdirs_of, wait_gone
    from conftest import run
except ImportError:  # tests/ imported as a package
    from tests.celery_fixtures import require_redis_binary
    from tests.celery_procs import descendants, is_celery_worker, is_redis_server, tempdirs_of, wait_gone
    from tests.conftest import run

from scenarios import SCENARIOS
from scenarios.mapreduce import sum_of_powers
from taskrace.measuring.runner import aggregate, measure, prepare, run_one
from workers.infra.redis_server import EmbeddedRedis

WORKERS = 2
NODE = re.compile(r"taskrace-[0-9a-f]{8}-[wx]\d+@.+")  # taskrace-<run id>-w1@host (x: extra actor workers)


@pytest.fixture(autouse=True)
def _redis_binary():
    require_redis_binary()  # skips locally without redis-server; fails in CI


def celery(scenario: str, workers: int = WORKERS, tier_options: dict | None = None,
           history: list | None = None, **params) -> dict:
    """One run as ``taskrace run`` does it: the tier (Redis, workers) started and stopped for it."""
    return run(scenario, "celery", workers, tier_options=tier_options, history=history, **params)


@pytest.fixture(scope="module")
def shared_tiers():
    """Started celery tiers of WORKERS workers, one per set of tier options, each shared by the
    runs of sections 1 and 2 as ``compare`` shares one among its points
    (taskrace.measuring.sweep.execute: one tier per backend and -n, every point's runs on
    it). Stopped at the end of the module, also when a test failed."""
    require_redis_binary()
    tiers: dict[tuple, object] = {}

    def get(options: dict):
        key = tuple(sorted(options.items()))
        if key not in tiers:
            _, tier = prepare("power-io", {}, "celery", WORKERS, dict(options), 0)
            tiers[key] = tier.__enter__()  # a failed start stops what it started (Tier.__enter__)
        return tiers[key]

    try:
        yield get
    finally:  # side by side: idle workers take ~2.5 s each to shut down warm
        with ThreadPoolExecutor(len(tiers) or 1) as pool:
            stopped = [pool.submit(tier.__exit__, None, None, None) for tier in tiers.values()]
        for f in stopped:
            f.result()


def on_shared(tiers, scenario: str, tier_options: dict | None = None, history: list | None = None,
              **params) -> dict:
    """One run on the shared tier for ``tier_options``, recorded as ``run`` records one (a
    sample measured, then aggregated)."""
    options = dict(tier_options or {})
    tier = tiers(options)
    sc, _ = prepare(scenario, params, "celery", WORKERS, options, 0)
    return aggregate(sc, tier, [measure(sc, tier, history)])


# --- 1. every scenario agrees with sequential ----------------------------------------------

CASES = {
    "power-io": ({"sleep": 0.05}, {}),
    "power-cpu": ({"size": 200, "exponent": 200, "tasks": 4}, {}),
    "globals": ({}, {}),
    "globals-shared": ({"store": "shared"}, {}),  # the seed's answer: a store made for sharing (Redis)
    "pipeline": ({}, {}),
    "mapreduce": ({"size": 20_000, "chunksize": 2_000}, {}),
    "mapreduce-chunk5": ({"size": 20_000, "chunksize": 2_000}, {"chunk": 5}),  # celery chunks
    "bank": ({"strategy": "lock", "delay": 0.002, "trials": 2}, {}),
}


def test_cases_cover_every_scenario():
    assert {_scenario(name) for name in CASES} == set(SCENARIOS)


def _scenario(case: str) -> str:
    return case.split("-chunk")[0].split("-shared")[0]


@pytest.mark.parametrize("case", list(CASES))
def test_celery_agrees_with_sequential(shared_tiers, case):
    params, tier_options = CASES[case]
    scenario = _scenario(case)
    base = run(scenario, "sequential", 1, **params)
    rec = on_shared(shared_tiers, scenario, tier_options=tier_options, **params)
    assert base["verdict"]["ok"], base["verdict"]
    assert rec["verdict"]["ok"], rec["verdict"]
    assert rec["backend"] == "celery" and rec["workers"] == WORKERS
    assert rec["answer_digest"] == base["answer_digest"]
    if not tier_options.get("chunk"):  # chunked calls: see test_chunked_calls_report_their_node
        assert rec["nodes"] and all(NODE.fullmatch(n) for n in rec["nodes"]), rec["nodes"]
    if scenario == "globals":  # the workers' list lives in the workers' processes; Redis does not
        assert base["verdict"]["visible"] is True
        assert rec["verdict"]["visible"] is (params.get("store") == "shared")
    if tier_options.get("chunk"):
        assert rec["tier"]["chunk"] == tier_options["chunk"]
        # 10 chunks of the list travelled as 2 messages, still one outcome per chunk
        assert rec["task_timing"]["count"] == rec["tasks"] == 10
        assert sum(rec["nodes"].values()) == 10


# --- 2. the bank on celery ---------------------------------------------------------------------

BANK = {"delay": 0.002, "trials": 10}


def _every_op_once(details: dict, planned: int) -> None:
    """The checker counted every planned operation exactly once, against the plan."""
    assert details["planned"] == details["applied_once"] == planned, details
    assert details["lost_ops"] == details["duplicated_ops"] == details["unplanned_ops"] == 0, details


def test_bank_none_violates_nearly_always(shared_tiers):
    rec = on_shared(shared_tiers, "bank", strategy="none", **BANK)
    details = rec["verdict"]["details"]
    assert rec["verdict"]["unsafe"] is True and rec["verdict"]["ok"] is False
    assert details["trials"] == 10
    assert details["violating_trials"] >= 9, details
    assert details["errors"] == []
    _every_op_once(details, 10 * 2 * 100)  # updates are lost through Redis, operations are not


@pytest.mark.parametrize("strategy", ["lock", "atomic", "optimistic", "queue"])
def test_bank_safe_strategies_never_violate(shared_tiers, strategy):
    history: list = []
    rec = on_shared(shared_tiers, "bank", strategy=strategy, history=history, **BANK)
    details = rec["verdict"]["details"]
    assert rec["verdict"]["ok"], rec["verdict"]
    assert details["trials"] == 10 and details["violating_trials"] == 0, details
    assert details["lost_updates"] == 0 and details["money_created"] == details["money_lost"] == 0
    assert details["errors"] == []
    assert len(history) == 10 * 2 * 100  # every deposit and withdrawal of every trial
    _every_op_once(details, 10 * 2 * 100)
    if strategy == "optimistic":
        assert isinstance(details["retries"], int) and details["retries"] >= 0
        assert all(isinstance(line["retries"], int) and line["retries"] >= 0 for line in history)
        assert details["retries"] == sum(line["retries"] for line in history)
    if strategy == "queue":  # the owner needed a worker of its own: 2 clients + 1 owner > 2 slots
        assert rec["tier"]["extra_actor_workers"] >= 1


@pytest.mark.parametrize("strategy", ["lock", "atomic", "optimistic", "queue"])
def test_bank_transfers_conserve_money(shared_tiers, strategy):
    rec = on_shared(shared_tiers, "bank", strategy=strategy, mode="transfers", trials=2, ops=20, delay=0.002)
    details = rec["verdict"]["details"]
    assert rec["verdict"]["ok"], rec["verdict"]
    assert details["violating_trials"] == 0 and details["negative_balances"] == 0, details
    assert details["drift_per_trial"] == [0, 0]
    _every_op_once(details, 2 * 2 * 20)
    assert rec["answer_digest"] == run("bank", "sequential", 1, strategy=strategy, mode="transfers",
                                       trials=2, ops=20, delay=0.002)["answer_digest"]


# --- 3 + 5. the record of a run; the embedded Redis comes and goes -------------------------

@pytest.fixture(scope="module")
def observed_run():
    """power-io, 4 tasks of 0.2 s on 2 workers, run in a thread while this thread watches
    the test process's children: the embedded redis-server, the worker trees, their dirs."""
    require_redis_binary()
    me = psutil.Process()
    before = {p.pid for p in descendants()}
    box: dict = {}

    def target():
        try:
            box["record"] = celery("power-io", tasks=4, sleep=0.2)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="celery-run")
    seen: dict[int, str] = {}  # pid -> "redis" / "celery", noted while the process lives
    redis_parents: set[int] = set()
    dirs: set[str] = set()
    thread.start()
    while thread.is_alive():
        new = [p for p in descendants() if p.pid not in before]
        for p in new:
            if p.pid in seen:
                continue
            if is_redis_server(p):
                seen[p.pid] = "redis"
                try:
                    redis_parents.add(p.ppid())
                except psutil.Error:
                    pass
            elif is_celery_worker(p):
                seen[p.pid] = "celery"
        dirs |= tempdirs_of(new)
        time.sleep(0.02)
    thread.join()
    if "error" in box:
        raise box["error"]
    return {"record": box["record"], "seen": seen, "redis_parents": redis_parents, "dirs": dirs,
            "me": me.pid, "before": before}


def test_record_lists_nodes_with_task_counts(observed_run):
    rec = observed_run["record"]
    assert rec["verdict"]["ok"], rec["verdict"]
    nodes = rec["nodes"]
    run_id = rec["tier"]["queue"].split(".", 1)[1]
    names = {f"taskrace-{run_id}-w1", f"taskrace-{run_id}-w2"}
    # Only the run's own workers ran its tasks. How the 4 tasks fell on the two is the
    # broker's business (a worker slow to poll may get none), so it is counted, not assumed.
    assert nodes and {n.split("@")[0] for n in nodes} <= names, nodes
    assert all(n.split("@")[1] for n in nodes)  # node names carry the host
    assert sum(nodes.values()) == 4 and all(c >= 1 for c in nodes.values())
    assert rec["task_timing"]["workers_used"] == len(nodes)


def test_record_has_per_node_resource_use(observed_run):
    """Measured inside each worker (so per container in the lab): tasks, CPU, memory."""
    rec = observed_run["record"]
    per_node = rec["node_metrics"]
    assert set(per_node) == set(rec["nodes"])
    for node, m in per_node.items():
        assert m["tasks"] == rec["nodes"][node]
        assert m["cpu_s"] >= 0 and m["max_rss_bytes"] > 10 * 2**20, (node, m)  # a Python process


def test_record_splits_task_time(observed_run):
    timing = observed_run["record"]["task_timing"]
    assert timing["count"] == 4
    for part in ("queue_wait", "run", "return"):
        assert timing[part] is not None, part
        assert 0 <= timing[part]["median_s"] <= timing[part]["max_s"], (part, timing[part])
    assert timing["run"]["median_s"] >= 0.19  # the 0.2 s sleep ran in the worker
    assert "one host" in observed_run["record"]["environment"]["clock"]


def test_record_describes_the_tier(observed_run):
    tier = observed_run["record"]["tier"]
    assert tier["pool"] == "prefork" and tier["concurrency"] == 1
    assert tier["prefetch_multiplier"] == 1 and tier["acks_late"] is False and tier["chunk"] == 1
    assert tier["broker"] == "embedded" and tier["workers"] == WORKERS


def test_tier_options_are_recorded():
    rec = celery("power-io", 1, tier_options={"pool": "threads", "concurrency": 2, "prefetch": 4,
                                              "acks_late": True}, tasks=2, sleep=0.05)
    assert rec["verdict"]["ok"], rec["verdict"]
    tier = rec["tier"]
    assert (tier["pool"], tier["concurrency"], tier["prefetch_multiplier"], tier["acks_late"]) == \
        ("threads", 2, 4, True)


def test_embedded_redis_started_during_the_run(observed_run):
    kinds = list(observed_run["seen"].values())
    assert kinds.count("redis") == 1, "one embedded redis-server per run"
    assert observed_run["redis_parents"] == {observed_run["me"]}  # ours, started by the tier
    assert kinds.count("celery") >= 2 * WORKERS  # 2 x (worker main process + pool child)
    assert any(os.path.basename(d).startswith("taskrace-redis-") for d in observed_run["dirs"])
    assert any(os.path.basename(d).startswith("taskrace-celery-") for d in observed_run["dirs"])


def test_embedded_redis_and_workers_cleaned_up(observed_run):
    assert wait_gone(list(observed_run["seen"])) == []
    left = [p for p in descendants() if p.pid not in observed_run["before"]
            and (is_redis_server(p) or is_celery_worker(p))]
    assert left == [], [p.cmdline() for p in left]
    assert observed_run["dirs"]  # the run's temp dirs were found...
    assert [d for d in observed_run["dirs"] if os.path.exists(d)] == []  # ...and are gone


# --- 4. a task that raises inside a worker -------------------------------------------------

@pytest.fixture(scope="module")
def one_worker():
    """A started CeleryTier with one worker, for calling ``map`` directly."""
    require_redis_binary()
    from workers.celery_tier import CeleryTier

    with CeleryTier(1) as tier:
        yield tier


ARGS = [([1, 2], 2), ([1, 2], "x"), ([3], 1)]  # "x": int ** str raises TypeError in the worker


@pytest.mark.parametrize("chunksize", [1, 3])  # one message per call; one message for all three
def test_task_error_is_reported_per_task_and_the_run_goes_on(one_worker, chunksize):
    outs = one_worker.map(sum_of_powers, ARGS, chunksize=chunksize)
    assert [o.index for o in outs] == [0, 1, 2]
    assert [o.value for o in outs] == [5, None, 3]
    assert outs[0].error is None and outs[2].error is None
    assert outs[1].error.startswith("TypeError"), outs[1].error
    assert all(o.started is not None and o.finished >= o.started for o in outs)
    # the worker survived: a plain call still works afterwards
    assert one_worker.map(sum_of_powers, [([2], 3)])[0].value == 8


@pytest.mark.parametrize("chunksize", [1, 3])
def test_chunked_calls_report_their_node(one_worker, chunksize):
    """Every outcome names the Celery node that ran it, chunked (celery.starmap) or not:
    that is what the record's ``nodes`` counts."""
    outs = one_worker.map(sum_of_powers, ARGS, chunksize=chunksize)
    node = f"taskrace-{one_worker.run_id}-w1@"
    assert [o.worker.startswith(node) for o in outs] == [True] * 3, [o.worker for o in outs]


# --- 6. an explicit Redis URL is used, and left as it was found ----------------------------

@pytest.fixture(scope="module")
def external_run():
    """bank (queue strategy: accounts, channel, an extra worker) against a Redis the test
    started, given as ``redis_url``. Watches, during the run, how many redis-server
    processes exist under the test process and which keys of the run are in Redis."""
    require_redis_binary()
    server = EmbeddedRedis().start()
    try:
        r = redis.Redis.from_url(server.url)
        before_keys = set(r.keys("*"))
        scenario, tier = prepare("bank", {"strategy": "queue", "delay": 0.002, "trials": 1, "steps": 30},
                                 "celery", WORKERS, {"redis_url": server.url}, 0)
        box: dict = {}

        def target():
            try:
                box["record"] = run_one(scenario, tier)
            except BaseException as exc:  # noqa: BLE001
                box["error"] = exc

        thread = threading.Thread(target=target, name="celery-run")
        present = {p.pid for p in descendants() if is_redis_server(p)}  # ours (and any other fixture's)
        new_redis, keys_seen = set(), set()
        thread.start()
        while thread.is_alive():
            new_redis |= {p.pid for p in descendants() if is_redis_server(p) and p.pid not in present}
            keys_seen |= {k.decode() for k in r.scan_iter(match=f"taskrace:{tier.run_id}:*", count=1000)}
            time.sleep(0.02)
        thread.join()
        if "error" in box:
            raise box["error"]
        after = {k.decode(): (r.type(k).decode(), r.ttl(k)) for k in set(r.keys("*")) - before_keys}
        deadlines = [m.decode() for m in r.zrange("_kombu.binding_deadlines", 0, -1)]
        yield {"record": box["record"], "tier": tier, "server": server, "new_redis": new_redis,
               "keys_seen": keys_seen, "after": after, "deadlines": deadlines}
        r.close()
    finally:
        server.stop()


def test_explicit_redis_url_is_used(external_run):
    rec = external_run["record"]
    server = external_run["server"]
    assert rec["verdict"]["ok"], rec["verdict"]
    assert external_run["new_redis"] == set(), "the tier started a redis-server of its own"
    assert external_run["keys_seen"], "the run's keys never showed up in the given Redis"
    assert rec["tier"]["broker"] == server.redacted_url
    assert server.password not in repr(rec)


def test_explicit_redis_is_cleaned_of_the_runs_keys(external_run):
    run_id = external_run["tier"].run_id
    left = sorted(k for k in external_run["after"] if k.startswith(f"taskrace:{run_id}:"))
    assert left == []
    assert f"taskrace.{run_id}" not in external_run["after"]  # the run's queue


def test_explicit_redis_keeps_no_permanent_key_of_the_run(external_run):
    """Result keys expire (result_expires); nothing naming the run may stay forever.
    A shared Redis would otherwise gain kombu's binding sets for every run's queue."""
    run_id = external_run["tier"].run_id
    permanent = sorted(k for k, (_, ttl) in external_run["after"].items() if run_id in k and ttl < 0)
    assert permanent == [], f"keys left in the user's Redis with no expiry: {permanent}"
    assert [m for m in external_run["deadlines"] if run_id in m] == []


def test_redis_url_from_environment(monkeypatch):
    with EmbeddedRedis() as server:
        monkeypatch.setenv("REDIS_URL", server.url)
        before = sum(is_redis_server(p) for p in descendants())
        scenario, tier = prepare("power-io", {"sleep": 0.05, "tasks": 2}, "celery", 1, {}, 0)
        assert tier.redis_url == server.url
        with tier:
            assert sum(is_redis_server(p) for p in descendants()) == before  # none started
            assert tier.url == server.url
            outs = tier.map(sum_of_powers, [([1, 2, 3], 2)])
        assert outs[0].value == 14
        r = redis.Redis.from_url(server.url)
        try:
            assert list(r.scan_iter(match=f"taskrace:{tier.run_id}:*")) == []
            assert not r.exists(f"taskrace.{tier.run_id}")
        finally:
            r.close()
