"""The interpreters tier (``concurrent.futures.InterpreterPoolExecutor``, Python 3.14+).

On this host's Python (3.11 in CI) the tier cannot load: ``taskrace list`` shows it as
unavailable with the reason, asking for it is one line and exit 2, and ``compare`` leaves
it out by default. Its real tests run where it loads: in the Python 3.14 image
(compose/build-py314-image.sh: Debian sid's python3.14, offline), through the opt-in
compose/py314.yml, hardened as the lab is: the run of the README's command, the contract
(every supported scenario's answer equals sequential's in the same compare), the globals
verdicts, the pipeline's bound, the bank's one-line refusal.

The container tests skip only where no Docker engine or Compose answers and CI is unset;
in CI (CI=true) that is a failure. The image is built under a tag of this session's
(the scripts skip the base image and the wheels when they are there) and untagged at the
end; each compose call is a project of its own, removed with ``down -v``.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker  # needs a Docker engine (pyproject.toml: markers)

try:
    from conftest import LOCAL_TIERS, cli, stderr_lines
    from docker_helpers import compose_tools as _compose_tools, sh as _sh, unavailable as _unavailable
except ImportError:  # tests/ imported as a package
    from tests.conftest import LOCAL_TIERS, cli, stderr_lines
    from tests.docker_helpers import compose_tools as _compose_tools, sh as _sh, unavailable as _unavailable

from workers import TIERS, available_tiers

REPO_ROOT = Path(__file__).resolve().parents[1]
HERE_HAS_IT = sys.version_info >= (3, 14)
REASON = "needs Python 3.14+ (concurrent.futures.InterpreterPoolExecutor)"
THIS_PYTHON = f"this is {sys.version_info[0]}.{sys.version_info[1]}"
TAG = f"test-{secrets.token_hex(3)}"
IMAGE = f"taskrace/lab-py314:{TAG}"
OVERRIDE = ["-f", "docker-compose.yml", "-f", "compose/py314.yml"]
# The scenarios whose tasks are plain functions over plain data, as compare names its rows.
SUPPORTED = {("power-io", None), ("power-cpu", None), ("globals", "module"), ("globals", "shared"),
             ("bank", "queue"), ("pipeline", None), ("mapreduce", None)}
PIPE_ITEMS, PIPE_CAPACITY = 60, 4  # as tests/test_checks_fail.py: consumers slower than the producer


# --- on this host's Python -----------------------------------------------------------------

def _list_line(proc) -> str:
    lines = [line for line in proc.stdout.splitlines() if line.split()[:1] == ["interpreters"]]
    assert len(lines) == 1, proc.stdout
    return lines[0]


def test_list_shows_it_with_the_reason_where_python_is_older():
    proc = cli("list")
    assert proc.returncode == 0, proc.stderr
    line = _list_line(proc)
    if HERE_HAS_IT:
        assert "unavailable" not in line, line
    else:
        assert "unavailable" in line and REASON in line and THIS_PYTHON in line, line


@pytest.mark.parametrize("argv", [
    ["run", "power-cpu", "-b", "interpreters", "-n", "2"],
    ["run", "globals", "-b", "interpreters", "--dry-run"],
    ["compare", "-b", "sequential,interpreters", "--scenario", "power-cpu", "--dry-run"],
])
def test_asking_for_it_is_one_line_and_exit_2_where_python_is_older(argv):
    if HERE_HAS_IT:  # then it is accepted (and runs, as in the image below)
        assert cli(*argv, *([] if "--dry-run" in argv else ["--dry-run"])).returncode == 0
        return
    proc = cli(*argv)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = stderr_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert lines[0] == f"taskrace: error: the interpreters backend {REASON}; {THIS_PYTHON}", lines[0]


def test_compare_by_default_and_the_test_matrix_take_it_only_where_it_loads():
    assert "interpreters" in TIERS
    assert ("interpreters" in available_tiers()) is HERE_HAS_IT
    assert ("interpreters" in LOCAL_TIERS) is HERE_HAS_IT
    proc = cli("compare", "--scenario", "power-cpu", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    planned = {line.split(" on ")[1].split()[0] for line in proc.stdout.splitlines() if " on " in line}
    assert planned == set(available_tiers()), proc.stdout


# --- in the Python 3.14 image ----------------------------------------------------------------







def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "LAB_", "TASKRACE_"))}
    env.update(TASKRACE_TAG=TAG, COLUMNS="200", **extra)
    return env


@pytest.fixture(scope="module")
def image():
    """taskrace/lab-py314:<this session's tag>, built offline by the script (base image and
    wheels skipped when there, the dependency layer from Docker's cache)."""
    if not shutil.which("docker") or subprocess.run(["docker", "info"], capture_output=True).returncode:
        _unavailable("no Docker engine answers")
    _sh(["bash", "compose/build-py314-image.sh"], env=_env(), timeout=1200)
    try:
        yield IMAGE
    finally:
        subprocess.run(["docker", "image", "rm", IMAGE], capture_output=True)


