"""A real browser for the live view's tests: Playwright driving Debian's ``chromium``.

``playwright install`` downloads browsers, which these machines cannot; Playwright drives
an installed Chromium through ``executable_path`` instead (``.ci/run`` installs Debian's
``chromium`` package). Without it a laptop skips these tests; CI fails them.

Screenshots go to ``$TASKRACE_ARTIFACTS`` (default ``tests/artifacts/``, not committed),
to be looked at by a person.
"""
from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")  # there, a missing browser fails
ARTIFACTS = Path(os.environ.get("TASKRACE_ARTIFACTS") or Path(__file__).with_name("artifacts"))
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    return os.environ.get("TASKRACE_CHROMIUM") or next(
        (p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def _unavailable(msg: str):
    pytest.fail(msg) if IN_CI else pytest.skip(msg)


@pytest.fixture(scope="module")
def browser():
    """One Chromium per module that asks (starting one costs about a second): not for the
    session, since under xdist the worker that started it goes on to modules that count
    their processes' descendants."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed: pip install -e '.[test]'")
    path = chromium_path()
    if not path:
        _unavailable("no Chromium: apt-get install chromium (or set TASKRACE_CHROMIUM)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing listens on ``port`` any more, and a new server could bind it (with
    SO_REUSEADDR, as servers do: the closed connections' TIME_WAIT is not a listener)."""
    import psutil

    if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
           for c in psutil.net_connections(kind="tcp")):
        return False
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False
