"""The lab's notebook profile (`docker compose --profile notebook up`) on a real Docker
engine: JupyterLab in the lab's image, on the lab's network, over the notebooks folder.

No lab of its own: the session's lab (fixture ``compose_lab``, conftest.py) already runs
its workers with the notebooks folder mounted (a temporary one, NOTEBOOKS_DIR), and this
module starts the `notebook` service on that same project (`--profile notebook up -d
--no-deps notebook`); the `lab_down` test's `down -v` removes it with the rest (and the
fixture's sweep, whatever happened). Then, as a student would: the server answers on
127.0.0.1 only, with the token its log shows once and not without it; the token is
nowhere in the image's or the container's configuration or argv; a notebook runs in the
server's own kernel (REST + the kernel's websocket, as JupyterLab does): it writes a
module into the notebooks folder (which lands on the host) and races its function on
the lab's worker containers, whose answers equal sequential's.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker  # needs a Docker engine (pyproject.toml: markers)

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from docker_helpers import base_env, compose_tools, sh, unavailable, wait_healthy  # noqa: E402
from taskrace.lab.cluster import node_name  # noqa: E402

SMOKE = REPO_ROOT / "tests" / "data" / "lab-smoke.ipynb"
TOKEN_LINE = re.compile(r"taskrace-notebook: JupyterLab on http://127\.0\.0\.1:(\d+)/lab\?token=([0-9a-f]{48})$")
CELL_TIMEOUT = 180  # a hang guard: the race waits for the lab's workers, never this long


def _request(url: str, token: str | None = None, method: str = "GET", body: dict | None = None):
    """(status, parsed JSON or text) of one request; redirects are not followed."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    headers = {"Authorization": f"token {token}"} if token else {}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=30) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def test_the_profile_is_opt_in_with_each_compose():
    tools = compose_tools()
    if not tools:
        unavailable("neither docker compose nor docker-compose is installed")
    env = base_env()
    for version, tool in tools.items():
        with_profile = sh([*tool, "--profile", "notebook", "config"], env=env, timeout=60).stdout
        assert "taskrace-notebook" in with_profile and "127.0.0.1" in with_profile, (version, with_profile)
        if version == "v2":  # v1 lists every service whatever the profile; v2 filters
            assert "notebook" not in sh([*tool, "config", "--services"], env=env, timeout=60).stdout.split()


@pytest.fixture(scope="module")
def notebook(compose_lab):
    """The `notebook` service started on the session's lab: (stack, container, token).
    Stopped at the end of the module (nothing runs beside the lab's later tests); the
    `lab_down` test's `down -v` removes it with the rest of the stack."""
    lab = compose_lab
    t0 = time.monotonic()
    lab.compose("--profile", "notebook", "up", "-d", "--no-deps", "notebook", timeout=180)
    try:
        [container] = lab.containers("notebook", all=False)
        wait_healthy(container)
        print(f"notebook service healthy in {time.monotonic() - t0:.1f} s")
        lines = [line for line in container.logs().decode(errors="replace").splitlines() if "token=" in line]
        mine = [m for m in map(TOKEN_LINE.search, lines) if m]
        assert len(mine) == 1, lines
        port, token = mine[0].groups()
        assert int(port) == lab.notebook_port, (port, lab.notebook_port)
        yield lab, container, token
    finally:
        lab.compose("--profile", "notebook", "stop", "--timeout", "5", "notebook", timeout=120, check=False)


