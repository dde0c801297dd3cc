"""mapreduce --reduce chord (issue 19 point 3): a real Celery chord on real workers and
an embedded Redis, against sequential's answer; its cost in the record; a failing map
task ends the run with one line; tiers that cannot reduce remotely refuse it in one line.

No mocks: the runs below start ``celery worker`` processes and a redis-server. The
failing map task is ``scenarios.mapreduce.sum_of_powers_failing_at_zero``, a real task
function the workers import by name; the test's own harness process chooses it
(``MapReduce.map_task``), as no option of the scenario may.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

try:
    from celery_fixtures import require_redis_binary
    from conftest import REPO_ROOT, cli, run, stderr_lines
except ImportError:  # tests/ imported as a package
    from tests.celery_fixtures import require_redis_binary
    from tests.conftest import REPO_ROOT, cli, run, stderr_lines

from taskrace.measuring import sweep

PARAMS = {"size": 40_000, "chunksize": 4_000}  # 10 map tasks
ARGS = ["--size", "40000", "--chunksize", "4000"]


def test_chord_equals_sequential_and_its_cost_is_in_the_record(tmp_path):
    require_redis_binary()
    out = tmp_path / "chord.json"
    proc = cli("run", "mapreduce", "-b", "celery", "-n", "2", "--reduce", "chord", *ARGS, "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads(out.read_text())["runs"][0]
    oracle = run("mapreduce", "sequential", 1, **PARAMS)
    assert record["verdict"]["ok"] and record["answer_digest"] == oracle["answer_digest"]
    assert record["params"]["reduce"] == "chord" and oracle["params"]["reduce"] == "harness"
    c = record["chord"]
    assert c["ran"] and c["map_tasks"] == 10 and c["reduce_worker"] in record["nodes"]
    assert c["reduce_wait_s"] >= 0  # last map task finished -> the reduce started
    ref = c["reference"]
    assert ref["agrees"] and ref["commands_per_map_task"] > 0
    assert c["extra_commands_per_map_task"] > 0  # the chord's join: a script per map task and more
    assert c["commands"].get("evalsha", 0) >= c["map_tasks"]  # the backend's chord script, per part
    assert c["carried_bytes"] > 0 and c["extra_net_bytes_per_result_byte"] is not None
    assert sum(record["nodes"].values()) == 11  # 10 map tasks and the reduce, on the workers
    lines = [line for line in proc.stdout.splitlines() if line.startswith("chord: ")]
    assert len(lines) == 1 and "Redis commands per map task" in lines[0], proc.stdout


FAIL = """
import sys
import scenarios.mapreduce as m
m.MapReduce.map_task = staticmethod(m.sum_of_powers_failing_at_zero)
from taskrace.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_failing_map_task_ends_the_run_with_one_line():
    require_redis_binary()
    env = dict(os.environ, COLUMNS="200", PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-c", FAIL, "run", "mapreduce", "-b", "celery", "-n", "2",
                           "--reduce", "chord", *ARGS], capture_output=True, text=True, timeout=120,
                          cwd=REPO_ROOT, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "ChordError" in line]
    assert len(lines) == 1, proc.stdout
    assert "map task 0 failed (ValueError: the chunk holding 0 fails" in lines[0]
    assert "the reduce callback never ran" in lines[0]
    assert not any(line.startswith("chord: ") for line in proc.stdout.splitlines())


@pytest.mark.parametrize("backend", ["threads", "sequential"])
def test_chord_on_a_tier_without_remote_reduce_is_one_line(backend):
    proc = cli("run", "mapreduce", "-b", backend, "--reduce", "chord")
    assert proc.returncode == 2
    assert stderr_lines(proc) == [f"taskrace: error: --reduce chord needs a backend that runs a reduce "
                                  f"callback where its map tasks run (a chord); {backend!r} cannot: use "
                                  f"--reduce harness"]


def test_compare_sweeps_reduce_with_the_harness_as_the_oracle():
    """--reduce harness,chord: chord only where a tier reduces remotely, one sequential
    baseline (at harness), and the chord series is read against it."""
    points = sweep.expand(["mapreduce"], ["threads", "celery"], [2], lambda name: [None],
                          lambda name: {}, lambda name: [{"reduce": "harness"}, {"reduce": "chord"}])
    got = [(p.backend, p.params["reduce"]) for p in points]
    assert got == [("sequential", "harness"), ("threads", "harness"), ("celery", "harness"), ("celery", "chord")]
    only = sweep.expand(["mapreduce"], ["celery"], [2], lambda name: [None], lambda name: {},
                        lambda name: [{"reduce": "chord"}])
    assert [(p.backend, p.params["reduce"]) for p in only] == [("sequential", "harness"), ("celery", "chord")]
    with pytest.raises(Exception, match="--reduce chord needs"):
        sweep.validate(sweep.expand(["mapreduce"], ["threads"], [2], lambda name: [None], lambda name: {},
                                    lambda name: [{"reduce": "chord"}]), {}, 0)
    p = {"size": 10, "chunksize": 5, "exponent": 20}
    base = {"scenario": "mapreduce", "backend": "sequential", "workers": 1, "wall_s": 1.0, "answer_digest": "a",
            "params": dict(p, reduce="harness"), "repeats": [{"answer_digest": "a"}],
            "verdict": {"unsafe": False}}
    chord = dict(base, backend="celery", workers=2, wall_s=0.5, params=dict(p, reduce="chord"))
    sweep.derive([base, chord])
    assert chord["speedup"] == 2.0 and chord["agrees_with_sequential"] is True