@pytest.fixture(scope="module")
def lab314(image, tmp_path_factory):
    """``compose -f docker-compose.yml -f compose/py314.yml run --rm -T lab314 ARGS``, in a
    compose project of this module's, taken down at the end."""
    tools = _compose_tools()
    if not tools:
        _unavailable("neither docker compose nor docker-compose is installed")
    tool = tools.get("v2") or tools["v1"]
    project = f"taskrace-test-py314-{secrets.token_hex(3)}"
    results = tmp_path_factory.mktemp("py314-results")
    env = _env(LAB_RESULTS_DIR=str(results))
    if os.getuid() != 0:
        env.update(TASKRACE_UID=str(os.getuid()), TASKRACE_GID=str(os.getgid()))

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return _sh([*tool, *OVERRIDE, "-p", project, "run", "--rm", "-T", "lab314", *args], env=env,
                   timeout=timeout, check=False)

    try:
        yield run
    finally:
        _sh([*tool, *OVERRIDE, "-p", project, "down", "-v", "--remove-orphans"], env=env, timeout=120,
            check=False)


def test_the_override_is_opt_in_and_valid_with_each_compose():
    tools = _compose_tools()
    if not tools:
        _unavailable("neither docker compose nor docker-compose is installed")
    env = _env()
    for version, tool in tools.items():
        _sh([*tool, *OVERRIDE, "config", "-q"], env=env, timeout=60)
        plain = _sh([*tool, "config", "--services"], env=env, timeout=60).stdout.split()
        assert "lab314" not in plain, (version, plain)  # the default stack is untouched
        with_profile = _sh([*tool, *OVERRIDE, "--profile", "py314", "config", "--services"], env=env,
                           timeout=60).stdout.split()
        assert "lab314" in with_profile, (version, with_profile)
        if version == "v2":  # v1 lists every service whatever the profile; v2 filters
            without = _sh([*tool, *OVERRIDE, "config", "--services"], env=env, timeout=60).stdout.split()
            assert "lab314" not in without, without


def test_the_container_is_python_314_not_root_read_only_without_capabilities(lab314):
    check = ("import os, sys, errno\n"
             "from concurrent.futures import InterpreterPoolExecutor\n"
             "caps = [l.split()[1] for l in open('/proc/self/status') if l.startswith(('CapEff', 'NoNewPrivs'))]\n"
             "try:\n    open('/opt/taskrace/probe', 'w'); ro = False\n"
             "except OSError as e:\n    ro = e.errno == errno.EROFS\n"
             "print(sys.version_info[:2] >= (3, 14), sys._is_gil_enabled(), os.getuid(), *caps, ro)\n")
    proc = lab314("python", "-c", check)
    assert proc.returncode == 0, proc.stderr
    has_314, gil, uid, cap_eff, no_new_privs, read_only = proc.stdout.split()
    assert has_314 == "True" and gil == "True"  # a regular (GIL) build: interpreters, not free threading
    assert uid != "0" and int(cap_eff, 16) == 0 and no_new_privs == "1" and read_only == "True", proc.stdout


def test_run_power_cpu_on_interpreters_two_interpreters_one_process(lab314):
    proc = lab314("taskrace", "run", "power-cpu", "-b", "interpreters", "-n", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = next(line.split() for line in proc.stdout.splitlines() if line.startswith("power-cpu"))
    assert row[:3] == ["power-cpu", "interpreters", "2"] and row[-1] == "ok", row
    executors = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("executor ")]
    pids = {e.split("/")[0] for e in executors}
    assert len(executors) == 2 and len(pids) == 1, proc.stdout  # two interpreters, one process
    assert all("/interp-" in e for e in executors), executors
    assert "OS processes seen during the run: 1 " in proc.stdout, proc.stdout


