"""The event stream on every local tier: each planned task is queued, started and finished
once, in that order, by the workers the record names; points and steps frame them.

Real runs through the harness (no tier is mocked). The celery tier's events come from
Celery's own event receiver and are tested with real workers in test_celery_events.py.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

import pytest

from conftest import LOCAL_TIERS, REPO_ROOT, cli, run
from taskrace import eventlog, events


def check_tasks(evs: list, planned: int, record: dict) -> None:
    """Per task: one queued, one started, one finished, queued <= started <= finished, and
    every worker named as the record's nodes name it."""
    by_kind = {k: [e for e in evs if e.kind == k] for k in ("task.queued", "task.started", "task.finished")}
    for kind, found in by_kind.items():
        counts = Counter(e["index"] for e in found)
        assert sorted(counts) == list(range(planned)), (kind, counts)
        assert set(counts.values()) == {1}, (kind, counts)
    queued = {e["index"]: e["queued"] for e in by_kind["task.queued"]}
    started = {e["index"]: e["started"] for e in by_kind["task.started"]}
    for e in by_kind["task.finished"]:
        i = e["index"]
        assert queued[i] <= started[i] <= e["finished"], e.to_dict()
        assert e["started"] == started[i]
        assert e["ok"] is True
    workers = {e["worker"] for e in by_kind["task.finished"]}
    assert workers == set(record["nodes"]), (workers, record["nodes"])


@pytest.mark.parametrize("tier", LOCAL_TIERS)
def test_every_task_is_queued_started_and_finished_once_in_order(tier):
    with events.Recorder() as rec:
        record = run("power-io", tier, workers=2, tasks=4, sleep=0.05)
    check_tasks(rec.events, 4, record)
    kinds = [e.kind for e in rec.events]
    assert kinds[0] == "point.start" and kinds[-1] == "point.end"
    assert rec.events[-1]["record"] is record
    assert {e["point"] for e in rec.events if e.kind.startswith("task.")} == {0}


@pytest.mark.parametrize("tier", LOCAL_TIERS)
def test_actors_are_told_as_tasks_too(tier):
    """run_actors (the pipeline's producer and consumers) reports through the same events."""
    with events.Recorder() as rec:
        record = run("pipeline", tier, workers=2, items=20)
    actors = record["task_timing"]["count"]
    assert actors >= 2  # a producer and at least one consumer
    check_tasks(rec.events, actors, record)


def test_threads_tell_a_start_while_the_task_runs():
    """In-process tiers emit task.started as it happens: before the first task finishes,
    both threads' starts are already out (two 0.3 s waits overlapping)."""
    with events.Recorder() as rec:
        run("power-io", "threads", workers=2, tasks=2, sleep=0.3)
    order = [e.kind for e in rec.events if e.kind in ("task.started", "task.finished")]
    assert order[:2] == ["task.started", "task.started"], order


def test_a_progress_subscriber_gets_no_task_events_and_tiers_build_none():
    heard = []
    with events.subscribe(heard.append, tasks=False):
        assert events.active() and not events.wants_tasks()
        run("power-io", "threads", workers=2, tasks=2, sleep=0.01)
    assert heard and not [e for e in heard if e.kind.startswith("task.")]
    assert not events.active()


def test_nobody_listening_means_nothing_is_kept():
    assert not events.active()
    events.emit("status", text="unheard")  # nothing to call, no error


def test_a_broken_subscriber_does_not_break_the_run():
    def broken(event):
        raise RuntimeError("subscriber bug")

    with events.subscribe(broken):
        record = run("power-io", "sequential", tasks=2, sleep=0.0)
    assert record["verdict"]["ok"]


def test_a_forked_child_does_not_write_to_the_parents_subscribers(tmp_path):
    """A pool child forked while a log is open inherits the subscriber: it must stay silent."""
    log = tmp_path / "ev.jsonl"
    with eventlog.JsonLinesLog(str(log)):
        record = run("power-io", "processes", workers=2, tier_options={"start_method": "fork"}, tasks=3, sleep=0.0)
    evs = eventlog.read_log(str(log))
    check_tasks(evs, 3, record)  # one of each: no child wrote a second copy
    assert {e["worker"].split("/")[0] for e in evs if e.kind == "task.finished"} != {str(os.getpid())}


