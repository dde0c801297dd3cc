"""taskrace.race: the caller's own function raced across the tiers, with compare's table,
``= seq`` check and metrics.

What a notebook does is what these do: a function defined in a fresh interpreter's
``__main__`` (a child ``python -c``, and a real Jupyter kernel through nbclient) gives
sequential's answer on every local tier under fork, spawn and forkserver (each forced),
the record saying how it travelled (fork, or cloudpickle where a child cannot import
``__main__``); a coroutine function is awaited on asyncio, also inside a kernel whose
thread already runs a loop; a tier whose answer differs is ``= seq: no``; celery refuses
a ``__main__`` function, a lambda, a coroutine function and non-JSON inputs in one line
each, before anything starts, and runs a module's function on real workers (the workers
it starts, and workers someone else started that name the module). Tiny inputs, one
repeat, no CPU-capacity measure: every test compares answers and counts, never times.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import psutil
import pytest

import celery_fixtures
from celery_fixtures import require_redis_binary
from conftest import LOCAL_TIERS, REPO_ROOT

import taskrace
from taskrace import events
from workers import get_tier

embedded_redis, celery_workers = celery_fixtures.embedded_redis, celery_fixtures.celery_workers  # fixtures
QUICK = dict(repeat=1, warmup=0, cpu_capacity=False, progress=False)
PLAIN_TIERS = [t for t in LOCAL_TIERS if not get_tier(t).runs_coroutines]  # a plain function's defaults


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


# --- a function of __main__, in a fresh interpreter ------------------------------------------------

CHILD = textwrap.dedent("""
    import asyncio, dataclasses, json, taskrace

    QUICK = dict(repeat=1, warmup=0, cpu_capacity=False, progress=False, workers=2)

    def square(x):
        return x * x

    @dataclasses.dataclass
    class Point:  # a class of __main__: only the caller has it
        x: int

    def point(x):
        return Point(x)

    async def later(x):
        await asyncio.sleep(0.01)
        return x + 1

    def rows(r):
        return [{"backend": x["backend"], "agrees": x["agrees_with_sequential"], "ok": x["verdict"]["ok"],
                 "transport": x["race"]["transport"], "start_method": x["tier"].get("start_method")} for x in r]

    out = {}
    for method in ("fork", "spawn", "forkserver"):
        r = taskrace.race(square, [1, 2, 3], start_method=method, **QUICK)
        out[method] = {"rows": rows(r), "ok": r.ok}
    k = 3
    r = taskrace.race(lambda x: x * k, [1, 2], backends=["processes"], start_method="forkserver", **QUICK)
    out["lambda"] = {"rows": rows(r), "ok": r.ok}
    r = taskrace.race(point, [1, 2], backends=["processes"], start_method="spawn", **QUICK)
    out["main class"] = {"rows": rows(r), "ok": r.ok}
    r = taskrace.race(later, [1, 2, 3], start_method="forkserver", **QUICK)
    out["coroutine"] = {"rows": rows(r), "ok": r.ok}
    try:
        taskrace.race(square, [1], backends=["celery"])
    except taskrace.InputError as exc:
        out["celery"] = str(exc)
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def child():
    """One fresh interpreter whose __main__ defines the functions and races them."""
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=240, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_main_function_gives_sequentials_answer_on_every_local_tier(child, method):
    got = child[method]
    assert got["ok"], got
    assert [row["backend"] for row in got["rows"]] == PLAIN_TIERS  # sequential first; asyncio only for async
    for row in got["rows"]:
        assert row["agrees"] is True and row["ok"], row
        in_process = get_tier(row["backend"]).shares_memory
        if in_process:
            assert row["transport"] == "in-process", row
        elif row["backend"] == "processes":
            assert row["start_method"] == method, row
            assert row["transport"] == ("fork" if method == "fork" else "cloudpickle"), row
        else:  # interpreters (3.14+): no child can import __main__
            assert row["transport"] == "cloudpickle", row


def test_a_lambda_and_a_main_class_travel_by_cloudpickle(child):
    for case in ("lambda", "main class"):
        got = child[case]
        assert got["ok"], (case, got)
        (proc,) = [row for row in got["rows"] if row["backend"] == "processes"]
        assert proc["agrees"] is True and proc["transport"] == "cloudpickle", (case, proc)


def test_a_coroutine_function_is_awaited_on_asyncio_and_run_elsewhere(child):
    got = child["coroutine"]
    assert got["ok"], got
    assert [row["backend"] for row in got["rows"]] == LOCAL_TIERS  # asyncio included now
    assert all(row["agrees"] is True for row in got["rows"]), got


def test_celery_refuses_a_main_function_in_one_line(child):
    line = child["celery"]
    assert "\n" not in line
    assert "square is defined in __main__" in line and "put it in a module on the workers' path" in line


