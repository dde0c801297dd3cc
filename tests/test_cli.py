"""The command line, through a subprocess: list, run, compare, the JSON schema, exit codes,
and every kind of bad input (exit 2, one line on stderr, no traceback)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

try:
    from conftest import LOCAL_TIERS, cli, stderr_lines
except ImportError:  # tests/ imported as a package
    from tests.conftest import LOCAL_TIERS, cli, stderr_lines

from scenarios import SCENARIOS
from scenarios.bank import STRATEGIES
from workers import TIERS


def _load(path) -> dict:
    with open(path) as fh:
        return json.load(fh)


# --- list / run ---------------------------------------------------------------------------

def test_list_names_every_scenario_backend_and_strategy():
    proc = cli("list")
    assert proc.returncode == 0, proc.stderr
    for name in [*SCENARIOS, *TIERS, *STRATEGIES]:
        assert name in proc.stdout, name


@pytest.mark.parametrize("tier", LOCAL_TIERS)
def test_run_prints_the_table_and_exits_0(tmp_path, tier):
    out = tmp_path / "run.json"
    proc = cli("run", "power-io", "-b", tier, "-n", "2", "--sleep", "0.05", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in ("power-io", tier, "wall s", "verdict", "ok"):
        assert word in proc.stdout, word
    doc = _load(out)
    assert len(doc["runs"]) == 1
    run = doc["runs"][0]
    assert (run["scenario"], run["backend"]) == ("power-io", tier)
    assert run["verdict"]["ok"] is True


def test_run_start_method_reaches_the_processes_tier(tmp_path):
    out = tmp_path / "run.json"
    proc = cli("run", "globals", "-b", "processes", "-n", "2", "--start-method", "spawn",
               "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    run = _load(out)["runs"][0]
    assert run["tier"]["start_method"] == "spawn"
    assert run["verdict"]["visible"] is False


BANK_NONE = ["run", "bank", "-b", "threads", "-n", "2", "--strategy", "none",
             "--delay", "0.002", "--trials", "3"]


def test_run_bank_none_violates_but_exits_0(tmp_path):
    out = tmp_path / "bank.json"
    proc = cli(*BANK_NONE, "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    verdict = _load(out)["runs"][0]["verdict"]
    assert verdict["ok"] is False  # it really violated: exit 0 is a choice, not luck
    assert verdict["unsafe"] is True
    assert verdict["details"]["violating_trials"] >= 1


def test_run_bank_none_with_expect_safe_exits_1():
    proc = cli(*BANK_NONE, "--expect-safe")
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr


def test_run_bank_safe_strategy_with_expect_safe_exits_0():
    proc = cli("run", "bank", "-b", "threads", "-n", "2", "--strategy", "lock",
               "--delay", "0.002", "--trials", "2", "--expect-safe")
    assert proc.returncode == 0, proc.stderr


# --- compare and the JSON schema ----------------------------------------------------------

COMPARE = ["compare", "--scenario", "power-io,globals", "--backend", "threads,processes",
           "-n", "1,2", "--set", "power-io.sleep=0.05", "--no-progress"]
RUN_KEYS = ("scenario", "backend", "workers", "strategy", "params", "wall_s", "timings",
            "metrics", "verdict", "environment")
METRIC_KEYS = ("cpu_percent", "peak_rss_bytes", "os_processes", "threads")
VERDICT_KEYS = ("ok", "expected", "actual", "details")
ENV_KEYS = ("python", "gil_enabled", "cpu_count", "packages")


@pytest.fixture(scope="module")
def compare_doc(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "compare.json"
    proc = cli(*COMPARE, "--json", str(out), timeout=180)
    return proc, out


def test_compare_exits_0(compare_doc):
    proc, out = compare_doc
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "taskrace compare" in proc.stdout  # the table's title
    assert out.exists()


def test_compare_json_schema(compare_doc):
    proc, out = compare_doc
    assert proc.returncode == 0, proc.stderr
    doc = _load(out)
    assert doc["schema"].startswith("taskrace.results/")
    for key in ENV_KEYS:
        assert key in doc["environment"], key
    runs = doc["runs"]
    assert runs
    for run in runs:
        for key in RUN_KEYS:
            assert key in run, (key, run.get("scenario"), run.get("backend"))
        assert isinstance(run["wall_s"], (int, float)) and run["wall_s"] >= 0
        assert "run_s" in run["timings"] and "startup_s" in run["timings"]
        for key in METRIC_KEYS:
            if key == "cpu_percent" and run["wall_s"] < 0.1:
                # too short for 10 ms CPU ticks: null by design (test_measure checks it)
                assert run["metrics"][key] is None or isinstance(run["metrics"][key], (int, float))
                continue
            assert isinstance(run["metrics"][key], (int, float)), key
        for key in VERDICT_KEYS:
            assert key in run["verdict"], key
        for key in ENV_KEYS:
            assert key in run["environment"], key
        assert isinstance(run["environment"]["gil_enabled"], bool)
        assert run["verdict"]["ok"] is True, run["verdict"]
        if run["scenario"] == "globals":
            assert isinstance(run["verdict"]["visible"], bool)
            shared = run["params"]["store"] == "shared"
            assert run["verdict"]["visible"] is (shared or run["backend"] != "processes")
        if run["backend"] == "processes":
            assert run["metrics"]["os_processes"] >= 1 + run["workers"]
    assert {r["params"]["sleep"] for r in runs if r["scenario"] == "power-io"} == {0.05}
    # The CPUs' measured capacity, before and after the runs, beside the core count.
    cap = doc["environment"]["cpu_capacity"]
    assert set(cap) == {"before", "after"}
    for c in cap.values():
        assert c["cpus"] == doc["environment"]["cpus_usable"] and c["capacity"] > 0
    assert "CPU capacity:" in proc.stdout


def test_compare_matrix_has_sequential_baseline_and_speedups(compare_doc):
    proc, out = compare_doc
    assert proc.returncode == 0, proc.stderr
    runs = _load(out)["runs"]
    points = {(r["scenario"], r["params"].get("store"), r["backend"], r["workers"]) for r in runs}
    # globals runs twice unless told otherwise: module-level list and shared store.
    variants = [("power-io", None), ("globals", "module"), ("globals", "shared")]
    expected = {(s, v, "sequential", 1) for s, v in variants}
    expected |= {(s, v, b, n) for s, v in variants for b in ("threads", "processes") for n in (1, 2)}
    assert points == expected
    assert len(runs) == len(expected)
    for run in runs:
        assert run.get("speedup") is not None, run["backend"]
        assert "efficiency" in run
        assert run.get("agrees_with_sequential") is True, (run["scenario"], run["backend"])
        if run["backend"] == "sequential":
            assert run["speedup"] == 1.0


def test_a_chunksize_sweep_gives_each_variant_its_baseline_and_its_row(tmp_path):
    """--chunksize A,B: each chunksize is its own series, with its own sequential baseline,
    repeated --repeat times, and the table names the chunksize on each row."""
    out = tmp_path / "sweep.json"
    proc = cli("compare", "--scenario", "mapreduce", "--chunksize", "2000,20000", "--set", "mapreduce.size=20000",
               "--backend", "threads", "-n", "1,2", "--repeat", "2", "--warmup", "0", "--no-progress",
               "--json", str(out), timeout=180)
    assert proc.returncode == 0, proc.stderr
    runs = _load(out)["runs"]
    assert sorted((r["params"]["chunksize"], r["backend"], r["workers"]) for r in runs) == sorted(
        (c, b, n) for c in (2000, 20000) for b, n in (("sequential", 1), ("threads", 1), ("threads", 2)))
    for run in runs:
        assert len(run["repeats"]) == 2 and run["wall"]["n"] == 2
        assert run["agrees_with_sequential"] is True
        base = next(r for r in runs if r["backend"] == "sequential" and r["params"] == run["params"])
        assert run["speedup"] == pytest.approx(base["wall_s"] / run["wall_s"], rel=0.01)
    assert run["tasks"] > 0 and {r["tasks"] for r in runs} == {10, 1}  # 20000 / chunksize chunks
    for chunk in (2000, 20000):
        assert proc.stdout.count(f"mapreduce chunksize={chunk} ") == 3, proc.stdout


def test_task_size_sweep_varies_power_cpu_size(tmp_path):
    out = tmp_path / "sizes.json"
    proc = cli("compare", "--scenario", "power-cpu", "--task-size", "50,100", "--set", "power-cpu.tasks=2",
               "--set", "power-cpu.exponent=50", "--backend", "threads", "-n", "2", "--repeat", "1",
               "--warmup", "0", "--no-progress", "--json", str(out), timeout=180)
    assert proc.returncode == 0, proc.stderr
    runs = _load(out)["runs"]
    assert sorted((r["params"]["size"], r["backend"]) for r in runs) == [
        (50, "sequential"), (50, "threads"), (100, "sequential"), (100, "threads")]
    assert "power-cpu size=50" in proc.stdout and "power-cpu size=100" in proc.stdout


# --- bad input: exit 2, exactly one line on stderr, no traceback --------------------------

def _assert_usage_error(proc) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = stderr_lines(proc)
    assert len(lines) == 1, proc.stderr
    return lines[0]


UNKNOWN_NAMES = {
    "scenario": (["run", "nope"], list(SCENARIOS)),
    "backend": (["run", "power-io", "-b", "nope"], list(TIERS)),
    "strategy": (["run", "bank", "--strategy", "nope"], list(STRATEGIES)),
    "bank-mode": (["run", "bank", "--mode", "nope"], ["seed", "transfers"]),
    "compare-backend": (["compare", "--backend", "nope"], list(TIERS)),
    "compare-scenario": (["compare", "--scenario", "power-io,nope"], list(SCENARIOS)),
    "compare-strategy": (["compare", "--scenario", "bank", "--strategy", "nope"], list(STRATEGIES)),
}


@pytest.mark.parametrize("case", list(UNKNOWN_NAMES))
def test_unknown_name_lists_the_valid_choices(case):
    args, choices = UNKNOWN_NAMES[case]
    line = _assert_usage_error(cli(*args))
    assert "nope" in line
    for choice in choices:
        assert choice in line, (choice, line)


BAD_INPUT = {
    "n-zero": ["run", "power-io", "-n", "0"],
    "n-negative": ["run", "power-io", "-n", "-1"],
    "n-not-a-number": ["run", "power-io", "-n", "abc"],
    "n-zero-on-processes": ["run", "power-io", "-b", "processes", "-n", "0"],
    "tasks-negative": ["run", "power-io", "--tasks", "-3"],
    "tasks-not-integer": ["run", "power-io", "--tasks", "1.5"],
    "size-not-a-number": ["run", "power-cpu", "--size", "abc"],
    "sleep-not-a-number": ["run", "power-io", "--sleep", "abc"],
    "sleep-nan": ["run", "power-io", "--sleep", "nan"],
    "sleep-inf": ["run", "power-io", "--sleep", "inf"],
    "bank-delay-nan": ["run", "bank", "--delay", "nan", "--trials", "1"],
    "exponent-over-the-cap": ["run", "power-cpu", "--exponent", "10000000"],
    "chunksize-zero": ["run", "mapreduce", "--chunksize", "0"],
    "trials-zero": ["run", "bank", "--trials", "0"],
    "start-method": ["run", "power-io", "-b", "processes", "--start-method", "nope"],
    "compare-n-zero": ["compare", "-n", "0,2"],
    "compare-n-not-a-number": ["compare", "-n", "abc"],
    "compare-set-malformed": ["compare", "--set", "nonsense"],
    "compare-set-unknown-option": ["compare", "--scenario", "power-io", "--set", "power-io.bogus=1"],
    "compare-set-bad-value": ["compare", "--scenario", "power-io", "--set", "power-io.tasks=-1"],
    "run-unknown-option": ["run", "power-io", "--bogus", "1"],
    "compare-unknown-option": ["compare", "--bogus", "1"],
    "list-unknown-option": ["list", "--bogus", "1"],
    "run-without-scenario": ["run"],
    "no-command": [],
    "sweep-malformed": ["compare", "--sweep", "mapreduce.chunksize"],
    "sweep-unknown-scenario": ["compare", "--sweep", "nope.size=1,2"],
    "sweep-bad-value": ["compare", "--scenario", "mapreduce", "--chunksize", "1000,-5"],
    "task-size-not-a-number": ["compare", "--scenario", "power-cpu", "--task-size", "10,abc"],
    "repeat-zero": ["compare", "--repeat", "0"],
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_with_one_line(case):
    line = _assert_usage_error(cli(*BAD_INPUT[case]))
    assert line.startswith("taskrace"), line


def test_bad_input_lines_say_what_is_wrong():
    assert "-n" in _assert_usage_error(cli("run", "power-io", "-n", "0"))
    assert "--tasks" in _assert_usage_error(cli("run", "power-io", "--tasks", "1.5"))
    assert "--size" in _assert_usage_error(cli("run", "power-cpu", "--size", "abc"))
    cap = _assert_usage_error(cli("run", "power-cpu", "--exponent", "10000000"))
    assert "cap" in cap or "exceed" in cap, cap
    assert "--bogus" in _assert_usage_error(cli("run", "power-io", "--bogus", "1"))


@pytest.mark.parametrize("option", ["--json", "--history"])
def test_unwritable_output_file_is_bad_input(tmp_path, option):
    # A results path in a directory that does not exist: one line, exit 2, no traceback
    # (best checked before the run starts).
    target = tmp_path / "no-such-dir" / "out.json"
    proc = cli("run", "bank", "-b", "threads", "--trials", "1", "--delay", "0", "--strategy", "lock",
               option, str(target))
    line = _assert_usage_error(proc)
    assert "no-such-dir" in line, line


@pytest.mark.parametrize("command", ["run", "faults"])
def test_dash_is_not_a_file_name(tmp_path, command):
    # `--json -` once wrote a file named "-" into the working folder: now one line saying
    # what to do instead, and nothing written.
    args = ["run", "power-io", "--tasks", "1", "--sleep", "0"] if command == "run" else ["faults"]
    proc = subprocess.run([sys.executable, "-m", "taskrace", *args, "--json", "-"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    line = _assert_usage_error(proc)
    assert "give a file name" in line and "--format json" in line, line
    assert list(tmp_path.iterdir()) == []


def test_task_errors_fail_the_run_even_under_an_unsafe_strategy():
    # `none` may violate the invariant (exit 0, a lesson); a task that *crashed* is not
    # a lesson. Verdict of a bank run whose actors raised, as the checker builds it:
    from taskrace.cli import EXIT_FAILED, exit_code

    record = {"verdict": {"ok": False, "unsafe": True, "expected": "balance 200 in every trial",
                          "actual": "0/1 trials violated, 2 errors",
                          "details": {"violating_trials": 0,
                                      "errors": ["task 0: ValueError: boom (at bank.py:69)"]}}}
    assert exit_code([record], expect_safe=False) == EXIT_FAILED
