"""Small shared helpers for the local-tier tests (sequential, threads, processes).

Import them with ``from conftest import LOCAL_TIERS, run, cli`` (tests/ is on sys.path
under pytest's default import mode). A new local tier only needs adding to LOCAL_TIERS:
the contract, cleanup and CLI tests are written once, backend-agnostic.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # so the product packages import under bare `pytest` too
    sys.path.insert(0, str(REPO_ROOT))

from taskrace.runner import prepare, run_one  # noqa: E402

LOCAL_TIERS = ["sequential", "threads", "processes"]
CONCURRENT_TIERS = [t for t in LOCAL_TIERS if t != "sequential"]
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
