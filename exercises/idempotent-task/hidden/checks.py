"""Hidden checks of idempotent-task: the transfer applies once however it is delivered.

1. called twice with the same id (and a new id still applies);
2. a crash right after each of its Redis commands in turn, then a redelivery;
3. two deliveries at once: two threads, then the first paused after each of its
   commands in turn while the second runs;
4-5. the fault lab on real Celery workers under at-least-once: pause-worker (a task
   delivered twice) and kill-child (a task that died half way), 0 lost, 0 applied twice.

Checks 2 and 3 run the delivery that is crashed or paused in a forked child whose Redis
traffic goes through a gate (idem_gate.py) that stops it between two commands.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import redis

from taskrace.grading import Fail, Student, check

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from idem_gate import Gate  # noqa: E402

START, AMOUNT = 100, 30  # alice starts with 100, bob with 0; each transfer moves 30
ONCE = (START - AMOUNT, AMOUNT)
ONE_STEP = ("Checking the key and acting in separate steps lets both pass the check: make them one "
            "atomic step (SET NX in a Lua script with the effect, or WATCH/MULTI/EXEC)")
MAX_STEPS = 40  # a transfer that sends more Redis commands than this is not one step
FORK = multiprocessing.get_context("fork")


# --- one transfer between two fresh accounts ---------------------------------------------
class Accounts:
    def __init__(self, url: str) -> None:
        self.r = redis.Redis.from_url(url, decode_responses=True)
        tag = uuid.uuid4().hex[:8]
        self.src, self.dst, self.id = f"acct:{tag}:alice", f"acct:{tag}:bob", f"t-{tag}"
        self.r.mset({self.src: START, self.dst: 0})

    def balances(self) -> tuple[int, int]:
        return tuple(int(v or 0) for v in self.r.mget(self.src, self.dst))

    def args(self, url: str) -> tuple:
        return (url, self.id, self.src, self.dst, AMOUNT)


def _said(balances: tuple[int, int]) -> str:
    return f"alice {balances[0]}, bob {balances[1]}"


class Delivery:
    """One delivery in a thread of this process (so a delivery that waits forever, on a
    lock a dead one held, cannot hang the check): ``wait`` says whether it finished."""

    def __init__(self, transfer, args) -> None:
        self.out: list = []
        self.thread = threading.Thread(target=self._run, args=(transfer, args), daemon=True)
        self.thread.start()

    def _run(self, transfer, args) -> None:
        try:
            self.out.append(transfer(*args))
        except Exception as exc:  # noqa: BLE001 - judged by the balances it left
            self.out.append(exc)

    def wait(self, timeout: float) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()


def _child(transfer, args) -> None:
    try:
        transfer(*args)
    except Exception:  # noqa: BLE001 - a delivery that failed: the balances tell
        os._exit(1)


# --- 1 -------------------------------------------------------------------------------------
@check(points=1, timeout=30, needs=("redis",))
def applies_once_when_called_twice(student: Student):
    """The same transfer id twice: applied once; a new id: applied again."""
    transfer = student.solution().transfer
    acc = Accounts(student.redis_url)
    first = transfer(*acc.args(student.redis_url))
    after_one = acc.balances()
    if after_one != ONCE:
        raise Fail(f"one call of transfer moved {_said(after_one)} (expected {_said(ONCE)}): "
                   f"the first delivery must move the money")
    second = transfer(*acc.args(student.redis_url))
    after_two = acc.balances()
    if after_two != ONCE:
        raise Fail(f"the same transfer called twice with one id left {_said(after_two)}, not "
                   f"{_said(ONCE)}: it was applied twice. Remember the ids you applied and skip "
                   f"a transfer whose id is already there")
    if first is not True or second is not False:
        raise Fail(f"transfer returned {first!r}, then {second!r}: return True when the call moved "
                   f"the money, False when that id had been applied already")
    acc.id = acc.id + "-next"
    transfer(*acc.args(student.redis_url))
    if acc.balances() != (START - 2 * AMOUNT, 2 * AMOUNT):
        raise Fail(f"a second transfer with a NEW id moved nothing ({_said(acc.balances())}): "
                   f"skip only an id already applied, not every transfer between the same accounts")


# --- 2 -------------------------------------------------------------------------------------
@check(points=3, timeout=60, needs=("redis",))
def survives_a_crash_at_every_step(student: Student):
    """Killed right after each of its Redis commands in turn, then delivered again:
    applied exactly once every time."""
    transfer = student.solution().transfer
    url = student.redis_url
    acc = Accounts(url)
    transfer(*acc.args(url))
    transfer(*acc.args(url))
    if acc.balances() != ONCE:
        raise Fail(f"delivered twice with no crash at all, the transfer was applied twice "
                   f"({_said(acc.balances())}): nothing records that it was applied. Keep an "
                   f"idempotency key per transfer id, set in the same atomic step as the effect")
    for step in range(1, MAX_STEPS + 1):
        acc = Accounts(url)
        gate = Gate(url, stop_at=step)
        child = FORK.Process(target=_child, args=(transfer, acc.args(gate.url)), daemon=True)
        child.start()
        try:
            while not gate.reached.wait(0.01) and child.is_alive():
                pass
            crashed = gate.reached.is_set()
        finally:  # Redis ran command `step`; the process dies before it hears back
            if child.is_alive():
                os.kill(child.pid, signal.SIGKILL)
            child.join(10)
            gate.close()
        if not crashed:  # the delivery ran to its end in fewer commands: every step tried
            return
        at_crash = acc.balances()
        if not Delivery(transfer, acc.args(url)).wait(10):
            raise Fail(f"killed right after its command {gate.stopped_at}, then delivered again: the "
                       f"redelivery waited more than 10 s. A lock the dead delivery held? A lock needs "
                       f"a lease (an expiry), or better no lock: one atomic script")
        final = acc.balances()
        if final == ONCE:
            continue
        where = f"killed right after its Redis command {gate.stopped_at} and delivered again"
        if at_crash == ONCE and final == (START - 2 * AMOUNT, 2 * AMOUNT):
            raise Fail(f"{where}: the transfer was applied but its key was not recorded: a redelivery "
                       f"applied it again ({_said(final)}). Set the key in the same atomic step as the "
                       f"effect (one Lua script, or one MULTI/EXEC)")
        if sum(at_crash) != START:
            raise Fail(f"{where}: the crash left half a transfer ({_said(at_crash)}: money vanished "
                       f"or appeared), and the redelivery left {_said(final)}. The debit, the credit "
                       f"and the key must be one atomic step")
        if final == (START, 0):
            raise Fail(f"{where}: the key was recorded but the transfer never applied, so the "
                       f"redelivery skipped it: the transfer is lost. Set the key in the same atomic "
                       f"step as the effect, never before it")
        raise Fail(f"{where}: {_said(final)}, expected {_said(ONCE)} (exactly once)")
    raise Fail(f"transfer sent more than {MAX_STEPS} Redis commands: one transfer should be one "
               f"atomic step")


# --- 3 -------------------------------------------------------------------------------------
@check(points=3, timeout=60, needs=("redis",))
def two_deliveries_at_once(student: Student):
    """Two deliveries of one transfer at the same time: applied once. Two threads, then
    one delivery paused after each of its Redis commands in turn while the other runs."""
    transfer = student.solution().transfer
    url = student.redis_url
    for _ in range(10):
        acc = Accounts(url)
        barrier = threading.Barrier(2)

        def both():
            barrier.wait()
            transfer(*acc.args(url))

        threads = [threading.Thread(target=both, daemon=True) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        if acc.balances() != ONCE:
            raise Fail(f"two threads delivered one transfer at the same moment: {_said(acc.balances())}, "
                       f"not {_said(ONCE)}: both applied the transfer. {ONE_STEP}")
    for step in range(1, MAX_STEPS + 1):
        acc = Accounts(url)
        gate = Gate(url, stop_at=step)
        first = FORK.Process(target=_child, args=(transfer, acc.args(gate.url)), daemon=True)
        first.start()
        try:
            while not gate.reached.wait(0.01) and first.is_alive():
                pass
            paused = gate.reached.is_set()
            if paused:  # the first waits for the reply to `step`; the second runs whole
                second = Delivery(transfer, acc.args(url))
                second.wait(1)  # a second that waits for the first (a lock) goes on below
                gate.release.set()
                if not second.wait(10):
                    raise Fail(f"two deliveries at once (the first paused after its command "
                               f"{gate.stopped_at}): the second never finished: a deadlock?")
            first.join(10)
            if first.is_alive():
                raise Fail("two deliveries at once: the first never finished (more than 10 s): "
                           "a deadlock?")
        finally:
            gate.close()
            if first.is_alive():
                first.kill()
        if not paused:
            return
        final = acc.balances()
        if final == ONCE:
            continue
        if final == (START - 2 * AMOUNT, 2 * AMOUNT):
            raise Fail(f"two deliveries at once: the first paused right after its Redis command "
                       f"{gate.stopped_at}, the second ran start to end, then the first went on: both "
                       f"applied the transfer ({_said(final)}). {ONE_STEP}")
        raise Fail(f"two deliveries at once (the first paused after its command {gate.stopped_at}): "
                   f"{_said(final)}, expected {_said(ONCE)} (exactly once)")
    raise Fail(f"transfer sent more than {MAX_STEPS} Redis commands: one transfer should be one "
               f"atomic step")


# --- 4, 5: the fault lab on real workers ------------------------------------------------------
LESSONS = {
    "pause-worker": "a worker paused past the visibility timeout had its task redelivered to the other "
                    "worker, then woke up and finished it too: at-least-once runs a task twice, so skip a "
                    "transfer id already applied",
    "kill-child": "a worker's process died half way and the broker gave its task out again: the transfer "
                  "must still land exactly once",
}


def fault_lab(student: Student, fault: str) -> None:
    """``taskrace faults --fault FAULT --mode at-least-once`` with the student's transfer
    as the operation (idem_adapter.py), on two real workers, judged by the balances."""
    from taskrace.faultlab.run import FaultSpec, plan, run_fault
    from workers.celery_workers import PROJECT_ROOT, TASK_MODULES_ENV
    from idem_adapter import ERRORS_ENV, FOLDER_ENV

    student.solution()  # a syntax error: one line here, not a worker's traceback
    spec = FaultSpec(fault, "at-least-once", ops=9, work_s=0.15)
    with tempfile.TemporaryDirectory(prefix="taskrace-idem-") as tmp:
        errors = Path(tmp, "errors.txt")
        path = [str(HERE), str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {TASK_MODULES_ENV: "idem_adapter", "PYTHONPATH": os.pathsep.join(path),
               FOLDER_ENV: str(Path(student.folder).resolve()), ERRORS_ENV: str(errors)}
        record = run_fault(spec, apply_fn="idem_adapter:apply", worker_env=env)
        raised = errors.read_text().splitlines() if errors.exists() else []
    what = f"{fault}, at-least-once, {spec.ops} transfers on 2 real workers"
    if raised:
        raise Fail(f"{what}: your transfer raised on a worker: {raised[0]}")
    if not record["fired"]:
        raise RuntimeError(f"{what}: the fault never fired (the run ended first): nothing was tested")
    ops, _ = plan(spec)
    expected = list(record["balances"]["initial"])
    for op in ops:
        for account, delta in op["deltas"]:
            expected[account] += delta
    final = record["balances"]["final"]
    if final == expected:
        return
    counts = record["counts"]
    told = record["summary"] if counts["duplicated"] or counts["lost"] else (
        f"the balances are {sum(abs(a - b) for a, b in zip(final, expected)) // 2} units off the plan")
    raise Fail(f"{what}: {told}. {LESSONS[fault]}")


@check(points=2, timeout=150, needs=("celery",))
def fault_lab_pause_worker(student: Student):
    """The fault lab's pause-worker under at-least-once, on real workers: 0 lost, 0 twice."""
    fault_lab(student, "pause-worker")


@check(points=1, timeout=150, needs=("celery",))
def fault_lab_kill_child(student: Student):
    """The fault lab's kill-child under at-least-once, on real workers: 0 lost, 0 twice."""
    fault_lab(student, "kill-child")
