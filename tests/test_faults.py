"""The fault lab: every fault under every delivery mode, on real Celery workers and real
Redis servers (the embedded cluster, no Docker), judged against the plan.

Runs are driven by events (the fault fires once k operations have started, on one that is
running; the run ends when nothing more can happen or at a deadline derived from the
work), so nothing here sleeps for a fixed time or asserts a duration. What is asserted is
each mode's promise, and the loss or duplicate each lesson is about.
"""
from __future__ import annotations

import json
import multiprocessing
import signal
from concurrent.futures import ProcessPoolExecutor

import pytest

try:
    from celery_fixtures import require_redis_binary
    from celery_procs import MarkedRun, is_celery_worker, is_redis_server, wait_for, wait_gone
    from conftest import cli
except ImportError:  # tests/ imported as a package
    from tests.celery_fixtures import require_redis_binary
    from tests.celery_procs import MarkedRun, is_celery_worker, is_redis_server, wait_for, wait_gone
    from tests.conftest import cli

from taskrace.faultlab.checker import count_against_plan, promise_kept, summary
from taskrace.faultlab.cli import exit_code
from taskrace.faultlab.run import FaultSpec, plan, run_fault
from workers.delivery import DEFAULT_MODES, get_mode

# Small and quick: 16 operations of 0.2 s on two workers, the fault after the 4th start.
SMALL = dict(ops=16, work_s=0.2, at=4)

