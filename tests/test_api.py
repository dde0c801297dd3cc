"""The library face: taskrace.run/compare/load return result objects that print the CLI's
table, render HTML in a notebook (a real kernel, through nbclient), write the same JSON
and report, and refuse bad input with the CLI's own line, leaving no process behind.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

import psutil
import pytest

from conftest import REPO_ROOT, cli
import taskrace
from taskrace import events
from taskrace.reporting.results import load_json

README = REPO_ROOT / "README.md"


def test_the_one_liner_prints_the_table():
    """As the issue's 'done when' writes it (the seed's 2 s waits, two threads)."""
    code = "import taskrace; r = taskrace.run('power-io', backend='threads', workers=2); print(r)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("taskrace run power-io")
    header = next(line for line in lines if line.startswith("scenario"))
    assert header.split()[:4] == ["scenario", "backend", "n", "wall"]
    row = next(line for line in lines if line.startswith("power-io"))
    assert row.split()[1:3] == ["threads", "2"] and row.split()[-1] == "ok"
    assert max(len(line) for line in lines) <= 80


@pytest.fixture(scope="module")
def small_compare():
    return taskrace.compare(scenario="power-io", backend=["threads", "processes"], workers=[1, 2], repeat=1,
                            warmup=0, sleep=0.05, progress=False, trace=True)


@pytest.mark.alone  # small_compare's threads speedup > 1.3 on 50 ms waits: ~27 ms of slack
def test_compare_returns_records_the_cli_would_print(small_compare, tmp_path):
    r = small_compare
    assert [(x["backend"], x["workers"]) for x in r] == [("sequential", 1), ("threads", 1), ("threads", 2),
                                                          ("processes", 1), ("processes", 2)]
    assert r.ok and r.exit_code == 0
    threads2 = next(x for x in r if x["backend"] == "threads" and x["workers"] == 2)
    assert threads2["speedup"] > 1.3  # two 0.05 s waits overlap on two threads (a ratio, same run)
    text = str(r)
    assert text.splitlines()[0].startswith("taskrace compare (median of 1)")
    assert max(len(line) for line in text.splitlines()) <= 80
    md, csv = r.table(format="markdown"), r.table(format="csv")
    assert md.startswith("| scenario |") and csv.splitlines()[0].startswith("scenario,backend,n,wall_s")
    assert len(csv.splitlines()) == 1 + len(r)


@pytest.mark.alone  # small_compare's threads speedup > 1.3 on 50 ms waits: ~27 ms of slack
def test_to_json_and_load_round_trip(small_compare, tmp_path):
    path = small_compare.to_json(str(tmp_path / "r.json"))
    doc = load_json(path)  # the results file's own loader accepts it
    assert len(doc["runs"]) == len(small_compare) and doc["fits"]
    back = taskrace.load(path)
    assert isinstance(back, taskrace.Results)
    assert [x["wall_s"] for x in back] == [x["wall_s"] for x in small_compare]
    # the same records print the same table (below the title, which names the file and
    # wraps at 80 columns when its path is long: an xdist worker's tmp_path is)
    def rows(text: str) -> list[str]:
        lines = text.splitlines()
        return lines[next(k for k, line in enumerate(lines) if line.startswith("scenario")):]

    assert rows(back.table()) == rows(small_compare.table())


@pytest.mark.alone  # small_compare's threads speedup > 1.3 on 50 ms waits: ~27 ms of slack
def test_report_writes_the_html_page(small_compare, tmp_path):
    page = small_compare.report(str(tmp_path / "rep"))
    html = open(page, encoding="utf-8").read()
    assert "<table class=runs>" in html and "power-io" in html


def test_repr_html_is_an_html_table(small_compare):
    html = small_compare._repr_html_()
    assert html.count("<tr>") == 1 + len(small_compare)
    assert "<table" in html and "threads" in html and "<script" not in html


def test_to_dataframe_one_row_a_point(small_compare):
    df = small_compare.to_dataframe()
    assert len(df) == len(small_compare)
    assert {"scenario", "backend", "n", "wall_s", "speedup"} <= set(df.columns)  # the csv columns
    assert df.loc[df.backend == "sequential", "speedup"].iloc[0] == pytest.approx(1.0)


def test_traced_tasks_have_their_timeline(small_compare):
    tasks = small_compare.tasks()
    # power-io's default two tasks, at each of the five points
    assert len(tasks) == 2 * len(small_compare)
    assert all(t["queued"] <= t["started"] <= t["finished"] for t in tasks)
    assert {t["point"] for t in tasks} == set(range(len(small_compare)))


def _cli_error(*argv: str) -> str:
    proc = cli(*argv)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line
    return line.removeprefix("taskrace: error: ")


@pytest.mark.parametrize("call, argv", [
    (lambda: taskrace.run("power-io", backend="nope"), ["run", "power-io", "-b", "nope"]),
    (lambda: taskrace.run("nope"), ["run", "nope"]),
    (lambda: taskrace.run("power-io", sleep="soon"), ["run", "power-io", "--sleep", "soon"]),
    (lambda: taskrace.run("power-io", bogus=1), ["run", "power-io", "--bogus", "1"]),
    (lambda: taskrace.run("power-io", backend="celery", pool="gevent"),
     ["run", "power-io", "-b", "celery", "--pool", "gevent"]),
    (lambda: taskrace.compare(scenario="power-io", workers=[0]), ["compare", "--scenario", "power-io", "-n", "0"]),
    (lambda: taskrace.compare(scenario="power-io", repeat=0), ["compare", "--scenario", "power-io", "--repeat", "0"]),
    (lambda: taskrace.compare(set=["bank.nope=1"]), ["compare", "--set", "bank.nope=1"]),
    (lambda: taskrace.faults(fault="nope"), ["faults", "--fault", "nope"]),
])
def test_bad_input_is_one_exception_with_the_clis_line_and_no_process(call, argv):
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    with pytest.raises(taskrace.InputError) as caught:
        call()
    assert str(caught.value) == _cli_error(*argv)
    assert {p.pid for p in me.children(recursive=True)} <= before
    assert not events.active()


def test_a_notebook_cell_shows_the_html_table(tmp_path):
    """A real Jupyter kernel runs the cell (nbclient); its output has the HTML table."""
    nbformat = pytest.importorskip("nbformat") if not _in_ci() else __import__("nbformat")
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"import sys; sys.path.insert(0, {str(REPO_ROOT)!r})\n"
                                          "import taskrace\n"
                                          "r = taskrace.run('power-io', backend='threads', workers=2, sleep=0.05)\n"
                                          "r"),
                nbformat.v4.new_code_cell("r.to_dataframe()[['scenario', 'backend', 'n']]")]
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    shown = nb.cells[0].outputs[-1]["data"]
    assert "<table" in shown["text/html"] and "threads" in shown["text/html"]
    assert shown["text/plain"].startswith("taskrace run power-io")
    frame = nb.cells[1].outputs[-1]["data"]["text/html"]
    assert "power-io" in frame and "<table" in frame


def _in_ci() -> bool:
    import os

    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def test_the_readmes_python_example_runs_as_written(tmp_path):
    """The README's ```python block, run as a script in a scratch folder."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README shows the library in a ```python block"
    script = tmp_path / "example.py"
    script.write_text(blocks[0])
    env = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": "80"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path,
                         timeout=180, env=env)
    assert out.returncode == 0, out.stderr
    assert "taskrace run power-io" in out.stdout
    assert json.loads((tmp_path / "power-io.json").read_text())["runs"]
    assert (tmp_path / "power-io-report" / "index.html").exists()