def test_events_file_of_a_compare_replays_its_points_and_steps(tmp_path):
    """--events FILE: one JSON object a line; the points' records in it equal the --json file's."""
    log, out = tmp_path / "ev.jsonl", tmp_path / "r.json"
    proc = cli("compare", "--scenario", "power-io", "-b", "threads", "-n", "1,2", "--repeat", "2", "--warmup", "1",
               "--set", "power-io.sleep=0.02", "--no-progress", "--events", str(log), "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    evs = eventlog.read_log(str(log))
    kinds = Counter(e.kind for e in evs)
    points = json.loads(out.read_text())["runs"]
    assert kinds["point.start"] == kinds["point.end"] == len(points) == 3
    assert kinds["sample.end"] == kinds["step"] == 3 * (2 + 1)
    steps = [e for e in evs if e.kind == "step"]
    assert [e["done"] for e in steps] == list(range(1, 10)) and {e["total"] for e in steps} == {9}
    assert evs[0].kind == "run.start" and evs[-1].kind == "run.end" and evs[-1]["exit_code"] == 0
    ended = {(e["record"]["backend"], e["record"]["workers"]): e["record"]["wall_s"] for e in evs
             if e.kind == "point.end"}
    assert ended == {(r["backend"], r["workers"]): r["wall_s"] for r in points}
    # every measured and warm-up run's tasks: 2 tasks each, 9 runs
    assert kinds["task.finished"] == 9 * 2
    assert all(e.t >= evs[0].t for e in evs)


def test_events_file_that_cannot_be_written_is_one_line_and_exit_2(tmp_path):
    proc = cli("run", "power-io", "--events", str(tmp_path / "missing" / "ev.jsonl"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "cannot write" in proc.stderr


def test_a_log_that_is_not_events_is_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{\"kind\": \"x\", \"t\": 1}\nnot json\n")
    with pytest.raises(eventlog.BadEventLog, match=r"bad.jsonl:2 is not a taskrace event"):
        eventlog.read_log(str(bad))


def test_events_carry_no_secret(tmp_path):
    """The records' redaction applies to the log: a password in a URL never reaches it."""
    log = tmp_path / "ev.jsonl"
    with eventlog.JsonLinesLog(str(log)):
        events.emit("status", text="broker redis://:s3cret-pw@127.0.0.1:6379/0")
    text = log.read_text()
    assert "s3cret-pw" not in text and "127.0.0.1:6379" in text


def test_importing_the_event_stream_does_not_import_the_library_face():
    """Celery workers import workers.base, hence taskrace.events: they must not pay for
    the API (rich, the parser, the reports)."""
    code = ("import sys, workers.base; import taskrace.events; "
            "print(sorted(m for m in sys.modules if m.startswith('taskrace')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['taskrace', 'taskrace.events', 'taskrace.version']"


# celery: the task events come from the workers, through Celery's own events -----------------
RUN_TIMEOUT = 300
try:
    from celery_fixtures import require_redis_binary
except ImportError:  # tests/ imported as a package
    from tests.celery_fixtures import require_redis_binary


CELERY_CASES = [  # (scenario, params, tier options, planned tasks)
    ("power-io", {"tasks": 4, "sleep": 0.05}, {}, 4),
    ("power-io", {"tasks": 5, "sleep": 0.0}, {"chunk": 2}, 5),    # celery chunks: 2 calls a message
    ("mapreduce", {"size": 4000, "chunksize": 1000}, {}, 4),     # one message per chunk
    ("pipeline", {"items": 10, "capacity": 2}, {}, None),        # actors on celery workers
]
QUIET = ("power-io", {"tasks": 2, "sleep": 0.0}, {})  # on one worker, heard without task events


def _heard(tasks: bool, workers: int, scenario: str, params: dict, options: dict) -> tuple:
    """One celery run (its own Redis and workers) with a subscriber (``tasks``: to task events
    too) from before it starts: (the record, every event the subscriber got). In a process
    of the pool below."""
    heard: list = []
    with events.subscribe(heard.append, tasks=tasks):
        record = run(scenario, "celery", workers=workers, tier_options=options, **params)
    return record, heard


@pytest.fixture(scope="module")
def celery_runs():
    """The celery runs of the tests below, side by side (each its own Redis, workers and
    event stream), in spawned processes; each test reads its own. Waited for at the end."""
    require_redis_binary()
    with ProcessPoolExecutor(len(CELERY_CASES) + 1, mp_context=multiprocessing.get_context("spawn")) as pool:
        runs = {repr(case[:3]): pool.submit(_heard, True, 2, *case[:3]) for case in CELERY_CASES}
        runs["quiet"] = pool.submit(_heard, False, 1, *QUIET)
        yield runs


@pytest.mark.parametrize("scenario, params, options, planned", CELERY_CASES)
def test_celery_tasks_are_told_by_the_workers(celery_runs, scenario, params, options, planned):
    """Every task's three events come from Celery's events of the tier's own workers,
    named as the record's nodes; and Celery's events are on only because we listen."""
    record, heard = celery_runs[repr((scenario, params, options))].result(timeout=RUN_TIMEOUT)
    assert record["verdict"]["ok"], record["verdict"]
    planned = planned if planned is not None else record["task_timing"]["count"]
    check_tasks(heard, planned, record)
    finished = [e for e in heard if e.kind == "task.finished"]
    assert all(e["task_id"] for e in finished)  # Celery's own task ids: told by the workers
    assert all(w.startswith("taskrace-") and "@" in w for w in {e["worker"] for e in finished})


def test_celery_without_a_task_listener_sends_no_task_events(celery_runs):
    """A progress bar listens without task events: the workers start without -E."""
    record, heard = celery_runs["quiet"].result(timeout=RUN_TIMEOUT)
    assert record["verdict"]["ok"]
    assert not [e for e in heard if e.kind.startswith("task.")]
    assert [e.kind for e in heard][:1] == ["point.start"]


def test_json_holds_every_finished_point_when_a_compare_is_cut_short(tmp_path):
    """--json is the stream's subscriber: written as each point ends, so Ctrl-C in the
    middle of a compare leaves the points it finished, in a file taskrace report reads."""
    import signal
    import time

    from taskrace.reporting.results import load_json

    out = tmp_path / "r.json"
    env = dict(os.environ, COLUMNS="200")
    proc = subprocess.Popen([sys.executable, "-m", "taskrace", "compare", "--scenario", "power-io", "-b", "threads",
                             "-n", "1,2", "--set", "power-io.sleep=0.3", "--repeat", "3", "--warmup", "1",
                             "--no-progress", "--json", str(out)], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the compare ended before its first point was written"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    runs = load_json(str(out))["runs"]
    assert 1 <= len(runs) < 3  # three points planned: sequential, threads -n 1, -n 2
    assert all(r["verdict"]["ok"] and len(r["repeats"]) == 3 for r in runs)


@pytest.mark.parametrize("tier", ["threads", "processes"])
def test_the_bank_tells_its_money_after_each_trial(tier):
    """money.sample: the total after each trial against the plan's; their difference is
    the checker's drift, trial by trial (the unsafe strategy's money made or lost)."""
    with events.Recorder(tasks=False) as rec:
        record = run("bank", tier, workers=2, trials=3, steps=30, strategy="none")
    samples = [e for e in rec.events if e.kind == "money.sample"]
    assert [e["trial"] for e in samples] == [0, 1, 2]
    drift = [e["total"] - e["expected"] for e in samples]
    assert drift == record["verdict"]["details"]["drift_per_trial"]
