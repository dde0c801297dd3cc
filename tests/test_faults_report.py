"""The fault lab's report: timeline charts (PNG + SVG) and one HTML page, from a real fault run.

The document is built the way ``taskrace faults --json`` builds it, from one real run
(kill-worker under at-least-once: real Celery workers on an embedded Redis, ~10 s) plus
one hand-made jobs run counted by the real checker, so both a money axis and its absence,
a shaded window and an instant fault are drawn. Locally without redis-server the real
run skips; in CI (CI=true) it fails instead.
"""
from __future__ import annotations

import copy
import html
import json
import xml.etree.ElementTree as ET

import matplotlib.image
import pytest

try:
    from celery_fixtures import require_redis_binary
    from conftest import cli, stderr_lines
except ImportError:  # tests/ imported as a package
    from tests.celery_fixtures import require_redis_binary
    from tests.conftest import cli, stderr_lines

from taskrace.faultlab import report
from taskrace.faultlab.checker import count_against_plan, summary
from taskrace.faultlab.document import document
from workers.delivery import MODES

SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def real_record() -> dict:
    require_redis_binary()
    from taskrace.faultlab.run import FaultSpec, run_fault

    record = run_fault(FaultSpec("kill-worker", "at-least-once", ops=12, work_s=0.2))
    assert record["fired"], record["verdict"]  # a run whose fault never fired draws no window
    return record


def jobs_record(base: dict) -> dict:
    """A kill-child run of the jobs workload under at-most-once that lost job j3: the
    counts and summary come from the real checker, the shape from a real record."""
    ops = [{"op": f"j{k}", "deltas": []} for k in range(6)]
    applied = {op["op"]: 1 for op in ops if op["op"] != "j3"}
    counts = count_against_plan(ops, applied, [], [])
    r = copy.deepcopy(base)
    r.update(fault="kill-child", mode="at-most-once", workload="jobs", counts=counts, kept=True,
             summary=summary(counts, money=False), verdict="kept: may lose a task, never runs one twice",
             delivery=MODES["at-most-once"].describe(), worker_lost_errors=1, victims=["j3"],
             fired=True, fired_at_s=0.35, healed_at_s=0.35, fault_window=[0.35, 0.35],
             recovery={"victim_applied_s": None, "progress_resumed_s": 0.1, "fault_held_s": 0.0},
             timeline={"columns": ["t_s", "ops_applied", "executions", "money_moved"],
                       "points": [[0.1 * (i + 1), i + 1, i + 1, 0] for i in range(5)], "money_planned": 0})
    return r


CONTRAST = {"store": "multiprocessing", "fault": "kill-holder", "kept": False, "broken": ["progress"],
            "increments": 5, "planned": 20, "lost_updates": 0, "max_holders_at_once": 1,
            "promise": "multiprocessing.Lock: nothing frees it if the holder dies.",
            "summary": "holder killed inside the lock: lock never released; deadlock detected after 2.0 s"}


@pytest.fixture(scope="module")
def doc(real_record) -> dict:
    return json.loads(json.dumps(document([real_record, jobs_record(real_record)], [CONTRAST])))


@pytest.fixture(scope="module")
def written(doc, tmp_path_factory):
    out = tmp_path_factory.mktemp("faults-report")
    return out, report.write_report(doc, str(out))


def test_writes_the_page_and_a_timeline_per_fault(written):
    out, page = written
    assert page == str(out / "index.html")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["index.html", "timeline-kill-child.png", "timeline-kill-child.svg",
                     "timeline-kill-worker.png", "timeline-kill-worker.svg"]


def test_pngs_are_real_pictures(written):
    out, _ = written
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 20_000, png  # lines, text and a legend, not an empty canvas
        pixels = matplotlib.image.imread(str(png))
        assert pixels.shape[1] == 1200 and pixels.shape[0] >= 300, pixels.shape
        assert len({tuple(p) for p in pixels.reshape(-1, pixels.shape[2])[::97]}) > 10  # not one flat colour


def test_page_names_every_run_and_its_settings(written, doc):
    _, page = written
    text = open(page, encoding="utf-8").read()
    for r in doc["runs"]:
        for value in (r["fault"], r["mode"], r["summary"], r["verdict"]):
            assert html.escape(value) in text, value
        for key, value in (r["delivery"]["celery_settings"] | r["delivery"]["broker_transport_options"]).items():
            assert f"{key} = {json.dumps(value)}" in text, key
        assert html.escape(r["delivery"]["promise"]) in text
    assert "Celery defaults" in text  # at-most-once sets nothing, and the page says so
    assert html.escape(CONTRAST["summary"]) in text
    assert doc["environment"]["python"] in text
    # self-contained: the charts are data: URIs, nothing is fetched, nothing runs
    assert text.count('src="data:image/png;base64,') == 2
    assert "http://" not in text and "https://" not in text and "<script" not in text


