"""Small shared helpers for the local-tier tests (every tier that needs no broker).

Import them with ``from conftest import LOCAL_TIERS, run, cli`` (tests/ is on sys.path
under pytest's default import mode). The matrix comes from the registry: every tier in
``workers.TIERS`` whose class says ``needs_broker = False`` is local, so a new tier gets the
contract, bank, CLI and pipeline tests on the day its registry line is added, with no list
to edit here. Tiers behind a broker have tests of their own (Redis fixtures).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
