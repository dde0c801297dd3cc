"""``taskrace network``: what a task costs over a network, on real workers and a real Redis.

One small real run (module fixture): celery -n 2 against an embedded redis-server, the
latency proxy adding a round trip of RTT ms between the workers and Redis, no-op tasks
plain and chunked by 10, then the scaling part at -n 1,2. What is asserted follows from
the delay itself, never from a time limit of our own:

* a worker fetches each message with its own BRPOP, one after the other, so every plain
  no-op task costs the workers at least one round trip: workers x wall / tasks >= RTT;
* a chunked message pays its round trips once for 10 calls, so per call its cost rises
  with the RTT far less than a plain task's does (a ratio within the same run);
* the broker's command counts per message, which no clock moves.

Every process the run starts carries a marker and is killed by PID if left behind.
"""
from __future__ import annotations

import json
import subprocess
import sys
import signal

import pytest

try:
    from celery_fixtures import require_redis_binary
    from celery_procs import MarkedRun, wait_gone
except ImportError:  # tests/ imported as a package
    from tests.celery_fixtures import require_redis_binary
    from tests.celery_procs import MarkedRun, wait_gone

from taskrace.cli import main
from taskrace.netstudy.model import fit_line, loo_rtt

RTT_MS = 20
K_MIN = 1  # round trips every plain task pays at least: its BRPOP
CHUNK = 10


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    require_redis_binary()  # skips locally without redis-server; fails in CI
    out = tmp_path_factory.mktemp("network")
    args = ["network", "--rtt", f"0,{RTT_MS}", "-n", "2", "--workloads", "noop,chunked", "--chunk", str(CHUNK),
            "--repeat", "1", "--seconds", "0.3", "--scaling-n", "1,2", "--scaling-rtt", f"0,{RTT_MS}",
            "--json", str(out / "net.json"), "--report", str(out / "report"), "--no-progress"]
    # TASKRACE_EXTERNAL_WORKERS=1, as the lab's notebook service sets for its kernel: the
    # study still starts its own workers behind its proxy (it once waited on external ones)
    with MarkedRun(*args, env={"COLUMNS": "80", "TASKRACE_EXTERNAL_WORKERS": "1"}) as proc:
        code = proc.communicate(timeout=300)
        left = wait_gone([p.pid for p in proc.marked()])
    doc = json.loads((out / "net.json").read_text()) if code == 0 else None
    return {"code": code, "out": proc.out, "err": proc.err, "doc": doc, "dir": out, "left": left}


def costs(doc: dict, workload: str) -> dict[float, float]:
    return {s["rtt_ms"]: s["cost_s"] for s in doc["samples"] if s["part"] == "cost" and s["workload"] == workload}


def test_the_run_succeeds_and_leaves_nothing_behind(run):
    assert run["code"] == 0, run["err"][-2000:]
    assert "Traceback" not in run["err"]
    assert run["left"] == [], "processes of the run still alive after it ended"


def test_its_output_fits_80_columns(run):
    assert run["code"] == 0, run["err"][-2000:]
    lines = run["out"].splitlines()
    assert any("round trips per task" in line for line in lines)
    assert [line for line in lines if len(line.rstrip()) > 80] == []


def test_every_plain_task_pays_at_least_one_round_trip(run):
    # Given a proxy adding RTT_MS between the workers and Redis
    # When no-op tasks run
    # Then each costs the workers at least K_MIN round trips, and more than on loopback
    noop = costs(run["doc"], "noop")
    assert noop[RTT_MS] >= K_MIN * RTT_MS / 1e3, noop
    assert noop[RTT_MS] > noop[0], noop


def test_chunked_calls_rise_much_less_than_plain_tasks(run):
    plain, chunked = costs(run["doc"], "noop"), costs(run["doc"], f"noop-chunk{CHUNK}")
    rise_plain, rise_chunked = plain[RTT_MS] - plain[0], chunked[RTT_MS] - chunked[0]
    # a message's round trips are shared by CHUNK calls: ~1/CHUNK of the rise; 1/3 leaves room for noise
    assert rise_chunked * 3 < rise_plain, (plain, chunked)


