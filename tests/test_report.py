"""The report: plots and one HTML page from a small REAL run (taskrace compare in a
subprocess), what they claim to contain, bad result files (exit 2, one line), and the
spread statistics on known data. No assertion depends on how fast anything ran."""
from __future__ import annotations

import base64
import copy
import json
import math
import os
import re
import subprocess
import sys
from html import unescape
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

try:
    from conftest import REPO_ROOT, cli, stderr_lines
except ImportError:  # tests/ imported as a package
    from tests.conftest import REPO_ROOT, cli, stderr_lines

from taskrace.measuring.stats import amdahl_fit, amdahl_speedup, karp_flatt, percentile, percentiles, spread
from taskrace.measuring.sweep import derive
from taskrace.reporting import plots
from taskrace.reporting.html_report import write_report

CHART_NAMES = ("speedup", "wall", "latency", "bank")
COMPARE_TIMEOUT = 900
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _celery_available() -> bool:
    """One celery backend in the run when a broker can be started (always in CI)."""
    if IN_CI:
        return True
    try:
        import celery  # noqa: F401

        from workers.infra.redis_server import find_redis_server
    except ImportError:
        return False
    return find_redis_server() is not None


BACKENDS = "threads,processes" + (",celery" if _celery_available() else "")
# Tiny sizes: every scenario with a chart of its own (power-io/-cpu: speedup and latency,
# bank: verdicts, globals: an overhead-bound point), sequential baseline added by compare.
SMALL_RUN = ["--scenario", "power-io,power-cpu,bank,globals", "--backend", BACKENDS, "-n", "1,2",
             "--strategy", "none,lock",
             "--set", "power-io.sleep=0.02", "--set", "power-cpu.tasks=2", "--set", "power-cpu.size=300",
             "--set", "power-cpu.exponent=300", "--set", "bank.trials=2", "--set", "bank.steps=20",
             "--repeat", "2", "--warmup", "0", "--no-progress"]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """One small real sweep: its JSON, and the report compare --report wrote at the end."""
    base = tmp_path_factory.mktemp("report")
    results, compare_dir = base / "results.json", base / "compare-report"
    proc = cli("compare", *SMALL_RUN, "--json", str(results), "--report", str(compare_dir),
               timeout=COMPARE_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert "Traceback" not in proc.stderr
    with open(results) as fh:
        doc = json.load(fh)
    return {"base": base, "results": results, "doc": doc, "compare_dir": compare_dir, "compare": proc}


@pytest.fixture(scope="module")
def reported(real_run):
    """``taskrace report RESULTS.json -o DIR`` on the real run."""
    out = real_run["base"] / "report"
    proc = cli("report", str(real_run["results"]), "-o", str(out))
    return {**real_run, "proc": proc, "dir": out, "html": _read(out / "index.html")}


def _read(path: Path) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG, read by matplotlib's own reader."""
    import matplotlib.image

    pixels = matplotlib.image.imread(str(path))
    return pixels.shape[1], pixels.shape[0]


def _img_tags(html: str) -> list[dict]:
    tags = []
    for tag in re.findall(r"<img\b[^>]*>", html):
        tags.append(dict(re.findall(r'(\w+)="([^"]*)"', tag)))
    return tags


# --- the real run, through the CLI ----------------------------------------------------------

def test_report_exits_0_and_names_its_page(reported):
    proc = reported["proc"]
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(reported["dir"] / "index.html") in proc.stdout.replace("\n", "")
    for name in CHART_NAMES:
        assert (reported["dir"] / f"{name}.png").is_file(), name
        assert (reported["dir"] / f"{name}.svg").is_file(), name


def test_pngs_open_and_have_the_size_of_their_figure(reported):
    """Each PNG opens and is exactly its figure's size x DPI (redrawn here from the same doc)."""
    doc = reported["doc"]
    for name, _, plot in plots.CHARTS:
        fig = plot(doc)
        assert not isinstance(fig, str), f"{name} skipped: {fig}"
        w_in, h_in = fig.get_size_inches()
        expected = (round(w_in * plots.DPI), round(h_in * plots.DPI))
        assert _png_size(reported["dir"] / f"{name}.png") == expected, name
        assert expected[0] == plots.WIDTH_PX == 1200
        assert expected[1] >= 400  # a real chart, not a sliver


def test_svgs_parse_as_xml(reported):
    for name in CHART_NAMES:
        root = ET.parse(reported["dir"] / f"{name}.svg").getroot()
        assert root.tag.endswith("svg"), name
        assert root.get("width") == f"{plots.WIDTH_IN * 72:g}pt", name  # 12 in at 72 pt/in
        text = _read(reported["dir"] / f"{name}.svg")
        assert "<path" in text or "<use" in text, name


def test_html_names_every_tier_scenario_and_strategy_in_the_json(reported):
    html, doc = reported["html"], reported["doc"]
    backends = {r["backend"] for r in doc["runs"]}
    assert {"sequential", "threads", "processes"} <= backends
    for name in backends | {r["scenario"] for r in doc["runs"]} | {r["strategy"] for r in doc["runs"]
                                                                   if r.get("strategy")}:
        assert re.search(rf"<code>{re.escape(name)}</code>", html), name
    assert html.count("What you are seeing") == len(CHART_NAMES)
    for row in doc["runs"]:  # every point has its row in the main table
        assert f"<td class=r>{row['workers']}</td>" in html
    for column in ("wall s", "speedup", "eff.", "tasks/s", "CPU %", "peak RSS MB", "= seq", "verdict"):
        assert f">{column}</th>" in html, column
    env = doc["environment"]
    assert env["python"] in html and f"{env['cpu_count']} (usable" in html
    for when, c in env["cpu_capacity"].items():  # the measured ceiling, in the page and on the chart
        assert f"{c['capacity']:.2f}× one CPU's work {when} the runs" in unescape(html)
    assert "CPU capacity</b> measured" in html


def test_html_embeds_every_chart_and_loads_nothing(reported):
    html = reported["html"]
    images = _img_tags(html)
    assert len(images) == len(CHART_NAMES)
    for img in images:
        assert img["src"].startswith("data:image/png;base64,")
        raw = base64.b64decode(img["src"].split(",", 1)[1])
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        assert img["width"] == "1200" and int(img["height"]) >= 400
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"<(script|link|iframe|object|embed)\b", html)
    assert not re.search(r"""(src|href)\s*=\s*["']?//""", html)
    assert not re.search(r"url\(", html)  # no fonts or backgrounds fetched from CSS either


