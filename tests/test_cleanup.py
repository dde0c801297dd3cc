"""No orphan processes: after a normal run (in this process) and after Ctrl-C (SIGINT to a
`taskrace run` subprocess). Everything a test sees is killed by PID in `finally`, so a
failing test leaves nothing behind.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

try:
    from celery_procs import kill_pids
    from conftest import REPO_ROOT, START_METHODS, run
except ImportError:  # tests/ imported as a package
    from tests.celery_procs import kill_pids
    from tests.conftest import REPO_ROOT, START_METHODS, run

# multiprocessing's own long-lived helpers (started once per interpreter under spawn /
# forkserver, shared by every later run): not workers of any one run.
HELPER_MARKERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
WAIT_FOR_WORKERS_S = 30  # upper bound for the workers to appear (spawn imports take time)
INTERRUPT_BOUND_S = 15  # Ctrl-C must end the run within this (the tasks would take 30-60 s)
GRACE_S = 5  # for processes to be reaped / notice their parent has gone


def _is_helper(proc: psutil.Process) -> bool:
    try:
        cmdline = " ".join(proc.cmdline())
    except psutil.Error:
        return False
    return any(marker in cmdline for marker in HELPER_MARKERS)


def _is_helper_pid(pid: int) -> bool:
    try:
        return _is_helper(psutil.Process(pid))
    except psutil.Error:
        return False


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # dead, awaiting reaping
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pids, timeout: float = GRACE_S) -> list[int]:
    """PIDs still alive after ``timeout`` (polling; zombies count as gone)."""
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if not _gone(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if not _gone(p)]
    return alive


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


# --- after a normal run ------------------------------------------------------------------

CASES = {
    "power-io": {"sleep": 0.05},  # a Pool
    "bank": {"strategy": "queue", "delay": 0.002, "trials": 2},  # actor processes + a Queue
    "pipeline": {},  # actors over a bounded Queue
}


@pytest.mark.parametrize("scenario", list(CASES))
@pytest.mark.parametrize("start_method", START_METHODS)
def test_no_orphans_after_a_run(start_method, scenario):
    me = psutil.Process()
    before = {p.pid for p in _children(me)}
    seen: set[int] = set()
    try:
        record = run(scenario, "processes", 2, tier_options={"start_method": start_method},
                     **CASES[scenario])
        seen = {p["pid"] for p in record["metrics"]["processes_seen"]} - {me.pid}
        assert record["verdict"]["ok"], record["verdict"]
        # The run really had worker processes (else there would be nothing to clean up).
        workers = {pid for pid in seen if pid not in before and not _is_helper_pid(pid)}
        assert len(workers) >= 2, record["metrics"]["processes_seen"]

        new = [p for p in _children(me) if p.pid not in before and not _is_helper(p)]
        leftovers = _wait_gone([p.pid for p in new])
        assert leftovers == [], f"orphans after the run: {leftovers}"
        still_alive = [pid for pid in workers if not _gone(pid)]
        assert still_alive == [], f"workers seen during the run still alive: {still_alive}"
    finally:
        kill_pids(p.pid for p in _children(me) if p.pid not in before and not _is_helper(p))


# --- after Ctrl-C -------------------------------------------------------------------------

def _interrupt(args: list[str], ready) -> tuple[subprocess.CompletedProcess | None, set[int], float | None]:
    """Start ``taskrace ARGS``, wait (bounded) until ``ready(parent, children)``, send
    SIGINT to that one process, and wait (bounded) for it to exit. Returns the finished
    process (None if it did not exit in time), every child PID seen, and how long the
    exit took. Kills everything it saw in ``finally``."""
    env = dict(os.environ, COLUMNS="200", PYTHONUNBUFFERED="1")
    popen = subprocess.Popen([sys.executable, "-m", "taskrace", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=env)
    seen: dict[int, psutil.Process] = {}
    try:
        parent = psutil.Process(popen.pid)
        deadline = time.monotonic() + WAIT_FOR_WORKERS_S
        while True:
            current = _children(parent)
            for child in current:
                seen.setdefault(child.pid, child)
            if ready(parent, [c for c in current if not _is_helper(c)]):
                break
            if popen.poll() is not None:
                out, err = popen.communicate(timeout=10)
                pytest.fail(f"run ended before it could be interrupted (exit {popen.returncode}): {err}")
            if time.monotonic() > deadline:
                pytest.fail(f"the run's workers never appeared: {args}")
            time.sleep(0.05)
        time.sleep(0.3)  # let the run settle into its tasks
        for child in _children(parent):
            seen.setdefault(child.pid, child)

        popen.send_signal(signal.SIGINT)  # this process only, as a terminal would not
        t0 = time.monotonic()
        try:
            out, err = popen.communicate(timeout=INTERRUPT_BOUND_S)
        except subprocess.TimeoutExpired:
            return None, set(seen), None
        took = time.monotonic() - t0
        return subprocess.CompletedProcess(popen.args, popen.returncode, out, err), set(seen), took
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.communicate(timeout=10)
        kill_pids(pid for pid in seen if not _gone(pid))


def _assert_clean_interrupt(result, seen: set[int]) -> None:
    proc, _, _ = result
    assert proc is not None, f"still running {INTERRUPT_BOUND_S} s after SIGINT"
    assert proc.returncode == 130, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "interrupted" in lines[0]
    leftovers = _wait_gone(seen)
    assert leftovers == [], f"processes left after Ctrl-C: {leftovers}"


def _worker_count(n: int):
    return lambda parent, children: len(children) >= n


@pytest.mark.parametrize("start_method", START_METHODS)
def test_ctrl_c_stops_pool_workers(start_method):
    args = ["run", "power-io", "-b", "processes", "-n", "2", "--sleep", "30",
            "--start-method", start_method]
    result = _interrupt(args, _worker_count(2))
    seen = result[1]
    assert len(seen) >= 2
    _assert_clean_interrupt(result, seen)


def test_ctrl_c_stops_bank_actor_processes():
    # 2 pool workers + 2 client actors + the queue's owner actor, trial after trial.
    args = ["run", "bank", "-b", "processes", "-n", "2", "--strategy", "queue", "--trials", "1000"]
    result = _interrupt(args, _worker_count(5))
    seen = result[1]
    assert len(seen) >= 5
    _assert_clean_interrupt(result, seen)


def test_ctrl_c_stops_a_threads_run():
    # Ready once both pool threads and the sampler run (main + 2 workers + sampler).
    args = ["run", "power-io", "-b", "threads", "-n", "2", "--sleep", "60"]
    result = _interrupt(args, lambda parent, children: parent.num_threads() >= 4)
    _assert_clean_interrupt(result, result[1])