def test_faults_and_network_return_their_documents(tmp_path):
    """The fault lab and the network study through the library: their result objects print
    the command's tables, write the command's JSON (read back by taskrace.load), and the
    stream told of the fault as it fired."""
    try:
        from celery_fixtures import require_redis_binary
    except ImportError:
        from tests.celery_fixtures import require_redis_binary
    require_redis_binary()
    heard = []
    f = taskrace.faults(fault="kill-worker", mode="at-most-once", ops=12, no_contrast=True, progress=False,
                        on_event=heard.append)
    assert isinstance(f, taskrace.FaultResults) and len(f.records) == 1
    fired = [e for e in heard if e.kind == "fault.fired"]
    assert len(fired) == 1 and fired[0]["fault"] == "kill-worker" and f.records[0]["fired"] is True
    assert "kill-worker" in str(f) and "at-most-once" in str(f)
    assert f.exit_code == (1 if f.records[0]["kept"] is False else 0)
    back = taskrace.load(f.to_json(str(tmp_path / "f.json")))
    assert isinstance(back, taskrace.FaultResults) and back.records[0]["counts"] == f.records[0]["counts"]
    assert len(f.to_dataframe()) == 1

    n = taskrace.network(rtt=[0, 1], workloads=["noop"], repeat=1, seconds=0.2, no_scaling=True, progress=False)
    assert isinstance(n, taskrace.NetworkResults) and {s["rtt_ms"] for s in n.samples} == {0.0, 1.0}
    assert "noop" in str(n)
    back = taskrace.load(n.to_json(str(tmp_path / "n.json")))
    assert isinstance(back, taskrace.NetworkResults) and back.samples == n.samples