def test_compare_report_writes_the_same(reported):
    """compare --report DIR: the same files, the same chart sizes, the same names in the page."""
    compare_dir, cli_dir = reported["compare_dir"], reported["dir"]
    assert reported["compare"].returncode == 0
    assert str(compare_dir / "index.html") in reported["compare"].stdout.replace("\n", "")
    assert sorted(p.name for p in compare_dir.iterdir()) == sorted(p.name for p in cli_dir.iterdir())
    for name in CHART_NAMES:
        assert _png_size(compare_dir / f"{name}.png") == _png_size(cli_dir / f"{name}.png"), name
    html = _read(compare_dir / "index.html")
    assert re.findall(r"<h2>([^<]+)</h2>", html) == re.findall(r"<h2>([^<]+)</h2>", reported["html"])
    for name in {r["backend"] for r in reported["doc"]["runs"]} | {r["scenario"] for r in reported["doc"]["runs"]}:
        assert f"<code>{name}</code>" in html, name
    assert [i["height"] for i in _img_tags(html)] == [i["height"] for i in _img_tags(reported["html"])]


def test_report_texts_follow_the_data(reported):
    """The speedup text quotes the measured speedups; the bank text counts the trials."""
    html, doc = reported["html"], reported["doc"]
    n = max(r["workers"] for r in doc["runs"])
    cpu = next(r for r in doc["runs"] if r["scenario"] == "power-cpu" and r["backend"] == "threads"
               and r["workers"] == n)
    assert f"threads S = {cpu['speedup']:.2f}" in html
    trials = sum(len(s["verdict"]["details"]["drift_per_trial"]) for r in doc["runs"]
                 if r["scenario"] == "bank" and r["backend"] == "threads" and r["strategy"] == "none"
                 for s in r["repeats"])
    assert re.search(rf"<code>none</code> on threads: \d+/{trials} trials off", html)
    assert "Karp–Flatt" in html and "Amdahl" in html and "GIL" in html


