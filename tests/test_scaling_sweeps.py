"""Scaling sweeps that mean what they say (compare --scaling): every point gets enough
tasks for its workers or is marked task-starved, weak scaling grows the work with n and
reports the scaled speedup, and Amdahl is fitted only where the model applies.

Real runs of ``taskrace compare`` on the local tiers (sequential, threads, processes),
power-io with a short sleep: each compare takes a few seconds. No assertion depends on
how fast anything ran, only on what the sweep planned and on ratios measured in one run.
"""
from __future__ import annotations

import json

import pytest

try:
    from conftest import cli, stderr_lines
except ImportError:  # tests/ imported as a package
    from tests.conftest import cli, stderr_lines

from taskrace.reporting import plots
from taskrace.reporting.html_report import write_report

SLEEP = "0.05"  # seconds per power-io task: short, and still far above a thread's start-up
BASE = ["compare", "--scenario", "power-io", "--set", f"power-io.sleep={SLEEP}", "--repeat", "1",
        "--warmup", "0", "--no-progress"]
TIMEOUT = 180


def _compare(tmp_path_factory, name: str, *args: str) -> dict:
    out = tmp_path_factory.mktemp(name) / "results.json"
    proc = cli(*BASE, *args, "--json", str(out), timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert "Traceback" not in proc.stderr
    with open(out) as fh:
        doc = json.load(fh)
    return {"proc": proc, "doc": doc, "runs": doc["runs"], "path": out}


def _point(runs: list[dict], backend: str, n: int, **params) -> dict:
    found = [r for r in runs if r["backend"] == backend and r["workers"] == n
             and all(r["params"][k] == v for k, v in params.items())]
    assert len(found) == 1, (backend, n, params, [(r["backend"], r["workers"]) for r in runs])
    return found[0]


def _fit(doc: dict, backend: str, **params) -> dict:
    found = [f for f in doc["fits"] if f["backend"] == backend
             and all(f["params"][k] == v for k, v in params.items())]
    assert len(found) == 1, (backend, params, doc["fits"])
    return found[0]


def _speedup_texts(doc: dict) -> tuple[list[str], list[str], str]:
    """The speedup chart's panel titles, its panels' legend lines and its title."""
    fig = plots.plot_speedup(doc)
    assert not isinstance(fig, str), fig
    axes = [ax for ax in fig.axes if ax.get_visible()]
    legends = [t.get_text() for ax in axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    return [ax.get_title() for ax in axes], legends, fig._suptitle.get_text()


@pytest.fixture(scope="module")
def strong(tmp_path_factory):
    """The default (--scaling strong), the task count not set: the seed's 2 tasks."""
    return _compare(tmp_path_factory, "strong", "-b", "threads", "-n", "1,2,4")


@pytest.fixture(scope="module")
def as_given(tmp_path_factory):
    return _compare(tmp_path_factory, "as-given", "-b", "threads,processes", "-n", "1,2,4",
                    "--scaling", "as-given")


@pytest.fixture(scope="module")
def weak(tmp_path_factory):
    return _compare(tmp_path_factory, "weak", "-b", "threads", "-n", "1,2,4", "--scaling", "weak")


# --- strong (the default) ------------------------------------------------------------------

def test_strong_default_raises_the_task_count_to_the_largest_n_and_says_so(strong):
    note = "power-io: --tasks 2 -> 4 so every worker has a task at n = 4 (strong scaling)"
    assert note in " ".join(strong["proc"].stdout.split())  # under the table (rich may wrap it)
    for r in strong["runs"]:  # the same work at every point, the sequential baseline too
        assert r["params"]["tasks"] == 4 and r["tasks"] == 4, (r["backend"], r["workers"])
        assert r["scaling"]["mode"] == "strong" and r["scaling"]["starved"] is False
        assert r["scaling"]["given"] == 2 and r["scaling"]["note"] == note
        assert r["agrees_with_sequential"] is True
    fit = _fit(strong["doc"], "threads")
    assert fit["scaling"] == "strong" and "amdahl_skipped" not in fit
    assert fit["fit_points"] == [[2, _point(strong["runs"], "threads", 2)["speedup"]],
                                 [4, _point(strong["runs"], "threads", 4)["speedup"]]]
    assert isinstance(fit["amdahl_serial_fraction"], float)


def test_strong_chart_says_same_work_and_draws_the_fit(strong):
    titles, legends, suptitle = _speedup_texts(strong["doc"])
    assert titles == ["power-io\nsame work at every n (4 tasks)"]
    assert "strong scaling" in suptitle
    assert any(t.startswith("threads: Amdahl f = ") for t in legends), legends


@pytest.mark.alone  # a ratio of two 50 ms-sleep runs: tens of ms of slack
def test_a_task_count_the_user_set_is_kept_and_the_points_above_it_are_starved(tmp_path_factory):
    """--sweep power-io.tasks=2,4 under strong scaling: both series keep their count; at
    n = 4 the 2-task series is task-starved, the 4-task one is not. Within this one run
    threads with enough tasks reach a speedup well above the starved ceiling (about 2
    against about 4 for sleeping tasks: the ratio leaves room for a noisy machine)."""
    got = _compare(tmp_path_factory, "kept", "-b", "threads", "-n", "1,4", "--sweep", "power-io.tasks=2,4")
    starved = _point(got["runs"], "threads", 4, tasks=2)
    enough = _point(got["runs"], "threads", 4, tasks=4)
    assert starved["scaling"]["starved"] is True and starved["scaling"]["user_set"] is True
    assert enough["scaling"]["starved"] is False
    assert not any("note" in r["scaling"] for r in got["runs"])  # nothing was raised
    assert enough["speedup"] > 1.5 * starved["speedup"], (enough["speedup"], starved["speedup"])
    text = " ".join(got["proc"].stdout.split())
    assert "power-io: task-starved at n = 4 (only 2 tasks: some workers idle)" in text


def test_an_explicit_tasks_flag_below_the_largest_n_is_kept(tmp_path):
    for given in (["--tasks", "2"], ["--set", "power-io.tasks=2"]):
        proc = cli("compare", "--scenario", "power-io", "-b", "threads", "-n", "1,2,4", *given, "--dry-run")
        assert proc.returncode == 0, proc.stderr
        assert "tasks=4" not in proc.stdout and "threads -n 4  sleep=0.5 tasks=2" in proc.stdout
        assert "power-io: task-starved at n = 4 (only 2 tasks" in " ".join(proc.stdout.split())


# --- as given ---------------------------------------------------------------------------------

def test_as_given_keeps_the_seeds_two_tasks_and_marks_n_above_two_starved(as_given):
    for r in as_given["runs"]:
        assert r["params"]["tasks"] == 2 and r["tasks"] == 2
        assert r["scaling"]["mode"] == "as-given"
        assert r["scaling"]["starved"] is (r["workers"] > 2), (r["backend"], r["workers"])
    assert "power-io: task-starved at n = 4 (only 2 tasks" in " ".join(as_given["proc"].stdout.split())


def test_as_given_has_no_amdahl_fit_from_one_usable_point(as_given):
    """n = 2 is the only point with n > 1 and every worker busy: no fit, and the JSON says
    why (what the issue saw: 'Amdahl f = 0.33' read off a task-starved workload)."""
    for backend in ("threads", "processes"):
        fit = _fit(as_given["doc"], backend)
        assert fit["amdahl_serial_fraction"] is None
        assert fit["amdahl_skipped"].startswith("task-starved at n > 2: 1 point with n > 1 where every"), fit
        assert [n for n, _ in fit["fit_points"]] == [2]
        assert [n for n, _ in fit["points"]] == [1, 2, 4]  # the points are all still there


def test_as_given_chart_says_why_there_is_no_fit(as_given):
    titles, legends, _ = _speedup_texts(as_given["doc"])
    assert titles == ["power-io\nsame work at every n (2 tasks), as given"]
    assert legends == ["no Amdahl fit: task-starved at n > 2"]  # one line for both backends


# --- weak ---------------------------------------------------------------------------------------

def test_weak_scaling_multiplies_the_tasks_by_n_against_one_baseline(weak):
    runs = weak["runs"]
    seq = _point(runs, "sequential", 1)
    assert seq["params"]["tasks"] == 2  # the baseline runs the base work only
    for n in (1, 2, 4):
        r = _point(runs, "threads", n)
        assert r["params"]["tasks"] == 2 * n and r["tasks"] == 2 * n
        assert r["scaling"]["mode"] == "weak" and r["scaling"]["factor"] == n
        assert r["scaling"]["base_params"] == seq["params"]
        assert r["scaling"]["starved"] is False
        assert r["verdict"]["ok"] is True  # each point's checker judged its own, larger work
        # scaled speedup = n x T_seq(base) / T_n(n x base); efficiency = T_seq(base) / T_n
        assert r["speedup"] == pytest.approx(n * seq["wall_s"] / r["wall_s"], rel=1e-3)
        assert r["efficiency"] == pytest.approx(seq["wall_s"] / r["wall_s"], rel=1e-3)
        assert r["karp_flatt"] is None  # a fixed-work measure
        # n = 1 ran the baseline's work and is checked against it; the others ran more
        assert r["agrees_with_sequential"] is (True if n == 1 else None)
    # Sleeping tasks on threads: 4 workers do 4x the work in about the time 1 does 1x.
    assert _point(runs, "threads", 4)["speedup"] > 2 * _point(runs, "threads", 1)["speedup"]
    assert "--tasks 2 x n, 2 to 8 tasks (weak scaling" in " ".join(weak["proc"].stdout.split())


def test_weak_scaling_has_no_amdahl_fit_and_the_chart_and_page_say_so(weak, tmp_path):
    fit = _fit(weak["doc"], "threads")
    assert fit["scaling"] == "weak" and fit["amdahl_serial_fraction"] is None
    assert fit["amdahl_skipped"].startswith("weak scaling (Gustafson): the speedup is the scaled speedup")
    titles, legends, suptitle = _speedup_texts(weak["doc"])
    assert titles == ["power-io\nwork grows with n (2 tasks × n; scaled speedup)"]
    assert "weak scaling" in suptitle
    assert legends == ["no Amdahl fit: weak scaling (Gustafson)"]
    with open(write_report(weak["doc"], str(tmp_path))) as fh:
        html = fh.read()
    assert "scaled speedup</b> (Gustafson's)" in html
    assert "no fit: weak scaling (Gustafson)" in html


# --- scenarios the scaling does not apply to, and bad input ---------------------------------------

def test_scenarios_without_a_task_count_option_run_as_given():
    """bank: actors, as many as -n: strong and weak leave it alone. mapreduce: tasks are
    chunks (size / chunksize, the lesson): kept, and marked starved when fewer than n."""
    proc = cli("compare", "--scenario", "bank,mapreduce", "-b", "threads", "-n", "1,4", "--strategy", "lock",
               "--set", "mapreduce.size=1000", "--set", "mapreduce.chunksize=500", "--scaling", "weak",
               "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "bank lock on threads -n 4  trials=2 steps=50 delay=0.002" in proc.stdout
    assert "mapreduce on threads -n 4  size=1000 chunksize=500" in proc.stdout
    text = " ".join(proc.stdout.split())
    assert "mapreduce: task-starved at n = 4 (only 2 tasks" in text
    for name in ("bank", "mapreduce"):
        assert (f"{name}: no task-count option to grow with n: the same work at every n, as given "
                "(weak scaling does not apply)") in text


@pytest.mark.parametrize("args, says", [
    (["--scaling", "foo"], "invalid choice: 'foo'"),
    (["--scaling", "weak", "--tasks", "5000", "-n", "1,4"], "--tasks must be at most 10000, got 20000"),
    (["--scaling", "weak", "--tasks", "two", "-n", "1,4"], "--tasks must be an integer, got 'two'"),
])
def test_bad_scaling_input_is_one_line_and_exit_2(args, says):
    proc = cli("compare", "--scenario", "power-io", "-b", "threads", *args, "--dry-run")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = stderr_lines(proc)
    assert len(lines) == 1 and says in lines[0], proc.stderr