def test_in_a_jupyter_kernel_under_forkserver(tmp_path):
    """A real kernel (its thread runs an event loop): a cell's function on every local
    tier under forkserver (3.14's default on Linux), a cell's coroutine function on
    asyncio, the table shown as HTML."""
    nbformat = pytest.importorskip("nbformat") if not _in_ci() else __import__("nbformat")
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(f"""\
        import sys; sys.path.insert(0, {str(REPO_ROOT)!r})
        import asyncio, json, taskrace
        def cube(x):
            return x ** 3
        async def later(x):
            await asyncio.sleep(0.01)
            return -x
        out = {{}}
        for fn in (cube, later):
            r = taskrace.race(fn, [1, 2, 3], workers=2, repeat=1, warmup=0, cpu_capacity=False, progress=False,
                              start_method="forkserver", trace=True)
            out[fn.__name__] = [[x["backend"], x["agrees_with_sequential"], x["race"]["transport"]] for x in r]
        print(json.dumps(out))
        r""")),
    ]
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[0].outputs
    out = json.loads(next(o["text"] for o in outputs if o.get("name") == "stdout"))
    assert [row[0] for row in out["cube"]] == PLAIN_TIERS
    assert [row[0] for row in out["later"]] == LOCAL_TIERS
    for backend, agrees, transport in out["cube"] + out["later"]:
        assert agrees is True, (backend, out)
        if backend == "processes":
            assert transport == "cloudpickle"
    shown = outputs[-1]["data"]
    assert "<table" in shown["text/html"] and "later()" in shown["text/html"]


def test_the_docs_example_runs_as_written():
    """docs/library.md's race example, in a fresh interpreter (its functions in __main__)."""
    import re

    blocks = [b for b in re.findall(r"```python\n(.*?)```", (REPO_ROOT / "docs" / "library.md").read_text(), re.S)
              if "taskrace.race(" in b]
    assert len(blocks) == 1, "docs/library.md shows race in one ```python block"
    proc = subprocess.run([sys.executable, "-c", blocks[0]], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=180, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT), COLUMNS="80"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "taskrace race collatz() (median of 3)" in proc.stdout and "taskrace race wait()" in proc.stdout
    waits = [line.split() for line in proc.stdout.splitlines() if line.startswith("wait()")]
    assert [row[1] for row in waits] == LOCAL_TIERS  # asyncio among them: a coroutine function


# --- in this process ---------------------------------------------------------------------------

def which_process(_):
    return os.getpid()


def test_a_wrong_answer_is_seq_no_with_the_table_events_and_timeline():
    heard = []
    r = taskrace.race(which_process, [0, 1], backends=["threads", "processes"], workers=2, trace=True,
                      on_event=heard.append, **QUICK)
    by = {x["backend"]: x for x in r}
    assert list(by) == ["sequential", "threads", "processes"]
    assert by["threads"]["agrees_with_sequential"] is True  # the caller's process: the same pid
    assert by["processes"]["agrees_with_sequential"] is False  # its own processes: other pids
    assert by["processes"]["verdict"]["ok"]  # every call returned: only the answer differs
    assert not r.ok and r.exit_code == 1
    row = next(line for line in r.table(width=120).splitlines() if " processes " in line)
    assert row.split()[0] == "which_process()" and " no " in row
    assert "speedup" in r.records[1] and r.records[1]["metrics"]["os_processes"] >= 1
    # the event stream and the timeline: every call of every point, as compare tells them
    assert len(r.tasks()) == 2 * 3
    assert {e["scenario"] for e in heard if e.kind == "point.start"} == {"which_process()"}
    # never a registered scenario: `taskrace list` does not show it, and it is gone after
    from scenarios import SCENARIOS, get_scenario
    from workers import UnknownChoice

    assert "which_process()" not in SCENARIOS
    with pytest.raises(UnknownChoice):
        get_scenario("which_process()")


async def _negate(x):
    return -x


def _not_json(x):
    return x


@pytest.mark.parametrize("call, says", [
    (lambda: taskrace.race(lambda x: x, [1], backends=["celery"]), "is a lambda or a function defined inside"),
    (lambda: taskrace.race(_negate, [1], backends=["celery"]), "is a coroutine function"),
    (lambda: taskrace.race(_not_json, [(1, 2)], backends=["celery"]), "input 0 ((1, 2)) does not come back from JSON"),
    (lambda: taskrace.race(_not_json, [{1: 2}], backends=["celery"]), "does not come back from JSON unchanged"),
    (lambda: taskrace.race(_not_json, [1], backends=["asyncio"]), "asyncio awaits coroutine functions"),
    (lambda: taskrace.race(_not_json, []), "at least one input"),
    (lambda: taskrace.race(_not_json, [1], sleep=1), "race() has no option 'sleep'"),
    (lambda: taskrace.race(_not_json, [1], backends=["nope"]), "unknown backend 'nope'"),
    (lambda: taskrace.race(_not_json, [1], start_method="nope"), "invalid choice: 'nope'"),
])
def test_what_cannot_race_is_one_line_before_any_process(call, says):
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    with pytest.raises(taskrace.InputError) as caught:
        call()
    assert says in str(caught.value) and "\n" not in str(caught.value)
    assert {p.pid for p in me.children(recursive=True)} <= before
    assert not events.active()


