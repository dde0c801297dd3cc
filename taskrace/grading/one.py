"""One check, in a process of its own: ``python -m taskrace.grading.one SPEC_JSON``.

The grader (``taskrace.grading.runner``) starts this in a session of its own and reads
what happens from a pipe, as JSON lines (never pickle)::

    grader ──Popen(start_new_session)──> supervisor (this module's main: tiny, trusted)
      ▲                                    │ a child subreaper: every orphan comes back here
      │  pipe: {"kind": "runner"|"ready"|  │ fork
      │         "run"|"result"|"exit"}     ▼
      └──────────────────────────────── runner (its own process group, memory limit):
                                           imports the checks, starts the check's Redis,
                                           runs the check REPEAT times, says the verdict

The supervisor outlives whatever the student's code does to the runner (a hang, a kill,
``os.killpg(0, ...)``, a memory eater): when the runner ends, or when the grader sends
SIGTERM at the timeout, it sends SIGTERM then SIGKILL to every descendant (celery workers
and redis-server start sessions of their own, but stay descendants, and orphans are
re-parented to it), reaps them, and says how the runner ended. Only then does it exit.

``python -m taskrace.grading.one --list CHECKS.py`` prints the checks a file defines (JSON).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time

from taskrace.grading.wire import one_line, send

EXIT_RUNNER_BROKE = 70  # the runner itself failed before it could say anything
GRACE_S = 2.0  # SIGTERM, then SIGKILL this much later
GIVE_UP_S = 10.0  # after the SIGKILLs: a process still there is stuck in the kernel
PR_SET_CHILD_SUBREAPER = 36


# --- the supervisor -------------------------------------------------------------------
class _Stop(Exception):
    """SIGTERM from the grader: the check is past its timeout."""


def _on_sigterm(signum, frame):
    raise _Stop


def _become_subreaper() -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the grader's own sweep still runs
        pass


def _reap(runner: int) -> int | None:
    """Reap every child that has ended (orphans included); the runner's wait status if it
    was among them."""
    status = None
    while True:
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return status
        if pid == 0:
            return status
        if pid == runner:
            status = st


def _wait_runner(runner: int) -> int:
    while True:
        pid, st = os.waitpid(-1, 0)  # reaps orphans too; a SIGTERM raises _Stop here
        if pid == runner:
            return st


def sweep(runner: int, grace: float = GRACE_S) -> int | None:
    """SIGTERM to every descendant, SIGKILL to whatever is left after ``grace``, until
    none is left. Returns the runner's wait status if it was reaped here."""
    import psutil

    me = psutil.Process()
    status = None
    term_sent: set[int] = set()
    started = time.monotonic()
    while True:
        st = _reap(runner)
        status = st if st is not None else status
        children = _children(me, psutil)
        left = [p for p in children if _alive(p, psutil)]
        waited = time.monotonic() - started
        if not children or waited > grace + GIVE_UP_S:  # past that: stuck in the kernel; the grader sweeps too
            return status
        if not left:  # zombies only: reaped at the next turn (none may outlive us unreaped)
            time.sleep(0.01)
            continue
        late = waited > grace
        for p in left:
            try:
                if late:
                    p.kill()
                elif p.pid not in term_sent:
                    p.terminate()
                    term_sent.add(p.pid)
            except psutil.Error:
                pass
        time.sleep(0.05)


def _children(me, psutil) -> list:
    try:
        return me.children(recursive=True)
    except psutil.Error:  # one of them ended while /proc was read: read again
        try:
            return me.children(recursive=True)
        except psutil.Error:
            return []


def _alive(p, psutil) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def describe(status: int | None) -> dict:
    if status is None:
        return {"how": "unknown"}
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return {"how": "signal", "signal": name}
    return {"how": "exit", "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1}


def supervise(spec: dict) -> int:
    fd = spec["fd"]
    _become_subreaper()
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the grader decides; Ctrl-C reaches it, not us
    try:
        runner = os.fork()
    except _Stop:
        return 0
    if runner == 0:
        code = EXIT_RUNNER_BROKE
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.setpgid(0, 0)  # a student's os.killpg(0, ...) reaches the runner, not us
            from taskrace.grading.check_runner import run_check

            code = run_check(spec, fd)
        finally:
            os._exit(code)
    status, stopped = None, False
    try:
        send(fd, kind="runner", pid=runner)
        status = _wait_runner(runner)
    except _Stop:
        stopped = True
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the sweep short
    swept = sweep(runner)
    status = status if status is not None else swept
    send(fd, kind="exit", stopped=stopped, **describe(status))
    return 0


def list_checks(path: str) -> int:
    from taskrace.grading import checks_of
    from taskrace.grading.check_runner import import_checks

    try:
        module = import_checks(path)
    except BaseException as exc:  # noqa: BLE001 - the teacher's file, said in one line
        from taskrace.grading.check_runner import locate

        print(json.dumps({"error": one_line(f"{locate(exc, None, path)}{type(exc).__name__}: {exc}")}))
        return 0
    specs = [{"name": s.name, "points": s.points, "timeout": s.timeout, "repeat": s.repeat,
              "needs": list(s.needs), "doc": s.doc} for s, _ in checks_of(module)]
    print(json.dumps({"checks": specs}))
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--list":
        return list_checks(argv[1])
    if len(argv) != 1:
        print("usage: python -m taskrace.grading.one SPEC_JSON | --list CHECKS.py", file=sys.stderr)
        return 2
    return supervise(json.loads(argv[0]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