# Every run on real workers below, (fault, mode, options): each is a cluster of its own (two
# Redis servers, two worker nodes, a queue and a ledger of its own), so they run side by
# side, AT_ONCE at a time, each in a process of its own exactly as it would alone; a run
# spends most of its time waiting (on a paused worker's hold, a visibility timeout, a
# restart), not computing. Longest first, so the last to finish is a short one.
RUNS = [
    *[("pause-worker", m, ()) for m in DEFAULT_MODES],
    ("kill-child", "acks-late-only", ()),
    *[("kill-worker", m, ()) for m in DEFAULT_MODES],
    *[("kill-child", m, ()) for m in DEFAULT_MODES],
    *[("restart-broker", m, (("persistence", "aof"),)) for m in DEFAULT_MODES],
    *[("drop-connections", m, (("workload", "jobs"),)) for m in DEFAULT_MODES],
    ("drop-connections", "at-least-once", (("persistence", "none"), ("workload", "jobs"))),
    ("restart-broker", "at-least-once", (("persistence", "none"),)),
]
AT_ONCE = 6
RUN_TIMEOUT = 600  # for any one run to end (each ends itself at a deadline derived from its work)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """``taskrace faults`` on the command line (kill-child under at-least-once), started with
    the runs below (fault_runs asks for it first) and running beside them; its test reads
    it. Whatever of it is left at the end is stopped (MarkedRun)."""
    require_redis_binary()
    out = tmp_path_factory.mktemp("faults-cli") / "faults.json"
    with MarkedRun("faults", "--fault", "kill-child", "--mode", "at-least-once", "--ops", "12",
                   "--work", "0.2", "--no-contrast", "--json", str(out), "--no-progress",
                   env={"COLUMNS": "80"}) as run:
        yield run, out


@pytest.fixture(scope="module")
def fault_runs(cli_run):
    """Every run of RUNS started at once (AT_ONCE at a time, in spawned processes: no fork of
    this threaded process); a test waits for its own. At the end, every run is waited for:
    each stops its own workers and servers (run_fault's ``finally``), also when it failed."""
    pool = ProcessPoolExecutor(AT_ONCE, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield {key: pool.submit(run_fault, FaultSpec(key[0], key[1], **{**SMALL, **dict(key[2])}))
               for key in RUNS}
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def fault_run(runs: dict, fault: str, mode: str, **kw) -> dict:
    """The record of the run (fault, mode, kw), one of RUNS."""
    return runs[(fault, mode, tuple(sorted(kw.items())))].result(timeout=RUN_TIMEOUT)


def _counts(record: dict) -> dict:
    return record["counts"]


# --- the checker: pure, fed hand-made ledgers ---------------------------------------------

OPS = [{"op": "t0", "deltas": [[0, -10], [1, 10]]}, {"op": "t1", "deltas": [[1, -7], [2, 7]]},
       {"op": "t2", "deltas": [[2, -3], [0, 3]]}]
INITIAL = [100, 100, 100]


def _final(applied: dict) -> list[int]:
    out = list(INITIAL)
    for op in OPS:
        for account, delta in op["deltas"]:
            out[account] += delta * applied.get(op["op"], 0)
    return out


def test_checker_counts_every_op_once():
    applied = {"t0": 1, "t1": 1, "t2": 1}
    c = count_against_plan(OPS, applied, INITIAL, _final(applied))
    assert (c["planned"], c["applied_once"], c["lost"], c["duplicated"], c["unplanned"]) == (3, 3, 0, 0, 0)
    assert c["ledger_consistent"] and c["money_missing"] == c["money_created"] == 0
    assert summary(c, money=True) == "all 3 transfers applied exactly once"


def test_checker_catches_a_lost_op_and_its_money():
    applied = {"t0": 1, "t2": 1}
    c = count_against_plan(OPS, applied, INITIAL, _final(applied))
    assert (c["lost"], c["lost_ops"], c["money_missing"]) == (1, ["t1"], 7)
    assert summary(c, money=True) == "1 transfers lost: 7 units missing"


def test_checker_catches_an_op_applied_twice_and_the_money_it_created():
    applied = {"t0": 3, "t1": 1, "t2": 1}
    c = count_against_plan(OPS, applied, INITIAL, _final(applied))
    assert (c["duplicated"], c["extra_applications"], c["money_created"]) == (1, 2, 20)
    assert c["duplicated_ops"] == ["t0"] and c["ledger_consistent"]


def test_checker_catches_unplanned_ops_and_balances_the_ledger_cannot_explain():
    applied = {"t0": 1, "t1": 1, "t2": 1, "t9": 1}
    c = count_against_plan(OPS, applied, INITIAL, _final(applied))
    assert c["unplanned"] == 1 and c["unplanned_ops"] == ["t9"]
    wrong = _final({"t0": 1, "t1": 1, "t2": 1})
    wrong[0] += 5  # money that no recorded operation put there
    c = count_against_plan(OPS, {"t0": 1, "t1": 1, "t2": 1}, INITIAL, wrong)
    assert not c["ledger_consistent"]
    kept, why = promise_kept(get_mode("at-most-once"), c, durable_broker=True, fired=True)
    assert kept is False and "ledger" in why


@pytest.mark.parametrize("mode, lost, duplicated, kept", [
    ("at-most-once", 1, 0, True), ("at-most-once", 0, 1, False),
    ("at-least-once", 0, 1, True), ("at-least-once", 1, 0, False),
    ("effectively-once", 0, 0, True), ("effectively-once", 0, 1, False), ("effectively-once", 1, 0, False),
])
def test_each_mode_promises_what_it_says(mode, lost, duplicated, kept):
    counts = {"lost": lost, "duplicated": duplicated, "unplanned": 0, "ledger_consistent": True}
    assert promise_kept(get_mode(mode), counts, durable_broker=True, fired=True)[0] is kept


def test_no_promise_without_a_durable_broker_and_no_pass_without_a_fault():
    counts = {"lost": 5, "duplicated": 0, "unplanned": 0, "ledger_consistent": True}
    assert promise_kept(get_mode("at-least-once"), counts, durable_broker=False, fired=True)[0] is None
    kept, why = promise_kept(get_mode("at-least-once"), {**counts, "lost": 0}, True, fired=False)
    assert kept is False and "never fired" in why
    assert exit_code([{"kept": None}, {"kept": True}]) == 0
    assert exit_code([{"kept": True}, {"kept": False}]) == 1


def test_plan_is_reproducible_and_conserves_money():
    ops, initial = plan(FaultSpec("kill-worker", "at-most-once", ops=50, seed=3))
    again, _ = plan(FaultSpec("kill-worker", "at-most-once", ops=50, seed=3))
    assert ops == again and len({op["op"] for op in ops}) == 50
    assert all(sum(d for _, d in op["deltas"]) == 0 for op in ops)  # transfers move, never make
    jobs, no_accounts = plan(FaultSpec("kill-worker", "at-most-once", workload="jobs", ops=5))
    assert [j["op"] for j in jobs] == ["j0", "j1", "j2", "j3", "j4"] and no_accounts == []


# --- every fault x mode on real workers -----------------------------------------------------

def _common(record: dict) -> None:
    """What must hold after any run: the fault fired on an operation in flight, the ledger
    explains every balance, and nothing unplanned ran."""
    c = _counts(record)
    assert record["fired"], record["verdict"]
    assert record["victims"] and record["fault_window"] is not None
    assert c["ledger_consistent"] and c["unplanned"] == 0, c
    assert c["planned"] == SMALL["ops"]


@pytest.mark.parametrize("mode", DEFAULT_MODES)
def test_kill_worker(fault_runs, mode):
    r = fault_run(fault_runs, "kill-worker", mode)
    _common(r)
    c = _counts(r)
    if mode == "at-most-once":
        # acked at start: the task the node was running dies with it, never redelivered
        assert c["lost"] >= 1 and r["victims"][0] in c["lost_ops"]
        assert c["duplicated"] == 0 and c["redeliveries"] == 0
    else:
        # acked at the end: kombu restores the victim after the visibility timeout
        assert c["lost"] == 0 and c["redeliveries"] >= 1
        assert r["recovery"]["victim_applied_s"] is not None
        assert c["duplicated"] == 0
    assert r["kept"] is True, r["verdict"]


@pytest.mark.parametrize("mode", DEFAULT_MODES)
def test_kill_child(fault_runs, mode):
    r = fault_run(fault_runs, "kill-child", mode)
    _common(r)
    c = _counts(r)
    # Only the child died: its node stayed up and took on work afterwards. (WorkerLostError
    # is not asserted: Celery logs it only once the main process has read the child's
    # "job accepted"; a kill that lands before that, on a loaded host, leaves no such line.)
    assert r["fault_info"]["node"] and len(r["fault_info"]["pids"]) == 1
    if mode == "at-most-once":
        assert r["victims"][0] in c["lost_ops"] and c["duplicated"] == 0
    else:  # task_reject_on_worker_lost: sent back, run again; never lost
        assert c["lost"] == 0 and c["redeliveries"] >= 1
        # at-least-once may also run it twice here (seen on a loaded host: the requeued
        # message and the visibility-timeout restore of the same delivery both ran);
        # effectively-once must not let the second one change anything
        if mode == "effectively-once":
            assert c["duplicated"] == 0
    assert r["kept"] is True, r["verdict"]


def test_acks_late_alone_is_not_at_least_once(fault_runs):
    """The half-measure: task_acks_late without task_reject_on_worker_lost. Celery fails
    a task whose pool child died with WorkerLostError and acknowledges it (acks_on_failure),
    so it is not retried: the promise people read into acks_late can break."""
    r = fault_run(fault_runs, "kill-child", "acks-late-only")
    _common(r)
    c = _counts(r)
    assert c["duplicated"] == 0
    assert r["kept"] is (c["lost"] == 0)
    assert r["delivery"]["celery_settings"] == {"task_acks_late": True}


@pytest.mark.parametrize("mode", DEFAULT_MODES)
def test_pause_worker(fault_runs, mode):
    r = fault_run(fault_runs, "pause-worker", mode)
    _common(r)
    c = _counts(r)
    assert c["lost"] == 0  # a paused worker wakes up and finishes: nothing is lost
    if mode == "at-most-once":
        assert c["duplicated"] == 0 and c["redeliveries"] == 0  # its hour never came
    elif mode == "at-least-once":
        # redelivered past the visibility timeout, and run again by the sleeper on waking
        assert c["duplicated"] >= 1 and c["money_created"] > 0 and c["redeliveries"] >= 1
        assert r["victims"][0] in c["duplicated_ops"]
    else:
        assert c["duplicated"] == 0 and c["duplicates_absorbed"] >= 1
    assert r["kept"] is True, r["verdict"]


@pytest.mark.parametrize("mode", DEFAULT_MODES)
def test_restart_broker_with_aof_keeps_the_queue(fault_runs, mode):
    r = fault_run(fault_runs, "restart-broker", mode, persistence="aof")
    _common(r)
    c = _counts(r)
    if mode != "at-most-once":
        assert c["lost"] == 0
    assert c["duplicated"] == 0 or mode == "at-least-once"
    assert r["kept"] is True, r["verdict"]


def test_restart_broker_without_persistence_loses_the_queue_and_promises_nothing(fault_runs):
    r = fault_run(fault_runs, "restart-broker", "at-least-once", persistence="none")
    _common(r)
    # the fault fired after the 4th of 16 started: most were still queued, and are gone
    assert _counts(r)["lost"] >= SMALL["ops"] // 2
    assert r["kept"] is None and "unsafe on purpose" in r["verdict"]


@pytest.mark.parametrize("mode", DEFAULT_MODES)
def test_drop_connections(fault_runs, mode):
    r = fault_run(fault_runs, "drop-connections", mode, workload="jobs")
    _common(r)
    assert r["fault_info"]["connections_killed"] >= 2  # at least each worker's
    assert r["kept"] is True, r["verdict"]


def test_drop_connections_does_not_depend_on_persistence(fault_runs):
    """Nothing restarts under drop-connections: a broker with no persistence keeps its
    queue, and the promise is judged (not waved off as 'kept nothing across the restart')."""
    r = fault_run(fault_runs, "drop-connections", "at-least-once", workload="jobs", persistence="none")
    _common(r)
    assert r["broker_persistence"] == "none" and r["fault_info"]["connections_killed"] >= 2
    assert _counts(r)["lost"] == 0
    assert r["kept"] is True and "restart" not in r["verdict"], r["verdict"]


# --- the command line -------------------------------------------------------------------

@pytest.mark.parametrize("args, expected", [
    (["--fault", "kill-everything"], "unknown fault 'kill-everything'; choose from: kill-worker"),
    (["--mode", "exactly-once"], "unknown mode 'exactly-once'; choose from: at-most-once"),
    (["--fault", "partition-worker"], "needs the compose lab: add --lab"),
    (["--broker-persistence", "tape"], "unknown broker persistence 'tape'; choose from: none, aof, rdb"),
    (["--fault", "drop-connections", "--broker-persistence", "none"],
     "--broker-persistence applies to faults that restart the broker (restart-broker); drop-connections "
     "leaves it running"),
    (["--workload", "bonds"], "unknown workload 'bonds'"),
    (["--ops", "10", "--at", "11"], "--at must be between 1 and --ops (10), got 11"),
    (["-n", "1"], "-n must be between 2 and 16"),
    (["--hold", "-1"], "--hold must be between 0 and 600 seconds"),
    (["--json", "/no/such/dir/f.json"], "cannot write /no/such/dir/f.json"),
])
def test_bad_input_is_one_line_and_exit_2(args, expected):
    proc = cli("faults", *args)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_writes_the_record_and_leaves_nothing_behind(cli_run):
    run, out = cli_run
    code = run.communicate(180)
    left = run.marked()
    assert code == 0, run.err[-3000:]
    assert left == [], [p.cmdline() for p in left]
    doc = json.loads(out.read_text())
    assert doc["schema"] == "taskrace.faults/1" and len(doc["runs"]) == 1
    rec = doc["runs"][0]
    assert rec["delivery"]["celery_settings"] == {"task_acks_late": True, "task_reject_on_worker_lost": True}
    assert rec["delivery"]["broker_transport_options"]["visibility_timeout"] == rec["delivery"]["visibility_timeout_s"]
    assert rec["counts"]["planned"] == 12 and rec["kept"] is True
    assert "kill-child" in run.out and "at-least-once" in run.out
    assert all(len(line) <= 80 for line in run.out.splitlines()), run.out
    assert "…" not in run.out  # no cell cut


def test_ctrl_c_mid_fault_stops_every_worker_and_server():
    require_redis_binary()
    with MarkedRun("faults", "--fault", "pause-worker", "--mode", "at-most-once", "--ops", "40",
                   "--work", "0.3", "--hold", "60", "--no-contrast", "--no-progress") as run:
        kids = run.wait_for_children(
            lambda k: sum(is_celery_worker(p) for p in k) >= 4 and sum(is_redis_server(p) for p in k) >= 2,
            120, "two worker nodes and two redis servers")
        paused = None

        def a_worker_is_paused():
            for p in run.children():
                try:
                    if is_celery_worker(p) and p.status() == "stopped":
                        return p
                except Exception:  # noqa: BLE001 - gone meanwhile
                    continue
            return None

        paused = wait_for(a_worker_is_paused, 120, "the nemesis to pause a worker")
        run.popen.send_signal(signal.SIGINT)
        code = run.communicate(60)
        assert wait_gone([p.pid for p in kids] + [paused.pid]) == []
        assert run.marked() == []
    assert code == 130, run.err[-3000:]
