"""A celery worker killed mid-run (issue 19 points 1 and 2): the run ends by itself.

Each test runs ``python -m taskrace`` as a subprocess (its tree marked, see
``celery_procs.MarkedRun``) on real ``celery worker`` processes and the tier's own embedded
Redis, waits until a task of 2 s is running on worker w1, and SIGKILLs w1's main process
or its pool child. Under at-most-once (Celery's defaults) the task it held is lost: exit 1,
the lost tasks named on one line and in the record, the run over within the bound the
record states. Under at-least-once the task comes back: exit 0, every task done, the
redelivery in the record. No wall-clock thresholds: the run must end before a generous
subprocess timeout (the old code waited 600 s), and the record's own bound, derived from
the measured work and the visibility timeout, must hold. Nothing may be left running.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import psutil
import pytest

try:
    from celery_fixtures import celery_workers, embedded_redis, require_redis_binary  # noqa: F401 (fixtures)
    from celery_procs import MARK, REPO_ROOT, MarkedRun, is_celery_worker, wait_for, wait_gone
except ImportError:  # tests/ imported as a package
    from tests.celery_fixtures import celery_workers, embedded_redis, require_redis_binary  # noqa: F401
    from tests.celery_procs import MARK, REPO_ROOT, MarkedRun, is_celery_worker, wait_for, wait_gone

RUN_S = 120  # a run with a kill in it; the old tier waited 600 s here
QUICK_S = 60
NO_URL = ("REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "TASKRACE_EXTERNAL_WORKERS")
TASKS, SLEEP = 4, 2  # 4 s of work on -n 2: long enough to kill a task mid-run, short for CI
RECEIVED = re.compile(r"Task taskrace\.(?:call|actor|part)\[([0-9a-f-]+)\] received")
ENDED = re.compile(r"Task taskrace\.(?:call|actor|part)\[([0-9a-f-]+)\] (?:succeeded|failed|raised)")


@pytest.fixture(autouse=True)
def _redis_binary():
    require_redis_binary()  # skip locally without redis-server; fail in CI


def _main_worker(run: MarkedRun, tag: str = "w1") -> psutil.Process:
    """The main process of the run's worker ``taskrace-<runid>-<tag>@host``."""
    def find(kids):
        return [p for p in kids if is_celery_worker(p) and f"-{tag}@" in " ".join(p.cmdline())
                and p.ppid() == run.pid]
    return find(run.wait_for_children(lambda kids: find(kids), QUICK_S, f"worker {tag}"))[0]


def _log_of(worker: psutil.Process) -> str:
    return wait_for(lambda: next((f.path for f in worker.open_files() if f.path.endswith(".log")), None),
                    QUICK_S, "the worker's log file")


def _wait_for_a_long_task(log: str, run: MarkedRun) -> None:
    """Until a task the worker received is still unfinished 0.3 s later: one of the 2 s
    tasks is running there (a quick task would have ended)."""
    first_seen: dict[str, float] = {}

    def long_one():
        if run.popen.poll() is not None:
            pytest.fail(f"taskrace ended before a task ran on the worker: {run.popen.communicate()[1][-2000:]}")
        text = open(log, errors="replace").read()
        open_ids = set(RECEIVED.findall(text)) - set(ENDED.findall(text))
        now = time.monotonic()
        for tid in open_ids:
            first_seen.setdefault(tid, now)
        return any(now - first_seen[t] >= 0.3 for t in open_ids)
    wait_for(long_one, QUICK_S, "a 2 s task running on the worker", interval=0.05)


def _kill(run: MarkedRun, target: str) -> int:
    """SIGKILL worker w1's main process, or its pool child, while it runs a task."""
    main = _main_worker(run)
    _wait_for_a_long_task(_log_of(main), run)
    victim = main if target == "main" else main.children()[0]
    os.kill(victim.pid, signal.SIGKILL)
    return victim.pid


