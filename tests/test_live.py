"""The live view in a real browser (Chromium driven by Playwright), on real runs.

One ``compare --live`` is shared by most checks (starting runs is what costs): a page
opened at the start watches the lanes fill *during* the run, a second page joins
mid-run, the first is reloaded mid-run, a third is closed mid-run, and a client that
never reads hangs on the stream throughout; at the end both pages show the JSON
record's numbers and the run has ended cleanly with its port free.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psutil
import pytest

from browser import port_is_free, screenshot  # the fixture `browser` comes from conftest
from conftest import REPO_ROOT, cli

RUN_TIMEOUT = 240  # a hang guard, not a measurement


def start(*args: str) -> tuple[subprocess.Popen, str]:
    """``taskrace ARGS --live`` (the URL on stderr: stdout is the run's data) or
    ``taskrace live ...`` (the URL is its output): the process and the URL."""
    env = dict(os.environ, COLUMNS="200", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "taskrace", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=env)
    line = (proc.stdout if args[0] == "live" else proc.stderr).readline()
    found = re.search(r"live view: (http://\S+)", line)
    if not found:
        proc.kill()
        pytest.fail(f"no live view URL: {line!r} {proc.communicate()[1][-2000:]}")
    return proc, found.group(1)


def finish(proc: subprocess.Popen) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"the run did not end within {RUN_TIMEOUT} s")


def wait_until(page, js: str, timeout: float = 30.0) -> None:
    """Until ``js`` is true in ``page`` (polled from here: Playwright's wait_for_function
    evaluates its predicate with eval, which the page's Content-Security-Policy forbids)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(js):
        if time.monotonic() > deadline:
            pytest.fail(f"the page never showed {js}")
        time.sleep(0.1)


def seen(page) -> int:
    return page.eval_on_selector("#tasks-seen", "e => +e.dataset.n")


def hang_on_stream(url: str) -> socket.socket:
    """A client that asks for the stream and never reads a byte of it."""
    host, port = re.match(r"http://([^:/]+):(\d+)/", url).groups()
    s = socket.create_connection((host, int(port)))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(f"GET /stream HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
    return s


@pytest.fixture(scope="module")
def live_compare(browser, tmp_path_factory):
    out = tmp_path_factory.mktemp("live")
    results, log = out / "results.json", out / "events.jsonl"
    proc, url = start("compare", "--scenario", "power-io,bank", "-b", "sequential,threads,processes", "-n", "2",
                      "--repeat", "1", "--warmup", "0", "--set", "power-io.tasks=8", "--set", "power-io.sleep=0.2",
                      "--strategy", "none,lock", "--no-progress", "--live",
                      "--json", str(results), "--events", str(log))
    port = int(url.rsplit(":", 1)[1].strip("/"))
    hung = hang_on_stream(url)
    requested: list[str] = []
    a = browser.new_page(viewport={"width": 1200, "height": 1400})
    errors: list[str] = []
    a.on("pageerror", lambda e: errors.append(str(e)))
    a.on("request", lambda r: requested.append(r.url))
    a.goto(url)
    observations, b, c, reloaded_at = [], None, None, None
    children: set[int] = set()
    while proc.poll() is None:
        try:
            children |= {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            pass
        n = seen(a)
        running = a.eval_on_selector("#status", "e => e.dataset.state") == "running"
        observations.append((n, running))
        if n and b is None:
            b = browser.new_page(viewport={"width": 1200, "height": 1400})
            b.on("request", lambda r: requested.append(r.url))
            b.goto(url)
            c = browser.new_page()
            c.goto(url)
        elif b is not None and reloaded_at is None and n > observations[0][0] + 4:
            reloaded_at = n
            a.reload()
            c.close()
        time.sleep(0.25)
    stdout, stderr = finish(proc)
    for page in (a, b):
        if page is not None:
            wait_until(page, "document.getElementById('status').dataset.state === 'ended'")
            wait_until(page, "!document.getElementById('table-section').hidden")
    shot = screenshot(a, "live-compare")
    yield {"proc": proc, "stdout": stdout, "stderr": stderr, "url": url, "port": port, "pages": (a, b),
           "observations": observations, "reloaded_at": reloaded_at, "errors": errors, "requested": requested,
           "results": json.loads(results.read_text()), "log": log, "children": children, "hung": hung,
           "screenshot": shot}
    hung.close()
    for page in (a, b):
        if page is not None:
            page.close()


def test_lanes_fill_during_the_run(live_compare):
    # The count of drawn tasks grows over at least three observations before the end.
    during = [n for n, running in live_compare["observations"] if running]
    growth = sorted(set(during))
    assert len(growth) >= 4 and growth[0] < growth[-1], live_compare["observations"]
    assert live_compare["reloaded_at"], "the first page was never reloaded mid-run"
    assert live_compare["errors"] == []


def test_pages_end_with_the_records_numbers(live_compare):
    from taskrace.reporting.columns import rate, seconds

    records = live_compare["results"]["runs"]
    finished = sum(1 for line in live_compare["log"].read_text().splitlines()
                   if json.loads(line)["kind"] == "task.finished")
    assert finished > len(records)
    for page in live_compare["pages"]:  # the reloaded page and the one opened mid-run alike
        assert seen(page) == finished
        rows = page.eval_on_selector_all("#points tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
        assert len(rows) == len(records)
        by_point = {(r[1], r[2], r[3]): r for r in rows}
        for rec in records:
            label = rec["scenario"] if rec["scenario"] != "bank" else f"bank {rec['params']['strategy']}"
            row = next(v for (scenario, backend, n), v in by_point.items()
                       if backend == rec["backend"] and n == str(rec["workers"]) and scenario.startswith(label))
            assert row[4] == seconds(rec["wall_s"])
            assert row[5] == rate(rec["throughput_per_s"])
        bars = page.eval_on_selector("#lanes", "e => +e.dataset.bars")
        assert bars == finished
        backends = set(page.eval_on_selector_all(".lane", "ls => ls.map(l => l.dataset.backend)"))
        assert backends == {"sequential", "threads", "processes"}
        table = page.inner_text("#final-table")
        for rec in records:
            assert seconds(rec["wall_s"]) in table


def test_bank_money_drawn_against_the_plan(live_compare):
    page = live_compare["pages"][0]
    off = page.eval_on_selector("#money-notes", "e => +e.dataset.violations")
    log = [json.loads(line) for line in live_compare["log"].read_text().splitlines()]
    samples = [e for e in log if e["kind"] == "money.sample"]
    assert samples and off == sum(1 for e in samples if e["total"] != e["expected"])
    assert off > 0  # the unsafe strategy lost updates on threads or processes: the lesson


def test_the_run_ends_cleanly_with_a_hung_client(live_compare):
    proc = live_compare["proc"]
    assert proc.returncode == 0, live_compare["stderr"][-2000:]
    assert port_is_free(live_compare["port"])
    left = [pid for pid in live_compare["children"] if psutil.pid_exists(pid)
            and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert left == []
    assert "taskrace compare" in live_compare["stdout"]


def test_nothing_loads_from_the_network(live_compare):
    origin = live_compare["url"].rstrip("/")
    assert live_compare["requested"]
    assert all(u.startswith(origin + "/") for u in live_compare["requested"]), live_compare["requested"]


def test_replay_shows_the_same_run(browser, live_compare):
    proc, url = start("live", str(live_compare["log"]), "--speed", "0")
    try:
        page = browser.new_page()
        page.goto(url)
        wait_until(page, "document.getElementById('status').dataset.state === 'ended'")
        assert seen(page) == seen(live_compare["pages"][0])
        assert page.inner_text("#final-table") == live_compare["pages"][0].inner_text("#final-table")
        # read-only: nothing accepts a change
        for path in ("/", "/stream", "/state"):
            req = urllib.request.Request(url.rstrip("/") + path, data=b"x", method="POST")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(req, timeout=10)
            assert refused.value.code == 405
        page.close()
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = finish(proc)
    assert proc.returncode == 0, err
    assert port_is_free(int(url.rsplit(":", 1)[1].strip("/")))


def test_ctrl_c_during_a_live_run_stops_everything(browser):
    proc, url = start("run", "power-io", "-b", "processes", "-n", "2", "--tasks", "40", "--sleep", "0.5", "--live")
    page = browser.new_page()
    page.goto(url)
    wait_until(page, "+document.getElementById('tasks-seen').dataset.n > 0", timeout=60)
    children = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    assert children, "a process pool should be running"
    proc.send_signal(signal.SIGINT)
    out, err = finish(proc)
    page.close()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert port_is_free(int(url.rsplit(":", 1)[1].strip("/")))
    deadline = time.monotonic() + 30
    while any(psutil.pid_exists(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in children if psutil.pid_exists(pid)]


def test_faults_live_shows_the_lost_operation(browser, tmp_path):
    results = tmp_path / "faults.json"
    proc, url = start("faults", "--fault", "kill-worker", "--mode", "at-most-once", "--no-contrast", "--ops", "20",
                      "--no-progress", "--live", "--json", str(results))
    page = browser.new_page(viewport={"width": 1200, "height": 1200})
    page.goto(url)
    out, err = finish(proc)
    assert proc.returncode == 0, err
    wait_until(page, "!!document.querySelector('.fault') && document.querySelector('.fault').dataset.kept !== ''")
    record = json.loads(results.read_text())["runs"][0]
    fault = page.eval_on_selector(".fault", "e => ({lost: +e.dataset.lost, dup: +e.dataset.duplicated, "
                                            "kept: e.dataset.kept, text: e.innerText})")
    assert record["counts"]["lost"] >= 1  # at-most-once loses the victim: the lesson
    assert fault["lost"] == record["counts"]["lost"] and fault["dup"] == record["counts"]["duplicated"]
    assert fault["kept"] == str(record["kept"]).lower()
    assert record["victims"][0] in fault["text"]
    assert seen(page) > 0 and page.eval_on_selector("#lost", "e => +e.dataset.n") == record["counts"]["lost"]
    screenshot(page, "live-faults")
    page.close()


@pytest.mark.parametrize("args, says", [
    (["run", "power-io", "--live", "70000"], "a port is 0-65535"),
    (["run", "power-io", "--live", "http"], "expected a port number"),
    (["live", "/nonexistent/events.jsonl"], "cannot read /nonexistent/events.jsonl"),
    (["live", "redis://:s3cret-pw@127.0.0.1:1/0"], "cannot reach redis://:***@127.0.0.1:1/0"),
    (["live", str(REPO_ROOT / "README.md")], "is not a taskrace event"),
])
def test_bad_input_is_one_line(args, says):
    proc = cli(*args)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and says in lines[0], proc.stderr
    assert "s3cret-pw" not in proc.stderr + proc.stdout


def test_a_taken_port_is_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        proc = cli("run", "power-io", "-b", "threads", "--live", str(s.getsockname()[1]))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "cannot listen on" in lines[0], proc.stderr


def test_events_and_pages_carry_no_secret():
    from taskrace.events import Event
    from taskrace.live.state import LiveState

    state = LiveState()
    state.add(Event("run.start", 1.0, {"command": "run"}))
    state.add(Event("status", 2.0, {"text": "broker redis://:hunter2@redis:6379/0 up"}))
    lines, _, _ = state.since(0, state.generation)
    assert "hunter2" not in "".join(lines) and "redis://:***@redis:6379/0" in "".join(lines)


def test_the_library_takes_live_too(capfd):
    import taskrace

    r = taskrace.run("power-io", backend="threads", workers=2, sleep=0.01, live=True)
    url = re.search(r"live view: (http://\S+)", capfd.readouterr().err).group(1)
    assert r.ok and r.records[0]["tasks"] > 0
    assert port_is_free(int(url.rsplit(":", 1)[1].strip("/")))  # the call ended, so did its page's server
    with pytest.raises(taskrace.InputError, match="a port is 0-65535"):
        taskrace.run("power-io", live=70000)


def test_the_relay_sends_cpu_and_task_events_only_while_a_view_follows():
    # The lab's live service sees the run only through the Redis stream: while it follows,
    # the relay adds the machine's CPU samples (the page's CPU chart) and the per-task
    # events; when nobody follows, neither reaches the stream (a lab measures as before).
    import threading

    from celery_fixtures import require_redis_binary
    from taskrace import events
    from taskrace.live import relay
    from workers.infra.redis_server import EmbeddedRedis

    require_redis_binary()
    server = EmbeddedRedis().start()
    try:
        def kinds_on_the_stream() -> list[str]:
            client = relay._connect(server.url)
            try:
                return [json.loads(f[b"e"])["kind"] for _, f in client.xrange(relay.STREAM_KEY)]
            finally:
                client.close()

        def emit_for(seconds: float) -> None:
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                events.emit("task.finished", index=0, ok=True)
                events.emit("status", text="tick")
                time.sleep(0.05)

        with relay.RedisRelay(server.url):
            emit_for(1.5)
        alone = kinds_on_the_stream()
        assert "status" in alone and "cpu.sample" not in alone and "task.finished" not in alone, set(alone)

        heard, stop = [], threading.Event()
        follower = threading.Thread(target=relay.follow, args=(server.url, heard.append, stop), daemon=True)
        follower.start()
        try:
            time.sleep(0.5)  # the follower's key is set
            with relay.RedisRelay(server.url):
                emit_for(2.5)
            time.sleep(1)  # the follower reads the last batch
        finally:
            stop.set()
            follower.join(5)
        kinds = [e.kind for e in heard]
        assert kinds.count("cpu.sample") >= 2 and "task.finished" in kinds, sorted(set(kinds))
        sample = next(e for e in heard if e.kind == "cpu.sample")
        assert 0 <= sample.data["percent"] <= 100 and len(sample.data["cores"]) == psutil.cpu_count()
    finally:
        server.stop()