def test_the_json_has_every_sample_and_the_counted_round_trips(run):
    doc = run["doc"]
    cost = [s for s in doc["samples"] if s["part"] == "cost"]
    assert sorted((s["workload"], s["rtt_ms"]) for s in cost) == sorted(
        (w, r) for w in ("noop", f"noop-chunk{CHUNK}") for r in (0, RTT_MS))
    scaling = [(s["backend"], s["rtt_ms"], s["workers"]) for s in doc["samples"] if s["part"] == "scaling"]
    assert sorted(scaling) == sorted([("sequential", 0, 1), ("processes", 0, 1), ("processes", 0, 2)]
                                     + [("celery", r, n) for r in (0, RTT_MS) for n in (1, 2)])
    for s in cost:
        assert s["calls"] >= 2 * s["workers"] * s["chunk"]  # every worker had work
        assert s["cost_s"] == pytest.approx(s["workers"] * s["wall_s"] / s["calls"], rel=1e-3)
    # The broker's commands per message, counted (no clock in them): BRPOP, the result's GET,
    # three MULTI/EXEC pipelines (unacked, ack, result); the restore timer may add a few.
    per = doc["fits"]["noop"]["counted"]["per_message"]
    assert per["brpop"] == pytest.approx(1, abs=0.1)
    assert per["get"] == pytest.approx(1, abs=0.1)
    assert per["exec"] == pytest.approx(3, abs=0.25)
    assert doc["fits"]["noop"]["k"] is not None and doc["pays"]


def test_the_report_has_both_charts(run):
    report = run["dir"] / "report"
    for name in ("index.html", "cost_vs_rtt.png", "scaling.png", "cost_vs_rtt.svg", "scaling.svg"):
        assert (report / name).stat().st_size > 0, name
    page = (report / "index.html").read_text()
    assert "Cost per task vs round-trip time" in page
    assert "Local vs distributed scaling" in page
    assert page.count("data:image/png;base64,") == 2


def test_the_fit_and_the_left_out_point():
    # Points on y = 0.01 + 3 x: the fit gives them back
    a, k = fit_line([(0.0, 0.01), (0.001, 0.013), (0.005, 0.025), (0.02, 0.07)])
    assert (a, k) == (pytest.approx(0.01), pytest.approx(3.0))
    assert fit_line([(0.005, 0.02), (0.005, 0.03)]) is None  # one RTT: no slope
    assert loo_rtt([0, 1, 5, 20]) == 5
    assert loo_rtt([0, 2, 10, 20]) == 2
    assert loo_rtt([0, 20]) is None


@pytest.fixture
def restore_sigterm():
    before = signal.getsignal(signal.SIGTERM)  # main() installs its own
    yield
    signal.signal(signal.SIGTERM, before)


@pytest.mark.parametrize("argv, says", [
    (["--rtt", "-5"], "negative"),
    (["--rtt", "abc"], "not a duration"),
    (["-n", "0"], "at least 1"),
    (["--workloads", "noop,bogus"], "unknown workload"),
    (["--rtt", ""], "at least one"),
])
def test_bad_input_is_one_line_and_exit_2(argv, says, capsys, restore_sigterm):
    assert main(["network", *argv]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and says in err and err.startswith("taskrace: error:"), err
    assert out == ""


def test_dry_run_prints_the_plan_and_starts_nothing(capsys, restore_sigterm, tmp_path):
    assert main(["network", "--dry-run", "--json", str(tmp_path / "n.json")]) == 0
    out = capsys.readouterr().out
    assert "would start" in out and "0 ms, 1 ms, 5 ms, 20 ms" in out
    assert not list(tmp_path.iterdir())


def test_taskrace_report_redraws_a_network_file(run, tmp_path):
    """`taskrace report network.json` draws the same two charts from the file alone."""
    out = tmp_path / "again"
    proc = subprocess.run([sys.executable, "-m", "taskrace", "report", str(run["dir"] / "net.json"),
                           "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    page = (out / "index.html").read_text()
    assert "Cost per task vs round-trip time" in page and "Local vs distributed scaling" in page
    assert {p.name for p in out.glob("*.png")} == {p.name for p in (run["dir"] / "report").glob("*.png")}