def test_a_worker_calls_only_the_modules_its_environment_names(monkeypatch, tmp_path):
    from workers.celery_app import _resolve

    mod = _module(tmp_path, monkeypatch, "racefns_allow")
    monkeypatch.delenv("TASKRACE_TASK_MODULES", raising=False)
    with pytest.raises(PermissionError, match="TASKRACE_TASK_MODULES"):
        _resolve(f"{mod.__name__}:square")
    monkeypatch.setenv("TASKRACE_TASK_MODULES", f"__main__,{mod.__name__}")
    assert _resolve(f"{mod.__name__}:square") is mod.square
    for refused in (f"{mod.__name__}:os.getpid", "__main__:square", "os:getpid", "scenarios:f",
                    f"{mod.__name__}x:square", f"{mod.__name__}:square.__globals__"):
        with pytest.raises(PermissionError):
            _resolve(refused)


# --- celery: a module's function on real workers -------------------------------------------------

def _module(tmp_path, monkeypatch, name: str):
    """A module in its own folder (as a file beside a notebook), imported from there."""
    import importlib

    (tmp_path / f"{name}.py").write_text("import os\n\n\ndef square(x):\n    return x * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return importlib.import_module(name)


def test_celery_runs_a_module_function_on_the_workers_it_starts(tmp_path, monkeypatch):
    require_redis_binary()
    mod = _module(tmp_path, monkeypatch, "racefns_started")
    r = taskrace.race(mod.square, [1, 2, 3], backends=["celery"], workers=1, **QUICK)
    assert r.ok, r
    record = r.records[1]
    assert record["backend"] == "celery" and record["agrees_with_sequential"] is True
    assert record["race"]["transport"] == "json"
    assert record["tier"]["task_modules"] == ["racefns_started"]
    assert all("@" in node for node in record["nodes"])  # celery nodes ran every call


def test_celery_runs_it_on_workers_someone_else_started(tmp_path, monkeypatch, embedded_redis, celery_workers):
    """The lab's way: workers whose environment names the module (and has its folder on
    their path); the race brings none of its own."""
    mod = _module(tmp_path, monkeypatch, "racefns_external")
    with pytest.raises(taskrace.InputError, match="no external Celery worker answers on redis://"):
        taskrace.race(mod.square, [4, 5], backends=["celery"], external=True, redis_url=embedded_redis.url, **QUICK)
    env = {"TASKRACE_TASK_MODULES": mod.__name__, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO_ROOT)])}
    celery_workers(2, queues="taskrace", env=env)
    r = taskrace.race(mod.square, [4, 5], backends=["celery"], workers=1, external=True,
                      redis_url=embedded_redis.url, **QUICK)
    assert r.ok, r
    record = r.records[1]
    assert record["agrees_with_sequential"] is True and record["race"]["transport"] == "json"
    assert len(record["nodes"]) == 1 and set(record["nodes"]) <= {f"w{i}@{os.uname().nodename}" for i in (1, 2)}
    # The lab notebook's way: external workers named by the environment and no -n given:
    # -n is the number of workers that answer (2), not this machine's CPU count.
    monkeypatch.setenv("TASKRACE_EXTERNAL_WORKERS", "1")
    monkeypatch.setenv("REDIS_URL", embedded_redis.url)
    r = taskrace.race(mod.square, [4, 5, 6, 7], backends=["celery"], **QUICK)
    assert r.ok and r.records[1]["workers"] == 2 and r.records[1]["tier"]["external_workers"] is True, r


def test_external_workers_mode_is_adopted_unless_another_is_chosen(tmp_path, monkeypatch, embedded_redis,
                                                                 celery_workers):
    """Late acks act in the worker: a race that chose no delivery mode is judged by the one
    its external workers run (a lab notebook whose workers were restarted in another mode);
    a mode they do not run, chosen, is one line naming theirs."""
    mod = _module(tmp_path, monkeypatch, "racefns_modes")
    monkeypatch.delenv("TASKRACE_DELIVERY", raising=False)
    env = {"TASKRACE_TASK_MODULES": mod.__name__, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO_ROOT)]),
           "TASKRACE_DELIVERY": "at-least-once"}
    celery_workers(1, queues="taskrace", env=env)
    r = taskrace.race(mod.square, [2, 3], backends=["celery"], external=True, redis_url=embedded_redis.url, **QUICK)
    assert r.ok and r.records[1]["agrees_with_sequential"] is True, r
    assert r.records[1]["tier"]["delivery"]["mode"] == "at-least-once", r.records[1]["tier"]["delivery"]
    with pytest.raises(taskrace.InputError, match=r"--delivery at-most-once: the external workers w1@\S+ run "
                                                  r"at-least-once"):
        taskrace.race(mod.square, [2, 3], backends=["celery"], external=True, delivery="at-most-once",
                      redis_url=embedded_redis.url, **QUICK)
