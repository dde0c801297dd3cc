"""Shared helpers for the tests that drive the real Docker engine and Compose
(test_compose.py, test_faults_lab.py, test_interpreters_tier.py).

Plain module, imported explicitly. Missing Docker or Compose skips locally and fails in
CI (``unavailable``): such tests must never skip with CI=true.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Built by compose/build-base-images.sh from Debian packages (no registry here).
PYTHON_BASE = "taskrace/python-base:bookworm"
REDIS_BASE = "taskrace/redis-base:bookworm"


def unavailable(msg: str):
    """Skip on a laptop without the service; fail in CI."""
    pytest.fail(msg) if IN_CI else pytest.skip(msg)


def compose_tools() -> dict[str, list[str]]:
    """The Compose CLIs installed here: v2 (the docker plugin) and/or Debian's 1.29."""
    tools = {}
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True).returncode == 0:
        tools["v2"] = ["docker", "compose"]
    if shutil.which("docker-compose"):
        tools["v1"] = ["docker-compose"]
    return tools


def sh(cmd, env=None, timeout=300, check=True, cwd=REPO_ROOT) -> subprocess.CompletedProcess:
    """Run a command; with ``check``, a non-zero exit fails the test with its output's tail."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc
