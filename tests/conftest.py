"""Small shared helpers for the local-tier tests (every tier that needs no broker).

Import them with ``from conftest import LOCAL_TIERS, run, cli`` (tests/ is on sys.path
under pytest's default import mode). The matrix comes from the registry: every tier in
``workers.TIERS`` whose class says ``needs_broker = False`` is local, so a new tier gets the
contract, bank, CLI and pipeline tests on the day its registry line is added, with no list
to edit here. Tiers behind a broker have tests of their own (Redis fixtures).

At the end, the fixtures of the tests that drive a Docker engine: ``engine``, ``images``
and ``compose_lab`` (the compose lab, brought up once per session: docker_helpers.py),
and the order that lets its tests share that one bring-up.
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # so the product packages import under bare `pytest` too
    sys.path.insert(0, str(REPO_ROOT))

from taskrace.measuring.runner import prepare, run_one  # noqa: E402
from workers import TIERS, MissingDependency, get_tier  # noqa: E402


def _is_local(name: str) -> bool:
    try:
        return not get_tier(name).needs_broker
    except MissingDependency:  # its optional dependency is absent: a broker tier, tested elsewhere
        return False


LOCAL_TIERS = [name for name in TIERS if _is_local(name)]  # in registry order, sequential first
CONCURRENT_TIERS = [t for t in LOCAL_TIERS if t != "sequential"]  # sequential is the oracle
START_METHODS = ["fork", "spawn"]

# Every subprocess call gets a timeout; this is the default for quick commands.
CLI_TIMEOUT = 120


def run(scenario: str, backend: str, workers: int = 2, tier_options: dict | None = None,
        seed: int = 0, history: list | None = None, **params) -> dict:
    """One run in this process through the harness's own entry points; returns the record."""
    sc, tier = prepare(scenario, params, backend, workers, dict(tier_options or {}), seed)
    return run_one(sc, tier, history)