# --- documents with less in them ---------------------------------------------------------------

def _subset(doc: dict, keep) -> dict:
    runs = [copy.deepcopy(r) for r in doc["runs"] if keep(r)]
    return dict(doc, runs=runs, fits=derive(runs))


def test_one_worker_count_says_there_is_no_curve(real_run, tmp_path):
    doc = _subset(real_run["doc"], lambda r: r["workers"] == 2 or r["backend"] == "sequential")
    html = _read(Path(write_report(doc, str(tmp_path))))
    assert "only one worker count was measured (n = 2)" in html
    assert not (tmp_path / "speedup.png").exists()
    for name in ("wall", "latency", "bank"):
        assert (tmp_path / f"{name}.png").is_file(), name
    assert len(_img_tags(html)) == 3


def test_no_celery_and_no_bank(real_run, tmp_path):
    doc = _subset(real_run["doc"], lambda r: r["backend"] != "celery" and r["scenario"] != "bank")
    html = _read(Path(write_report(doc, str(tmp_path))))
    assert "There are no Celery runs in this file" in html
    assert "this file has no bank runs" in html
    assert not (tmp_path / "bank.png").exists()
    assert {"speedup.png", "wall.png", "latency.png"} <= {p.name for p in tmp_path.iterdir()}
    assert "<code>celery</code>" not in html.split("<h2>All points</h2>")[0]


def test_no_sequential_baseline(real_run, tmp_path):
    doc = _subset(real_run["doc"], lambda r: r["backend"] == "threads" and r["scenario"] == "power-io")
    for r in doc["runs"]:
        for key in ("speedup", "efficiency", "karp_flatt", "agrees_with_sequential"):
            r.pop(key, None)
    html = _read(Path(write_report(doc, str(tmp_path))))
    assert "no sequential run in this file" in html
    assert (tmp_path / "wall.png").is_file()