def _no_orphans(run: MarkedRun) -> None:
    assert wait_gone(list(run.seen)) == [], "processes of the run still alive"
    deadline = time.monotonic() + 10
    while (left := run.marked()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == [], f"left running: {[p.cmdline() for p in left]}"


def _run_with_a_kill(tmp_path, mode: str, target: str) -> tuple[MarkedRun, dict, int]:
    out = tmp_path / "run.json"
    with MarkedRun("run", "power-io", "-b", "celery", "-n", "2", "--tasks", str(TASKS), "--sleep", str(SLEEP),
                   "--delivery", mode, "--json", str(out), drop_env=NO_URL) as run:
        victim = _kill(run, target)
        code = run.communicate(RUN_S)  # fails the test on a hang
        run.children()
    _no_orphans(run)
    assert code in (0, 1), run.err[-3000:]
    assert "Traceback" not in run.err, run.err[-3000:]
    record = json.loads(out.read_text())["runs"][0]
    return run, record, victim


def _incident(record: dict) -> dict:
    incidents = record["tier"]["dead_workers"]
    assert len(incidents) == 1, incidents
    return incidents[0]


def _bound_held(incident: dict) -> None:
    """The record's stated bound (from the work and the visibility timeout) held: the
    run ended no later than that after the death was noticed."""
    assert incident["bound_s"] > 0 and incident["within_bound"] is True, incident
    assert incident["ended_after_notice_s"] / incident["bound_s"] <= 1.0, incident


@pytest.mark.parametrize("target", ["main", "child"])
def test_at_most_once_a_killed_worker_loses_its_tasks_named_exit_1(tmp_path, target):
    run, record, victim = _run_with_a_kill(tmp_path, "at-most-once", target)
    assert run.popen.returncode == 1, run.out + run.err
    incident = _incident(record)
    lost = incident["lost"]
    assert lost and set(lost) <= set(range(TASKS)), incident
    assert incident["would_have_saved"] == "at-least-once"
    if target == "main":
        assert [d["pid"] for d in incident["died"]] == [victim], incident
        assert "SIGKILL" in incident["died"][0]["how"] and "-w1@" in incident["died"][0]["node"]
        assert incident["replaced_by"], incident  # the next run has -n workers again
        _bound_held(incident)
    else:  # the main process replaced its child and failed the task with WorkerLostError
        assert incident["died"] == [] and set(incident["lost_how"].values()) == {"pool child killed"}
        _bound_held(incident)
    # the checker failed the point on exactly the lost tasks, the others arrived
    verdict = record["verdict"]
    assert verdict["ok"] is False
    failed = sorted(int(e.split(":")[0].split()[1]) for e in verdict["details"]["errors"])
    assert failed == sorted(lost), verdict["details"]["errors"]
    assert verdict["actual"].startswith(f"{TASKS - len(lost)} results"), verdict
    # one line names every lost task and the mode that would have saved them
    names = ", ".join(map(str, sorted(lost)))
    line = next((ln for ln in run.out.splitlines() if "tasks lost" in ln or "task lost" in ln), "")
    joined = " ".join(run.out.split())  # the table wraps long lines
    assert f"lost (task{'s' if len(lost) > 1 else ''} {names}) under --delivery at-most-once" in joined, run.out
    assert "--delivery at-least-once would have" in joined and line, run.out
    assert record["tier"]["delivery"]["mode"] == "at-most-once"
    # and on stderr, one line for the point: who lost what, and what would have kept it
    said = [ln for ln in run.err.splitlines() if "a worker died" in ln]
    assert said == [f"taskrace: power-io on celery -n 2: a worker died: {incident['verdict']} under "
                    "--delivery at-most-once; --delivery at-least-once would have kept them"], run.err


@pytest.mark.parametrize("mode,target", [("at-least-once", "main"), ("effectively-once", "child")])
def test_at_least_once_the_task_comes_back_exit_0(tmp_path, mode, target):
    run, record, victim = _run_with_a_kill(tmp_path, mode, target)
    assert run.popen.returncode == 0, run.out + run.err
    assert record["verdict"]["ok"] is True and not record["verdict"]["details"].get("errors"), record["verdict"]
    assert record["verdict"]["actual"].startswith(f"{TASKS} results"), record["verdict"]
    incident = _incident(record)
    assert incident["lost"] == [] and incident["redelivered"], incident  # it ran again
    delivery = record["tier"]["delivery"]
    assert delivery["mode"] == mode and delivery["celery_settings"]["task_acks_late"] is True
    assert delivery["celery_settings"]["task_reject_on_worker_lost"] is True
    if target == "main":
        assert [d["pid"] for d in incident["died"]] == [victim], incident
        # it came back only after kombu's visibility timeout, and within the stated bound
        assert incident["ended_after_notice_s"] >= delivery["visibility_timeout_s"] / 2, incident
        _bound_held(incident)


def test_compare_goes_on_after_the_failed_point(tmp_path):
    """Two celery points (sleeps of 1 and 1.1 s, kept short: compare runs the sequential
    baseline too): the kill lands in whichever runs first, that point fails with its lost
    tasks named, the other still runs after it and passes; exit 1 at the end."""
    tasks, sleep = 4, 1
    out, events = tmp_path / "compare.json", tmp_path / "events.jsonl"
    with MarkedRun("compare", "--scenario", "power-io", "-b", "celery", "-n", "2", "--set",
                   f"power-io.tasks={tasks}", "--sweep", f"power-io.sleep={sleep},{sleep + 0.1}",
                   "--repeat", "1", "--warmup", "0", "--no-progress", "--json", str(out),
                   "--events", str(events), drop_env=NO_URL) as run:
        _kill(run, "main")
        code = run.communicate(RUN_S)
        run.children()
    _no_orphans(run)
    assert code == 1, run.out + run.err
    assert "Traceback" not in run.err, run.err[-3000:]
    records = [r for r in json.loads(out.read_text())["runs"] if r["backend"] == "celery"]
    assert len(records) == 2
    failed = [r for r in records if not r["verdict"]["ok"]]
    passed = [r for r in records if r["verdict"]["ok"]]
    assert len(failed) == 1 and len(passed) == 1, [r["verdict"] for r in records]
    errors = failed[0]["verdict"]["details"]["errors"]
    assert errors and all(e.split(": ", 1)[1].startswith("lost") for e in errors), errors
    assert passed[0]["verdict"]["actual"].startswith(f"{tasks} results")
    # the celery samples in the order they ran: the failed one first, the other after it
    stream = [json.loads(line) for line in events.read_text().splitlines()]
    celery_points = {e["point"] for e in stream if e["kind"] == "point.start" and e["backend"] == "celery"}
    oks = [e["ok"] for e in stream if e["kind"] == "sample.end" and e["point"] in celery_points]
    assert oks == [False, True], oks


def test_actors_stuck_on_a_lost_peer_are_abandoned_not_waited_for(tmp_path):
    """pipeline -n 1: a producer and a consumer, one on w1, one on a worker added for
    actors. w1 killed: its actor is lost, and the other one waits on it (an empty or a
    full channel) with the shared state unchanged: abandoned, its worker replaced. The
    run ends on its own, both named lost, within the record's bound."""
    out = tmp_path / "run.json"
    with MarkedRun("run", "pipeline", "-b", "celery", "-n", "1", "--items", "40", "--work", "0.3",
                   "--json", str(out), drop_env=NO_URL) as run:
        _kill(run, "main")
        code = run.communicate(RUN_S)
        run.children()
    _no_orphans(run)
    assert code == 1, run.out + run.err
    assert "Traceback" not in run.err, run.err[-3000:]
    incident = _incident(json.loads(out.read_text())["runs"][0])
    assert incident["kind"] == "actors" and incident["lost"] == [0, 1], incident
    assert sorted(incident["lost_how"].values()) == ["abandoned", "parked"], incident
    assert incident["stuck_for_s"] is not None and len(incident["replaced_by"]) == 2, incident
    _bound_held(incident)


def test_an_external_worker_that_stops_answering_pings_is_taken_for_dead(embedded_redis, celery_workers, tmp_path):
    """Workers someone else runs (here: this test, on the shared queue): no process
    handle, so the tier pings them once results stall. w1 killed mid-task: the survivor
    finishes the rest, then w1 misses its pings, and its task is named lost."""
    w1, _ = celery_workers(2, queues="taskrace")
    with MarkedRun("run", "power-io", "-b", "celery", "-n", "2", "--tasks", "4", "--sleep", "1",
                   "--external-workers", "--redis-url", embedded_redis.url, "--json", str(tmp_path / "r.json"),
                   drop_env=NO_URL) as run:
        _wait_for_a_long_task(str(w1.log_path), run)
        os.kill(w1.pid, signal.SIGKILL)
        code = run.communicate(RUN_S)
    assert code == 1, run.out + run.err
    assert "Traceback" not in run.err, run.err[-3000:]
    incident = _incident(json.loads((tmp_path / "r.json").read_text())["runs"][0])
    assert [d["node"].split("@")[0] for d in incident["died"]] == ["w1"], incident
    assert "pings" in incident["died"][0]["how"] and incident["replaced_by"] == [], incident
    assert incident["lost"] and incident["would_have_saved"] == "at-least-once", incident
    _bound_held(incident)


def test_external_workers_in_another_delivery_mode_are_refused(embedded_redis, celery_workers):
    """Late acks and the visibility timeout act in the worker: a harness promising
    at-least-once (here from $TASKRACE_DELIVERY, the default of --delivery, as the compose lab
    sets it) to workers started with Celery's defaults would misjudge every loss. One line,
    exit 2, naming the workers and their mode, before any task is sent."""
    celery_workers(2, queues="taskrace")
    with MarkedRun("run", "power-io", "-b", "celery", "-n", "2", "--tasks", "2", "--sleep", "0",
                   "--external-workers", "--redis-url", embedded_redis.url, drop_env=NO_URL,
                   env={"TASKRACE_DELIVERY": "at-least-once"}) as run:
        assert run.communicate(QUICK_S) == 2, run.out + run.err
    lines = run.stderr_lines()
    assert len(lines) == 1 and "Traceback" not in run.err, run.err
    assert "--delivery at-least-once" in lines[0] and "run at-most-once" in lines[0], lines
    assert "w1@" in lines[0] and "w2@" in lines[0] and "TASKRACE_DELIVERY=at-least-once" in lines[0], lines


def test_bad_delivery_input_is_one_line_exit_2():
    for args in (["--delivery", "sometimes"], ["--acks-late", "--delivery", "at-most-once"]):
        with MarkedRun("run", "power-io", "-b", "celery", "--tasks", "1", "--sleep", "0", *args,
                       drop_env=NO_URL) as run:
            assert run.communicate(QUICK_S) == 2, run.err
        lines = run.stderr_lines()
        assert len(lines) == 1 and "--delivery" in lines[0] and "Traceback" not in run.err, run.err


def test_effectively_once_refuses_actors_with_effects(tmp_path):
    """The bank's actors change balances with no idempotency key: refused in one line."""
    with MarkedRun("run", "bank", "-b", "celery", "-n", "2", "--delivery", "effectively-once",
                   drop_env=NO_URL) as run:
        assert run.communicate(QUICK_S) == 2, run.out + run.err
        run.children()
    lines = run.stderr_lines()
    assert len(lines) == 1 and "effectively-once" in lines[0] and "idempotency" in lines[0], run.err
    _no_orphans(run)


# mapreduce's map tasks only compute (a few ms): the harness below sends 2 s ones instead, a
# real task function the workers import by name (power's, with its sleep and checksum; the
# checksums of 4 one-number chunks add up to mapreduce's answer), as test_chord.py does.
SLOW_MAP = f"""
import sys
import scenarios.mapreduce as m
from scenarios.power import calculate_raise_to
chunks = m.MapReduce.chunks
m.MapReduce.map_task = staticmethod(calculate_raise_to)
m.MapReduce.chunks = lambda self: [(c, y, {SLEEP}, True) for c, y in chunks(self)]
from taskrace.cli import main
sys.exit(main(sys.argv[1:]))
"""


class _SlowMapRun(MarkedRun):
    """A MarkedRun of taskrace's CLI behind SLOW_MAP (``python -c``), marked the same way."""

    def __init__(self, *args: str, drop_env: tuple = ()) -> None:
        self.mark, self.args = uuid.uuid4().hex, args
        env = {k: v for k, v in os.environ.items() if k not in drop_env}
        env.update(COLUMNS="200", PYTHONUNBUFFERED="1", **{MARK: self.mark})
        self.popen = subprocess.Popen([sys.executable, "-c", SLOW_MAP, *args], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=env)
        self.seen, self.out, self.err = {}, "", ""


def test_a_chord_ends_on_a_dead_worker_with_its_lost_map_tasks_named(tmp_path):
    """mapreduce --reduce chord, 4 map tasks of 2 s on -n 2: w1's main process killed while
    a map task runs there. The chord's wait is the group's watch: the lost map tasks are
    named (exit 1), the body never ran, the run ends within the record's bound instead of
    the 600 s task timeout; nothing left running."""
    out = tmp_path / "chord.json"
    with _SlowMapRun("run", "mapreduce", "-b", "celery", "-n", "2", "--reduce", "chord", "--size", str(TASKS),
                     "--chunksize", "1", "--delivery", "at-most-once", "--json", str(out), drop_env=NO_URL) as run:
        victim = _kill(run, "main")
        code = run.communicate(RUN_S)
        run.children()
    _no_orphans(run)
    assert code == 1, run.out + run.err
    assert "Traceback" not in run.err, run.err[-3000:]
    record = json.loads(out.read_text())["runs"][0]
    incident = _incident(record)
    assert [d["pid"] for d in incident["died"]] == [victim] and "SIGKILL" in incident["died"][0]["how"], incident
    lost = incident["lost"]
    assert lost and set(lost) <= set(range(TASKS)), incident  # map tasks; the body (task 4) was never sent
    assert incident["would_have_saved"] == "at-least-once" and "chord" in incident["what"], incident
    _bound_held(incident)
    assert record["chord"]["ran"] is False and record["verdict"]["ok"] is False
    failed = sorted(int(e.split(":")[0].split()[1]) for e in record["verdict"]["details"]["errors"])
    assert failed == sorted(lost), record["verdict"]["details"]["errors"]
    names = ", ".join(map(str, sorted(lost)))
    joined = " ".join(run.out.split())
    assert f"lost (task{'s' if len(lost) > 1 else ''} {names}) under --delivery at-most-once" in joined, run.out