def cli(*args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
    """``python -m taskrace ARGS`` in a subprocess (wide terminal so tables don't wrap)."""
    env = dict(os.environ, COLUMNS="200", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "taskrace", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT, env=env)


def stderr_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


# Two tests at a time (pytest-xdist) -----------------------------------------------------
# Most of the suite waits: on celery workers starting and stopping, visibility timeouts,
# containers (the machine's cores are idle ~60% of a serial run). pyproject's addopts run
# it on two xdist workers (-n auto, which pytest_xdist_auto_num_workers makes 2, and 0
# under --pdb), scheduled by module (pytest_xdist_make_scheduler):
#   * the Docker modules are one unit, collected first: one worker runs them in order on
#     the one lab of the session while the other runs the rest;
#   * every other module is a unit of its own, so its module fixtures are made once;
#   * a test marked ``alone`` runs with nothing beside it: those whose claim needs both
#     cores (a CPU-bound speedup, a notebook's ratios). A readers-writer lock on files:
#     every test holds it shared, an ``alone`` one exclusive; a turnstile makes a waiting
#     ``alone`` test go before the tests that come after it.
LOCKS_ENV = "TASKRACE_TEST_LOCKS"  # the lock files' folder, made by the controller
DOCKER_MARK = "pytestmark = pytest.mark.docker"  # how this suite marks a Docker module (whole)
# Not Docker, but the same machine state as two Docker tests (the trlab0 bridge, network
# namespaces, 10.77.0.1): in the Docker unit, without the marker (it needs no engine).
BESIDE_DOCKER = {"tests/test_join.py"}
# Run first, before the lab is up: test_bank's racing runs must lose updates in 9 of 10
# trials, and twice in four full runs 8 of 10 did while the lab's containers were up,
# though the module is alone. Its name sorts before the Docker modules', so in the Docker
# unit it runs before them.
BEFORE_DOCKER = {"tests/test_bank.py"}


@functools.lru_cache(maxsize=None)
def _docker_modules() -> frozenset[str]:
    """Node-id prefixes of the Docker unit's modules. The controller does not collect, so
    it reads the files; a worker checks the collected markers agree (_check_docker_marks)."""
    here = Path(__file__).resolve().parent
    return frozenset({f"{here.name}/{p.name}" for p in here.glob("test_*.py")
                      if DOCKER_MARK in p.read_text()} | BESIDE_DOCKER | BEFORE_DOCKER)


def pytest_xdist_auto_num_workers(config):
    # Two: the Docker unit is serial anyway, and more tests at once only adds load to
    # what the others measure.
    return min(2, os.cpu_count() or 1)


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    docker = _docker_modules()

    class DockerTogetherElseByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "docker" if module in docker else module

    return DockerTogetherElseByModule(config, log)


def pytest_configure(config):
    config.addinivalue_line("markers", "lab_down: takes the shared compose lab down (runs after every other "
                                       "test on it)")
    config.addinivalue_line("markers", "alone: runs with no other test beside it (needs the machine's every "
                                       "core: a CPU-bound speedup, a ratio)")
    if not hasattr(config, "workerinput") and not os.environ.get(LOCKS_ENV):  # the controller, or a plain run
        import tempfile

        config._taskrace_locks = tempfile.mkdtemp(prefix="taskrace-test-locks-")
        os.environ[LOCKS_ENV] = config._taskrace_locks  # the xdist workers inherit it


def pytest_unconfigure(config):
    folder = getattr(config, "_taskrace_locks", None)
    if folder:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop(LOCKS_ENV, None)


_held = {"lock": None, "module": None, "alone": False}  # this worker's hold, kept across a module


def _module(item) -> str:
    return item.nodeid.split("::", 1)[0]


def _release() -> None:
    import fcntl

    if _held["lock"] is not None:
        fcntl.flock(_held["lock"], fcntl.LOCK_UN)
        _held["lock"].close()
    _held["lock"] = _held["module"] = None
    _held["alone"] = False


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    """Setup, call and teardown under the lock. A module outside the Docker unit holds it
    from its first test to its last (its module fixtures may keep working between tests:
    a run in flight, a pool of runs), shared, or exclusive for its ``alone`` tests (a
    module marked ``alone`` as a whole keeps it exclusive throughout); a Docker test holds
    it shared for itself (the unit is long, and the lab idles between its tests)."""
    import fcntl

    folder = os.environ.get(LOCKS_ENV)
    if not folder or not os.path.isdir(folder):
        yield
        return
    module, alone = _module(item), item.get_closest_marker("alone") is not None
    if _held["lock"] is not None and (_held["alone"] != alone or _held["module"] != module):
        _release()
    if _held["lock"] is None:
        rw = open(os.path.join(folder, "rw"), "a")
        with open(os.path.join(folder, "turnstile"), "a") as turnstile:
            fcntl.flock(turnstile, fcntl.LOCK_EX)
            try:
                fcntl.flock(rw, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
            finally:
                fcntl.flock(turnstile, fcntl.LOCK_UN)
        _held["lock"], _held["module"], _held["alone"] = rw, module, alone
    try:
        yield
    finally:
        per_test = module in _docker_modules() and module not in BEFORE_DOCKER  # the lab's tests
        if per_test or nextitem is None or _module(nextitem) != module:
            _release()


def _is_docker(item) -> bool:
    return item.get_closest_marker("docker") is not None or \
        bool({"compose_lab", "images", "engine"} & set(getattr(item, "fixturenames", ())))


def _check_docker_marks(items) -> None:
    docker = _docker_modules()
    odd = sorted({_module(i) for i in items if _is_docker(i)} - docker)
    if odd:
        raise pytest.UsageError(f"{', '.join(odd)}: Docker tests outside a module marked as a whole "
                                f"({DOCKER_MARK}): the scheduler would run them beside the lab's")


# The compose lab, brought up once for the session (tests/docker_helpers.py) --------------
@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups
def pytest_collection_modifyitems(config, items):
    """The tests on the shared lab (fixture ``compose_lab``) run one after another, from
    where the first of them was collected, and those that take it down (``lab_down``)
    last: the stack is up once, and not longer than its tests need it. Under xdist, the
    Docker modules first (the scheduler's first unit)."""
    users = [item for item in items if "compose_lab" in getattr(item, "fixturenames", ())]
    if users:
        first = items.index(users[0])
        group = [i for i in users if not i.get_closest_marker("lab_down")] + \
                [i for i in users if i.get_closest_marker("lab_down")]
        chosen = set(group)
        rest = [item for item in items if item not in chosen]
        items[:] = rest[:first] + group + rest[first:]
    if hasattr(config, "workerinput"):  # an xdist worker: its order is the scheduler's
        _check_docker_marks(items)
        first = [i for i in items if _module(i) in _docker_modules()]
        chosen = set(first)
        items[:] = first + [i for i in items if i not in chosen]


from browser import browser  # noqa: E402,F401 - one Chromium per module that asks


@pytest.fixture(scope="session")
def engine():
    """The Docker engine (SDK client): unavailable skips locally, fails in CI."""
    from docker_helpers import engine as connect

    return connect()


@pytest.fixture(scope="session")
def images(engine):
    """The lab's images, built offline once per session (tag ``docker_helpers.TAG``)."""
    from docker_helpers import build_images

    yield from build_images(engine)


@pytest.fixture(scope="session")
def compose_lab(engine, images, tmp_path_factory):
    """The lab, up once for the session with the live profile on, its run over: a
    ``docker_helpers.Stack`` (``.using("v1")`` drives it with another Compose). Down and
    swept at the end of the session, or by the ``lab_down`` test before that."""
    from docker_helpers import bring_up_lab

    yield from bring_up_lab(engine, tmp_path_factory.mktemp("lab-results"))
