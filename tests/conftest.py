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


# The compose lab, brought up once for the session (tests/docker_helpers.py) --------------
def pytest_configure(config):
    config.addinivalue_line("markers", "lab_down: takes the shared compose lab down (runs after every other "
                                       "test on it)")


def pytest_collection_modifyitems(config, items):
    """The tests on the shared lab (fixture ``compose_lab``) run one after another, from
    where the first of them was collected, and those that take it down (``lab_down``)
    last: the stack is up once, and not longer than its tests need it."""
    users = [item for item in items if "compose_lab" in getattr(item, "fixturenames", ())]
    if not users:
        return
    first = items.index(users[0])
    group = [i for i in users if not i.get_closest_marker("lab_down")] + \
            [i for i in users if i.get_closest_marker("lab_down")]
    chosen = set(group)
    rest = [item for item in items if item not in chosen]
    items[:] = rest[:first] + group + rest[first:]


from browser import browser  # noqa: E402,F401 - one Chromium for the session, whichever module asks


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