# A caller's own functions raced on interpreters (taskrace.race): one of __main__ (a
# script's, as a notebook cell's), which no interpreter can import, and one of a module in
# a folder the caller put on sys.path (a module beside a notebook).
RACE_CHECK = """
import json, os, sys
os.makedirs("/tmp/mods", exist_ok=True)
with open("/tmp/mods/racemod.py", "w") as f:
    f.write("def cube(x):\\n    return x * x * x\\n")
sys.path.insert(0, "/tmp/mods")
import taskrace
from racemod import cube

def square(x):
    return x * x

out = {}
for fn in (square, cube):
    r = taskrace.race(fn, [1, 2, 3, 4], backends=["interpreters"], workers=2, repeat=1, warmup=0,
                      cpu_capacity=False, progress=False)
    seq, mine = r.records
    out[fn.__name__] = {"ok": r.ok, "backend": mine["backend"], "agrees": mine["agrees_with_sequential"],
                        "transport": mine["race"]["transport"], "procs": mine["metrics"]["os_processes"]}
print(json.dumps(out))
"""


def test_race_sends_a_main_function_by_value_and_a_modules_by_import(lab314):
    proc = lab314("python", "-c", RACE_CHECK)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, transport in (("square", "cloudpickle"), ("cube", "import")):
        got = out[name]
        assert got["ok"] and got["backend"] == "interpreters" and got["agrees"] is True, (name, got)
        assert got["transport"] == transport, (name, got)
        assert got["procs"] == 1, (name, got)  # interpreters in the caller's process, no process started


def test_contract_every_supported_scenario_equals_sequential(lab314):
    marker = "=== JSON ==="
    compare = ("taskrace compare -b sequential,interpreters -n 2 --strategy queue --repeat 1 --warmup 1 "
               f"--set pipeline.items={PIPE_ITEMS} --set pipeline.capacity={PIPE_CAPACITY} "
               "--set pipeline.work=0.01 --no-progress --json /tmp/c.json")
    proc = lab314("sh", "-c", f"{compare} && echo '{marker}' && cat /tmp/c.json", timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr
    table, _, doc = proc.stdout.partition(marker)
    print(table)
    assert "= seq" in table
    runs = json.loads(doc)["runs"]
    mine = {}
    for r in runs:
        assert r["verdict"]["ok"], (r["scenario"], r["backend"], r["verdict"])
        if r["backend"] == "interpreters":
            key = (r["scenario"], r["params"].get("store") or r["strategy"])
            mine[key] = r
            assert r["agrees_with_sequential"] is True, key
            assert r["metrics"]["os_processes"] == 1, (key, r["metrics"])  # no process was started
    assert set(mine) == SUPPORTED, sorted(mine)
    # globals: each interpreter appends to its own module; the shared store (a memoryview) is seen
    assert mine["globals", "module"]["verdict"]["visible"] is False
    assert mine["globals", "shared"]["verdict"]["visible"] is True
    # pipeline: an interpreters.Queue(4) holds its bound against consumers slower than the producer
    pipe = mine["pipeline", None]["verdict"]["details"]
    assert pipe["capacity_enforced"] is True and 1 <= pipe["max_depth"] <= PIPE_CAPACITY, pipe
    # power-cpu: its speedup against sequential's run of the same compare is recorded
    cpu = mine["power-cpu", None]
    assert cpu["workers"] == 2 and isinstance(cpu["speedup"], float) and cpu["speedup"] > 0, cpu
    print(f"power-cpu on interpreters -n 2: speedup {cpu['speedup']} against sequential")


def test_what_it_cannot_run_is_refused_in_one_line_in_the_image(lab314):
    proc = lab314("taskrace", "run", "bank", "--strategy", "lock", "-b", "interpreters", "-n", "2")
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["taskrace: error: strategy 'lock' is not available on backend 'interpreters'; "
                     "choose from: queue"], proc.stderr
