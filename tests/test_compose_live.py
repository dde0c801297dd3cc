"""The lab's live profile (`docker compose --profile live up`) on a real Docker engine, in a
real browser (Chromium driven by Playwright, tests/browser.py).

No bring-up of its own: the session's lab (fixture ``compose_lab``, conftest.py) runs with
the profile on, so the `live` service followed the lab's run from its start, and the lab's
run, seeing a live view follow, asked its worker containers for their task events. The
page must show the lab's points and the tasks those containers ran; the service must be
published on 127.0.0.1 only, answer nothing but GET, keep the broker's password out of its
argv, logs and page, and run hardened like the other services.
"""
from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker  # needs a Docker engine (pyproject.toml: markers)

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import browser as chromium  # noqa: E402 - Playwright driving Debian's chromium (tests/browser.py)
from docker_helpers import sh, wait_healthy  # noqa: E402


PAGE_TIMEOUT_MS = 60_000  # a hang guard: the page replays the whole lab from the server's state


def _request(url: str, method: str = "GET") -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method, data=b"" if method != "GET" else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_live_profile_shows_the_labs_tasks_from_the_worker_containers(compose_lab, browser):
    lab = compose_lab
    assert lab.lab_exit == 0, lab.lab_log[-3000:]
    [live] = lab.containers("live", all=False)
    wait_healthy(live)

    # Published on the loopback interface only, on LIVE_PORT.
    host = live.attrs["HostConfig"]
    assert host["PortBindings"] == {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(lab.live_port)}]}, host
    ports = sh(["docker", "port", live.id], timeout=30).stdout.split("\n")
    assert [p for p in ports if p.strip()] == [f"8000/tcp -> 127.0.0.1:{lab.live_port}"], ports
    # Hardened like the other services: no capabilities, no escalation, read-only, init, not root.
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd"), host
    assert "no-new-privileges:true" in host["SecurityOpt"] and host["ReadonlyRootfs"] is True and host["Init"]
    assert not host.get("Binds") and not host.get("Privileged")
    code, uid = live.exec_run(["id", "-u"])
    assert code == 0 and uid.decode().strip() not in ("", "0"), uid
    # The broker's password only in its environment: not in argv (docker top = ps), logs, page.
    argv = " ".join(row[-1] for row in live.top()["Processes"])
    assert "env:TASKRACE_BROKER_URL" in argv and lab.password not in argv, argv
    logs = live.logs().decode(errors="replace")
    assert "following redis://:***@redis:6379/0" in logs and lab.password not in logs, logs[-2000:]
    assert lab.password not in lab.lab_log

    url = f"http://127.0.0.1:{lab.live_port}/"
    # Read-only: every route answers GET, and refuses POST.
    for path in ("", "state", "stream", "static/live.js", "favicon.ico"):
        code, _ = _request(url + path, "POST")
        assert code == 405, (path, code)
    code, body = _request(url + "state")
    assert code == 200
    summary = json.loads(body)
    assert summary["events"] > 0, summary
    code, html = _request(url)
    assert code == 200 and lab.password.encode() not in html and b"redis://:***@redis:6379/0" in html

    page = browser.new_page(viewport={"width": 1280, "height": 1600})
    errors: list[str] = []
    requested: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requested.append(r.url))
    try:
        page.goto(url)
        doc = json.loads((lab.results / "compare.json").read_text())
        # Every point of the lab's run shows as done (the page replays it from its start).
        page.wait_for_function(f"() => +document.querySelector('#points-done').dataset.n >= {len(doc['runs'])}",
                               timeout=PAGE_TIMEOUT_MS)
        page.wait_for_timeout(500)  # one more batch: the lanes are drawn at most 5 times a second
        seen = page.eval_on_selector("#tasks-seen", "e => +e.dataset.n")
        lanes = page.eval_on_selector_all(".lane", "els => els.map(e => ({backend: e.dataset.backend, "
                                                   "tasks: +e.dataset.tasks}))")
        # The CPU chart: sampled by the lab's relay while this view follows.
        cpu_shown = page.eval_on_selector("#cpu-section", "e => !e.hidden")
        holders = page.eval_on_selector_all("#holders tbody tr",
                                            "trs => trs.map(tr => [...tr.cells].map(td => td.textContent))")
        shot = chromium.screenshot(page, "compose-live")
    finally:
        page.close()

    assert errors == [], errors
    assert all(u.startswith(url) for u in requested), [u for u in requested if not u.startswith(url)]
    assert seen > 0 and cpu_shown
    # The lab's points: a lane per backend it ran, celery's with tasks finished on the page.
    assert {r["backend"] for r in doc["runs"]} <= {lane["backend"] for lane in lanes}, lanes
    assert [lane for lane in lanes if lane["backend"] == "celery" and lane["tasks"] > 0], lanes
    # ... run by the worker containers: the nodes the page names are those that ran the lab.
    on_page = {worker.rsplit(":", 1)[0] for worker, _, done in holders
               if worker.startswith("worker@") and int(done) > 0}
    assert on_page and on_page <= lab.worker_nodes, (on_page, lab.worker_nodes)
    assert shot.stat().st_size > 0