def test_fault_window_is_shaded_and_an_instant_is_a_line(written, real_record):
    out, _ = written
    shaded = ET.parse(out / "timeline-kill-worker.svg").getroot()
    groups = {g.get("id"): g for g in shaded.iter(f"{SVG_NS}g")}
    fired, healed = real_record["fault_window"]
    assert healed > fired
    assert list(groups["fault-window-at-least-once"].iter(f"{SVG_NS}path")), "the window's patch is empty"
    instant = ET.parse(out / "timeline-kill-child.svg").getroot()
    ids = {g.get("id") for g in instant.iter(f"{SVG_NS}g")}
    assert "fault-instant-at-most-once" in ids and not any(i and i.startswith("fault-window") for i in ids)


def _artists(fig, gid: str) -> list:
    return [a for ax in fig.axes for a in ax.get_children() if a.get_gid() == gid]


def test_the_band_spans_the_fault_window(real_record):
    fig = report.timeline_figure([real_record])
    fig.canvas.draw()
    (band,) = _artists(fig, "fault-window-at-least-once")
    box = band.get_window_extent(fig.canvas.get_renderer())
    x0, x1 = band.axes.transData.inverted().transform([[box.x0, 0], [box.x1, 0]])[:, 0]
    assert (x0, x1) == pytest.approx(tuple(real_record["fault_window"]), abs=1e-3)


def test_lines_end_where_the_counts_say(real_record):
    """The timeline (the ledger's log) and the counts (the ledger's tallies) tell one story."""
    c, tl = real_record["counts"], real_record["timeline"]
    fig = report.timeline_figure([real_record])
    (applied,) = _artists(fig, "ops-applied")
    (executions,) = _artists(fig, "executions")
    (money,) = _artists(fig, "money-moved")
    assert applied.get_ydata()[-1] == c["planned"] - c["lost"]
    assert executions.get_ydata()[-1] == len(tl["points"])
    assert money.get_ydata()[-1] == tl["money_planned"] - c["money_missing"] + c["money_created"]
    assert applied.get_ydata()[0] == executions.get_ydata()[0] == money.get_ydata()[0] == 0


def test_jobs_move_no_money_so_no_money_axis(real_record):
    assert len(report.timeline_figure([real_record]).axes) == 2  # the panel and its money axis
    jobs = report.timeline_figure([jobs_record(real_record)])
    assert len(jobs.axes) == 1 and not _artists(jobs, "money-moved")


def test_text_from_the_file_is_escaped(doc, tmp_path):
    evil = copy.deepcopy(doc)
    run = evil["runs"][0]
    run["summary"] = "<script>alert('x')</script> & co"
    run["verdict"] = "kept: <b>bold</b>"
    run["fault_info"] = {"node": "<img src=x>"}
    evil["contrast"][0]["summary"] = "<iframe>"
    text = open(report.write_report(evil, str(tmp_path)), encoding="utf-8").read()
    for raw in ("<script", "<b>bold", "<img src=x>", "<iframe>"):
        assert raw not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co" in text
    assert "&lt;img src=x&gt;" in text


def test_taskrace_report_renders_a_faults_file(doc, tmp_path):
    path = tmp_path / "faults.json"
    path.write_text(json.dumps(doc))
    out = tmp_path / "out"
    proc = cli("report", str(path), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert (out / "index.html").is_file() and (out / "timeline-kill-worker.png").is_file()
    assert str(out / "index.html") in proc.stdout
    assert "taskrace fault lab" in (out / "index.html").read_text(encoding="utf-8")


BAD = {
    "missing": None,
    "no-runs": '{"schema": "taskrace.faults/1", "runs": []}',
    "no-timeline": '{"schema": "taskrace.faults/1", "runs": [{"fault": "kill-worker", "mode": "at-least-once", '
                   '"counts": {}}]}',
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_faults_file_is_one_line_and_exit_2(tmp_path, kind):
    path = tmp_path / f"{kind}.json"
    if BAD[kind] is not None:
        path.write_text(BAD[kind])
    out = tmp_path / "out"
    proc = cli("report", str(path), "-o", str(out))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = stderr_lines(proc)
    assert len(lines) == 1 and lines[0].startswith("taskrace: error:") and str(path) in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
