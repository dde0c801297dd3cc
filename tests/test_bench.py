"""``taskrace bench``: it runs end to end and its JSON is complete and self-consistent.

No wall-clock thresholds here (the machines are noisy): the goals are the bench's to
print, not the tests' to enforce. What is checked is that every section is present,
every timing is a positive number, and every ratio is the one its own numbers give.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, stderr_lines
from celery_fixtures import require_redis_binary

BENCH_TIMEOUT = 300  # --quick takes seconds; generous for a loaded CI box


def bench(*args: str, env: dict | None = None, timeout: float = BENCH_TIMEOUT) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, COLUMNS="200", PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "taskrace", "bench", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO_ROOT, env=full_env)


def positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def close(a: float, b: float, rel: float = 2e-3) -> bool:
    """Equal up to the rounding of the stored figures (their errors are below 1e-4 of the
    value here). No absolute slack: per-task times are ~1e-3 s or less, and a tolerance of
    1e-3 s would call any two of them equal."""
    return math.isclose(a, b, rel_tol=rel)


def assert_spread(s: dict, repeat: int) -> None:
    assert set(s) >= {"median", "min", "max", "samples"}
    assert len(s["samples"]) == repeat
    assert all(positive(v) for v in s["samples"]), s
    assert positive(s["median"]) and s["min"] <= s["median"] <= s["max"]


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory):
    require_redis_binary()
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    env = {"REDIS_URL": ""}  # the embedded Redis, whatever the caller's shell says
    proc = bench("--quick", "--json", str(out), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def test_quick_bench_prints_every_section(quick_result):
    proc, _ = quick_result
    for title in ("1. power-cpu", "2. harness tax", "3. celery", "raw Redis round trip",
                  "chunked / unchunked rate"):
        assert title in proc.stdout, title
    assert "Traceback" not in proc.stdout + proc.stderr


def test_speedup_section_is_consistent(quick_result):
    _, r = quick_result
    repeat = r["settings"]["repeat"]
    assert r["schema"] == "taskrace.bench/1" and repeat == 1 and r["settings"]["quick"] is True
    sp = r["speedup"]
    assert_spread(sp["sequential_s"], repeat)
    assert_spread(sp["processes_s"], repeat)
    assert positive(sp["ratio"])
    assert close(sp["ratio"], sp["sequential_s"]["median"] / sp["processes_s"]["median"])
    assert sp["met"] is (sp["ratio"] >= sp["goal_min"])
    assert sp["goal_min"] == 1.9
    # The same ratio for the hand-written code, from section 2's baselines.
    tax = r["local_tax"]
    assert close(sp["stdlib_ratio"], tax["sequential"]["baseline_s"]["median"] / tax["processes"]["baseline_s"]["median"])
    if sp["processes_cpu_percent"] is not None:
        assert_spread(sp["processes_cpu_percent"], repeat)
    # The machine's own ceiling, measured before and after, shown beside the ratio.
    cap = r["cpu_capacity"]
    assert set(cap) == {"before", "after"}
    assert all(c["cpus"] == sp["workers"] and positive(c["capacity"]) for c in cap.values())


def test_local_tax_section_is_consistent(quick_result):
    _, r = quick_result
    repeat = r["settings"]["repeat"]
    tax = r["local_tax"]
    assert set(tax) == {"sequential", "threads", "processes"}
    for backend, e in tax.items():
        assert_spread(e["harness_s"], repeat)
        assert_spread(e["baseline_s"], repeat)
        assert isinstance(e["tax"], float) and e["tax"] > -1
        assert close(e["tax"] + 1, e["harness_s"]["median"] / e["baseline_s"]["median"]), backend
        assert e["met"] is (e["tax"] <= e["goal_max"]) and e["goal_max"] == 0.05
    # The harness runs of section 1 are the ones section 2 compares: the same numbers.
    assert tax["sequential"]["harness_s"] == r["speedup"]["sequential_s"]
    assert tax["processes"]["harness_s"] == r["speedup"]["processes_s"]


def test_celery_section_is_consistent(quick_result):
    _, r = quick_result
    repeat = r["settings"]["repeat"]
    c = r["celery"]
    n = c["tasks"]
    assert positive(n) and c["workers"] == 2 and c["chunk"] > 1
    assert set(c["workloads"]) == {"noop", "tiny", "tiny_chunked"}
    for name, e in c["workloads"].items():
        n = e["tasks"]  # the chunked workload runs more calls than the others
        assert positive(n)
        assert_spread(e["harness_s"], repeat)
        assert_spread(e["plain_s"], repeat)
        for key in ("harness_rate_per_s", "plain_rate_per_s", "harness_per_task_s", "plain_per_task_s"):
            assert positive(e[key]), (name, key)
        assert close(e["harness_rate_per_s"], n / e["harness_s"]["median"]), name
        assert close(e["plain_rate_per_s"], n / e["plain_s"]["median"]), name
        assert close(e["harness_per_task_s"], e["harness_s"]["median"] / n), name
        assert close(e["tax"] + 1, e["harness_s"]["median"] / e["plain_s"]["median"]), name
        assert e["met"] is (e["tax"] <= e["goal_max"]) and e["goal_max"] == 0.2
    assert c["workloads"]["tiny_chunked"]["chunk"] == c["chunk"]
    rtt = c["redis_round_trip_s"]
    assert_spread(rtt, repeat)
    ra = c["ratios"]
    w = c["workloads"]
    assert close(ra["noop_per_task_vs_redis_rtt"], w["noop"]["harness_per_task_s"] / rtt["median"])
    assert close(ra["tiny_per_task_vs_redis_rtt"], w["tiny"]["harness_per_task_s"] / rtt["median"])
    assert close(ra["chunk_gain"], w["tiny_chunked"]["harness_rate_per_s"] / w["tiny"]["harness_rate_per_s"])
    assert close(ra["chunk_gain_plain"], w["tiny_chunked"]["plain_rate_per_s"] / w["tiny"]["plain_rate_per_s"])
    assert ra["chunk_gain_met"] is (ra["chunk_gain"] >= ra["chunk_gain_goal_min"])


def test_json_carries_no_secret(quick_result):
    _, r = quick_result
    text = json.dumps(r)
    assert "redis://" not in text and "password" not in text.lower()


def test_unreachable_broker_is_one_line_and_exit_2():
    # Port 1 on loopback: refused at once. Checked before any benchmark runs.
    proc = bench("--quick", "--redis-url", "redis://:s3cret@127.0.0.1:1/0", timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = stderr_lines(proc)
    assert len(lines) == 1 and "unavailable" in lines[0], lines
    assert "s3cret" not in proc.stderr + proc.stdout
    assert proc.stdout.strip() == ""


def test_bad_repeat_is_exit_2():
    proc = bench("--repeat", "0", timeout=60)
    assert proc.returncode == 2 and len(stderr_lines(proc)) == 1, proc.stderr