def test_plots_leave_no_global_matplotlib_state(real_run, tmp_path):
    """No pyplot, no changed rcParams: the report can run inside someone else's program."""
    # (reading rcParams["backend"] would itself import pyplot: compare the keys the charts style)
    code = ("import json, sys, matplotlib\n"
            "from taskrace.reporting import plots\n"
            "before = {k: matplotlib.rcParams[k] for k in plots.STYLE}\n"
            "from taskrace.reporting.html_report import write_report\n"
            f"write_report(json.load(open({str(real_run['results'])!r})), {str(tmp_path)!r})\n"
            "print('pyplot' if 'matplotlib.pyplot' in sys.modules else 'no pyplot')\n"
            "after = {k: matplotlib.rcParams[k] for k in plots.STYLE}\n"
            "print('same rc' if after == before else 'rc changed')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["no", "pyplot", "same", "rc"]


# --- bad result files: one line, exit 2 --------------------------------------------------------

BAD_FILES = {
    "missing": None,
    "empty": "",
    "blank": "  \n\n",
    "malformed": '{"schema": "taskrace.results/1", "runs": [',
    "not-an-object": "[1, 2, 3]",
    "other-schema": '{"schema": "something.else/2", "runs": []}',
    "no-runs": '{"schema": "taskrace.results/1", "runs": []}',
    "run-missing-keys": '{"schema": "taskrace.results/1", "runs": [{"scenario": "bank"}]}',
}


@pytest.fixture(scope="module")
def bad_file_reports(tmp_path_factory):
    """``taskrace report`` on each of BAD_FILES, the commands side by side (each its own file
    and output directory): kind -> (file, output directory, the finished command)."""
    base = tmp_path_factory.mktemp("bad-files")
    files = {}
    for kind, text in BAD_FILES.items():
        files[kind] = (base / kind / f"{kind}.json", base / kind / "out")
        files[kind][0].parent.mkdir()
        if text is not None:
            files[kind][0].write_text(text)
    with ThreadPoolExecutor(len(files)) as pool:
        procs = {kind: pool.submit(cli, "report", str(path), "-o", str(out)) for kind, (path, out) in files.items()}
    return {kind: (*files[kind], procs[kind].result()) for kind in files}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_results_file_is_one_line_and_exit_2(bad_file_reports, kind):
    path, out, proc = bad_file_reports[kind]
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = stderr_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("taskrace: error:") and str(path) in lines[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists()  # nothing half-written


def test_report_needs_a_file_argument():
    proc = cli("report")
    assert proc.returncode == 2
    assert len(stderr_lines(proc)) == 1 and "Traceback" not in proc.stderr


def test_report_into_an_unwritable_place_is_one_line(real_run, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    proc = cli("report", str(real_run["results"]), "-o", str(blocker / "report"))
    assert proc.returncode == 2, proc.stderr
    assert len(stderr_lines(proc)) == 1 and "Traceback" not in proc.stderr


# --- compare A.json B.json: what changed, against the spread of the repeats ----------------------

def _diff(a: Path, b: Path) -> subprocess.CompletedProcess:
    return cli("compare", str(a), str(b))


def test_diff_of_a_file_with_itself_changes_nothing(real_run):
    proc = _diff(real_run["results"], real_run["results"])
    assert proc.returncode == 0, proc.stderr
    n = len(real_run["doc"]["runs"])
    assert f"{n} points in both files; 0 changed beyond the spread of their repeats" in proc.stdout
    assert "CPU capacity (measured, x one CPU): A " in proc.stdout


def test_diff_calls_a_change_real_only_beyond_the_spread(real_run, tmp_path):
    doc = copy.deepcopy(real_run["doc"])
    slower = next(r for r in doc["runs"] if r["scenario"] == "power-cpu" and r["backend"] == "processes")
    nudged = next(r for r in doc["runs"] if r is not slower and r["wall"]["max"] > r["wall"]["min"])
    # Every repeat slower by a factor beyond the point's own spread (its slowest repeat
    # times three): the new fastest is slower than the old slowest, the ranges cannot overlap.
    factor = 3 * slower["wall"]["max"] / slower["wall"]["min"]
    before = slower["wall_s"]
    slower["wall_s"] *= factor
    slower["wall"] = {k: v * factor if k in ("median", "min", "max") else v for k, v in slower["wall"].items()}
    nudged["wall_s"] = nudged["wall"]["max"]  # moved, but inside its own min-max: noise
    del doc["environment"]["cpu_capacity"]
    b = tmp_path / "b.json"
    b.write_text(json.dumps(doc))
    proc = _diff(real_run["results"], b)
    assert proc.returncode == 0, proc.stderr
    assert f"{len(doc['runs'])} points in both files; 1 changed beyond the spread" in proc.stdout
    assert f"{slower['wall_s'] / before - 1:+.1%}" in proc.stdout  # the change, as diff computes it
    assert "B not measured" in proc.stdout


def test_diff_needs_two_readable_files(real_run, tmp_path):
    missing = tmp_path / "missing.json"
    for argv in ([str(real_run["results"])], [str(real_run["results"]), str(missing)]):
        proc = cli("compare", *argv)
        assert proc.returncode == 2, proc.stdout
        assert len(stderr_lines(proc)) == 1 and "Traceback" not in proc.stderr


# --- the statistics, on known data --------------------------------------------------------------

def test_spread_median_min_max_mad():
    s = spread([3.0, 1.0, 2.0, 10.0])
    assert s == {"median": 2.5, "min": 1.0, "max": 10.0, "mad": 1.0, "n": 4}
    # odd count, None ignored: deviations from 5 are 4, 0, 1, 5, 0 -> MAD 1
    assert spread([1, 5, None, 6, 10, 5]) == {"median": 5, "min": 1, "max": 10, "mad": 1, "n": 5}
    assert spread([7.5]) == {"median": 7.5, "min": 7.5, "max": 7.5, "mad": 0.0, "n": 1}
    assert spread([]) is None and spread([None]) is None


def test_percentile_interpolates_between_ranks():
    values = list(range(101, 0, -1))  # 1..101, unsorted on purpose
    assert percentile(values, 0) == 1 and percentile(values, 100) == 101
    assert percentile(values, 50) == 51 and percentile(values, 95) == 96 and percentile(values, 99) == 100
    assert percentile([10, 20], 50) == 15
    assert percentile([10, 20], 95) == pytest.approx(19.5)
    assert percentile([4.0], 99) == 4.0
    assert percentile([], 50) is None and percentile([None, None], 50) is None


def test_percentiles_summary():
    p = percentiles([0.004, 0.001, 0.002, 0.003, None, 0.005])
    assert p["n"] == 5 and p["max"] == 0.005
    assert p["p50"] == pytest.approx(0.003)
    assert p["p95"] == pytest.approx(0.0048)
    assert p["p99"] == pytest.approx(0.00496)
    assert percentiles([]) is None


def test_karp_flatt_on_known_points():
    assert karp_flatt(4.0, 4) == pytest.approx(0.0)   # ideal: no serial part
    assert karp_flatt(1.0, 2) == pytest.approx(1.0)   # no gain: all serial
    assert karp_flatt(1.6, 2) == pytest.approx(0.25)  # (1/1.6 - 1/2) / (1 - 1/2)
    assert karp_flatt(2.2, 2) < 0                     # superlinear
    assert karp_flatt(0.5, 2) > 1                     # slower with more workers
    assert karp_flatt(3.0, 1) is None and karp_flatt(0, 4) is None and karp_flatt(None, 4) is None


@pytest.mark.parametrize("f", [0.0, 0.05, 0.2, 0.5, 1.0])
def test_amdahl_fit_recovers_f_from_exact_data(f):
    points = [(p, amdahl_speedup(f, p)) for p in (1, 2, 4, 8, 16, 64)]
    assert amdahl_fit(points) == pytest.approx(f, abs=1e-12)
    for p, s in points[1:]:  # on exact Amdahl data, Karp-Flatt is f at every p
        assert karp_flatt(s, p) == pytest.approx(f, abs=1e-12)


def test_amdahl_fit_is_least_squares_and_skips_useless_points():
    assert amdahl_fit([(1, 1.0)]) is None            # n = 1 says nothing about f
    assert amdahl_fit([]) is None
    assert amdahl_fit([(2, 0), (4, None)]) is None   # no speedup measured
    assert amdahl_fit([(1, 0.9), (4, amdahl_speedup(0.1, 4))]) == pytest.approx(0.1)
    # two points disagreeing: x = 1 - 1/p, y = 1/S - 1/p; f = sum(xy) / sum(x^2)
    pts = [(2, 1.6), (4, 2.0)]
    xs = [1 - 1 / p for p, _ in pts]
    ys = [1 / s - 1 / p for p, s in pts]
    expected = sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs)
    assert amdahl_fit(pts) == pytest.approx(expected)
    assert karp_flatt(1.6, 2) < amdahl_fit(pts) < karp_flatt(2.0, 4)


def test_amdahl_speedup_limits():
    assert amdahl_speedup(0.0, 8) == pytest.approx(8)
    assert amdahl_speedup(1.0, 8) == pytest.approx(1)
    assert amdahl_speedup(0.1, 10) == pytest.approx(1 / 0.19)
    assert amdahl_speedup(0.1, 10**9) == pytest.approx(10, rel=1e-6)  # the 1/f ceiling
    assert all(amdahl_speedup(0.25, p) <= p for p in range(1, 50))
    assert math.isclose(amdahl_speedup(0.3, 1), 1.0)