def test_served_on_loopback_only_with_the_token_and_refused_without(notebook):
    lab, container, token = notebook
    url = f"http://127.0.0.1:{lab.notebook_port}"
    # Published on the loopback interface only, on NOTEBOOK_PORT.
    host = container.attrs["HostConfig"]
    assert host["PortBindings"] == {"8888/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(lab.notebook_port)}]}
    ports = [p for p in sh(["docker", "port", container.id], timeout=30).stdout.splitlines() if p.strip()]
    assert ports == [f"8888/tcp -> 127.0.0.1:{lab.notebook_port}"], ports

    status, body = _request(f"{url}/api/status", token)
    assert status == 200 and "kernels" in body, (status, body)
    assert _request(f"{url}/api/contents?token={token}")[0] == 200
    for bad in (None, "0" * 48, token[:-1]):
        assert _request(f"{url}/api/status", bad)[0] == 403, bad
        assert _request(f"{url}/api/contents", bad)[0] == 403, bad
    status, _ = _request(f"{url}/lab")  # the page itself: to the login form
    assert status == 302, status
    # A page that calls itself anything but 127.0.0.1/localhost (DNS rebinding) is refused.
    req = urllib.request.Request(f"{url}/api/status", headers={"Authorization": f"token {token}",
                                                               "Host": "evil.example:80"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=30)
    assert refused.value.code == 403


def test_the_token_is_in_no_configuration_no_argv_and_once_in_the_log(notebook):
    lab, container, token = notebook
    image = lab.client.images.get(container.attrs["Image"])
    for where, attrs in (("image", image.attrs["Config"]), ("container", container.attrs["Config"])):
        assert token not in json.dumps(attrs), where
    assert token not in json.dumps(container.attrs["HostConfig"])
    argv = " ".join(row[-1] for row in container.top()["Processes"])
    assert "jupyter-lab" in argv or "jupyter lab" in argv, argv
    assert token not in argv and lab.password not in argv, argv
    assert container.logs().decode(errors="replace").count(token) == 1
    # Hardened like the other services: no capabilities, no escalation, read-only, init, not root.
    host = container.attrs["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd") and not host.get("Privileged"), host
    assert "no-new-privileges:true" in host["SecurityOpt"] and host["ReadonlyRootfs"] is True and host["Init"]
    code, uid = container.exec_run(["id", "-u"])
    assert code == 0 and uid.decode().strip() not in ("", "0"), uid
    # The one bind mount: the notebooks folder, read-write (the workers': read-only).
    mounts = {m["Destination"]: m for m in container.attrs["Mounts"] if m["Type"] == "bind"}
    assert list(mounts) == ["/app/notebooks"] and mounts["/app/notebooks"]["RW"] is True, mounts
    assert Path(mounts["/app/notebooks"]["Source"]) == lab.notebooks
    for worker in lab.running_workers():
        binds = {m["Destination"]: m["RW"] for m in worker.attrs["Mounts"] if m["Type"] == "bind"}
        assert binds == {"/app/notebooks": False}, (worker.name, binds)


# --- a notebook through the server's own kernel ---------------------------------------------
def _message(code: str, session: str) -> dict:
    msg_id = uuid.uuid4().hex
    return {"header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": session,
                       "date": "", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}


async def _run_cells(ws_url: str, token: str, cells: list[str]) -> list[dict]:
    """Each cell executed in turn on the kernel's channels (Jupyter's JSON websocket
    protocol): its reply's status and its outputs (stream text, results, errors)."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    conn = await websocket_connect(HTTPRequest(ws_url, headers={"Authorization": f"token {token}"}))
    session, done = uuid.uuid4().hex, []
    try:
        for code in cells:
            msg = _message(code, session)
            await conn.write_message(json.dumps(msg))
            outputs, reply, idle = [], None, False
            deadline = time.monotonic() + CELL_TIMEOUT
            while reply is None or not idle:
                raw = await asyncio.wait_for(conn.read_message(), max(0.1, deadline - time.monotonic()))
                assert raw is not None, "the kernel's websocket closed"
                m = json.loads(raw)
                if m.get("parent_header", {}).get("msg_id") != msg["header"]["msg_id"]:
                    continue
                kind = m["msg_type"]
                if kind == "execute_reply":
                    reply = m["content"]
                elif kind == "status" and m["content"]["execution_state"] == "idle":
                    idle = True
                elif kind in ("stream", "execute_result", "display_data", "error"):
                    outputs.append({"type": kind, **m["content"]})
            done.append({"status": reply["status"], "outputs": outputs})
            if reply["status"] != "ok":
                break
    finally:
        conn.close()
    return done


def test_a_notebook_races_a_module_of_the_folder_on_the_labs_workers(notebook):
    import nbformat

    lab, container, token = notebook
    url = f"http://127.0.0.1:{lab.notebook_port}"
    # The student's notebook, in their folder; its kernel starts there (a session, as the UI does).
    (lab.notebooks / SMOKE.name).write_bytes(SMOKE.read_bytes())
    status, session = _request(f"{url}/api/sessions", token, "POST",
                               {"path": SMOKE.name, "type": "notebook", "name": SMOKE.name,
                                "kernel": {"name": "python3"}})
    assert status == 201, (status, session)
    kernel = session["kernel"]["id"]
    try:
        cells = [c.source for c in nbformat.read(SMOKE, as_version=4).cells if c.cell_type == "code"]
        ws = f"ws://127.0.0.1:{lab.notebook_port}/api/kernels/{kernel}/channels?session_id={uuid.uuid4().hex}"
        # A loop of its own in a thread of its own: Playwright's sync API (the session's
        # browser fixture, if a live test ran before) keeps an event loop running in this one.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            results = pool.submit(asyncio.run, _run_cells(ws, token, cells)).result()
    finally:
        assert _request(f"{url}/api/sessions/{session['id']}", token, "DELETE")[0] == 204
    errors = [o for r in results for o in r["outputs"] if o["type"] == "error"]
    assert not errors and [r["status"] for r in results] == ["ok"] * len(cells), \
        "\n".join(line for o in errors for line in o["traceback"])[-4000:]
    # The module the notebook wrote is in the host's folder: the mount is read-write.
    module = lab.notebooks / "labsmoke.py"
    assert "def square(x)" in module.read_text()
    printed = "".join(o.get("text", "") for o in results[-1]["outputs"] if o["type"] == "stream")
    summary = json.loads(printed.strip().splitlines()[-1])
    assert summary["function"] == "notebooks.labsmoke:square" and summary["transport"] == "json", summary
    assert summary["external"] is True and summary["backends"] == ["celery", "sequential"], summary
    # Every call ran in the lab's worker containers (their node names), none in the kernel.
    workers = {node_name(c) for c in lab.running_workers()}
    assert summary["nodes"] and set(summary["nodes"]) <= workers, (summary["nodes"], workers)
    # No workers= given: -n is the number of external workers that answered (whatever
    # earlier tests on this lab left running), not the machine's CPU count.
    assert summary["workers"] == len(workers), (summary["workers"], workers)
