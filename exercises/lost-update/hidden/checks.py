"""Hidden checks of lost-update: the student's transfer, raced on threads and on processes.

    check process
      accounts  multiprocessing.Array of balances (shared memory, as the seed's Value)
      locks     one per account, counting who takes them (threading.Lock on threads,
                multiprocessing.Lock on processes)
      clients   each runs its plan: transfer(accounts, locks, src, dst, amount) -> bool,
                the answers kept in shared memory, a done counter per client
      watcher   no transfer finished for STALL_S seconds: a deadlock (threads are daemons
                left behind, processes are killed)
      judge     the final balances against the initial ones plus every transfer that said
                True (order does not matter: every delta is added once), the total, and
                no balance below zero

On threads the switch interval drops to a microsecond, so the interpreter switches
threads between a read and a write as often as it can: a race that would show once in a
hundred runs shows in every run. Processes need no help: two cores run them at once.
"""
from __future__ import annotations

import itertools
import multiprocessing
import random
import sys
import threading
import time
import traceback
import types

from taskrace.grading import Fail, StudentError, check, stalled

# fork: the clients inherit the student's module as the check imported it (it has a
# name of its own in sys.modules that a spawned child could not import again).
CTX = multiprocessing.get_context("fork")
STALL_S = 3.0        # no transfer finished for this long, while some are left: a deadlock
SWITCH_S = 1e-6      # the threads' switch interval during a race
ALONE_S = 5.0        # one transfer alone must return within this
CLIENTS = 4
_seeds = itertools.count(1)  # each repeat of a check races another plan

DEADLOCK = ("transfers A->B and B->A waited on each other: take the two locks in one "
            "global order (e.g. the lower account number first)")


class CountingLock:
    """A lock that counts its acquisitions (in shared memory, so processes count too):
    the judge's hint tells a transfer that never took the locks it was given from one
    that took them too briefly."""

    def __init__(self, lock, taken) -> None:
        self._lock, self._taken = lock, taken

    def acquire(self, *args, **kwargs) -> bool:
        got = self._lock.acquire(*args, **kwargs)
        if got:
            self._taken.value += 1
        return got

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> "CountingLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def locked(self) -> bool:
        if hasattr(self._lock, "locked"):
            return self._lock.locked()
        if self._lock.acquire(False):  # multiprocessing.Lock has no locked() before 3.12
            self._lock.release()
            return False
        return True


class Balances:
    """The shared balances: a multiprocessing.Array behind ``accounts[i]`` and
    ``accounts[i] = v``. A read takes a moment, as a real store's would (``sleep(0)``
    lets another thread run): the gap between a read and its write is where a lost
    update happens, and here it is never empty."""

    def __init__(self, initial: list[int]) -> None:
        self._array = CTX.Array("q", initial)  # each single access under the Array's own lock

    def __getitem__(self, account: int) -> int:
        value = self._array[account]
        time.sleep(0)
        return value

    def __setitem__(self, account: int, value: int) -> None:
        self._array[account] = value

    def __len__(self) -> int:
        return len(self._array)

    def snapshot(self) -> list[int]:
        return list(self._array[:])


def _transfer_of(student):
    module = student.solution()
    transfer = getattr(module, "transfer", None)
    if not callable(transfer):
        raise Fail("solution.py has no function transfer(accounts, locks, src, dst, amount)")
    return transfer


def _one_line(exc: BaseException) -> str:
    """``solution.py, line 12: ZeroDivisionError: division by zero`` (the student's frame)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.endswith("solution.py")]
    where = f"solution.py, line {frames[-1].lineno}: " if frames else ""
    return f"{where}{type(exc).__name__}: {exc}".splitlines()[0]


def _client(transfer, accounts, locks, plan, outcomes, done, me, errors, go) -> None:
    """One client: its plan, in order. outcomes[k]: 1 moved, 0 refused, 2 not a bool."""
    go.wait()  # all together: a client started late would run alone, and race nobody
    for k, (src, dst, amount) in enumerate(plan):
        try:
            ok = transfer(accounts, locks, src, dst, amount)
        except Exception as exc:
            errors.put(_one_line(exc))
            return
        outcomes[k] = 1 if ok is True else 0 if ok is False else 2
        done[me] = k + 1



def race(transfer, kind: str, initial: list[int], plans: list[list[tuple]]) -> dict:
    """Run every plan at once on ``kind`` ("threads" or "processes"); what happened."""
    accounts = Balances(initial)
    taken = CTX.RawValue("q", 0)
    make_lock = threading.Lock if kind == "threads" else CTX.Lock
    locks = [CountingLock(make_lock(), taken) for _ in initial]
    outcomes = [CTX.RawArray("b", [-1] * len(plan)) for plan in plans]
    done = CTX.RawArray("q", len(plans))
    errors = CTX.SimpleQueue()
    go = CTX.Event()
    if kind == "threads":
        # daemons: a deadlocked client must not keep the check's process alive
        workers = [threading.Thread(target=_client, daemon=True,
                                    args=(transfer, accounts, locks, plan, out, done, k, errors, go))
                   for k, (plan, out) in enumerate(zip(plans, outcomes))]
    else:
        workers = [CTX.Process(target=_client, daemon=True,
                               args=(transfer, accounts, locks, plan, out, done, k, errors, go))
                   for k, (plan, out) in enumerate(zip(plans, outcomes))]
    interval = sys.getswitchinterval()
    if kind == "threads":
        sys.setswitchinterval(SWITCH_S)
    try:
        for w in workers:
            w.start()
        go.set()
        stuck = stalled(workers, done, STALL_S)
    finally:
        sys.setswitchinterval(interval)
        if kind == "processes":
            for w in workers:
                if w.is_alive():
                    w.kill()
                w.join(5)
    found = []
    while not errors.empty():
        found.append(errors.get())
    return {"stalled": stuck, "errors": found, "final": accounts.snapshot(),
            "outcomes": [list(o) for o in outcomes], "done": list(done), "taken": taken.value,
            "exitcodes": [getattr(w, "exitcode", None) for w in workers]}


def _names(code: types.CodeType):
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names(const)


def hint(transfer, taken: int) -> str:
    """What the student most likely did, from which locks were taken."""
    if taken == 0:
        code = getattr(transfer, "__code__", None)
        if code and {"Lock", "RLock"} & set(_names(code)):
            return ("a Lock() made inside transfer is new at every call, so it protects "
                    "nothing: take the locks you are given, locks[src] and locks[dst]")
        return ("transfer never took locks[src] or locks[dst]: hold both from the read "
                "to the last write")
    return ("the locks were taken, but not held from the read to the last write: hold "
            "locks[src] and locks[dst] across the whole read-check-write")


def judge(transfer, kind: str, initial: list[int], plans, result: dict) -> None:
    """Fail with the lesson if the race lost, made or overdrew money (see the module)."""
    count = sum(len(p) for p in plans)
    where = f"{count} transfers on {len(plans)} {kind}"
    if result["stalled"]:
        raise Fail(f"no transfer finished for {STALL_S:.0f} s ({where}): {DEADLOCK}")
    if result["errors"]:
        raise StudentError(result["errors"][0])
    if sum(result["done"]) < count:
        codes = [c for c in result["exitcodes"] if c not in (0, None)]
        raise Fail(f"only {sum(result['done'])} of {where} finished: a client ended early"
                   + (f" (exit code {codes[0]})" if codes else ""))
    if any(o == 2 for out in result["outcomes"] for o in out):
        raise Fail("transfer returned something else than True or False: return True when "
                   "the money moved, False when it was refused")
    expected, moved = list(initial), 0
    for plan, out in zip(plans, result["outcomes"]):
        for (src, dst, amount), o in zip(plan, out):
            if o == 1:
                expected[src] -= amount
                expected[dst] += amount
                moved += 1
    if moved == 0:
        raise Fail(f"none of {where} moved money: refuse a transfer only when the source "
                   "holds less than the amount")
    final = result["final"]
    if sum(final) != sum(initial):
        problem = (f"the bank's total went from {sum(initial)} to {sum(final)} after {where}: "
                   "two transfers read the same balance and each wrote its own result")
    elif min(final) < 0:
        i = final.index(min(final))
        problem = (f"account {i} ended at {final[i]} after {where}: two transfers both saw "
                   "enough money and both took it")
    elif final != expected:
        i = next(k for k, (a, b) in enumerate(zip(final, expected)) if a != b)
        problem = (f"account {i} ended at {final[i]}, but the transfers that returned True "
                   f"leave it at {expected[i]} ({where}): an update was lost")
    else:
        return
    raise Fail(f"{problem}; {hint(transfer, result['taken'])}")


def random_plans(seed: int, clients: int, per_client: int, accounts: int, top: int):
    rng = random.Random(seed)
    return [[(*rng.sample(range(accounts), 2), rng.randint(1, top)) for _ in range(per_client)]
            for _ in range(clients)]


def opposite_plans(clients: int, per_client: int):
    """Half the clients move 1 from account 0 to 1, the other half from 1 to 0."""
    return [[(k % 2, 1 - k % 2, 1)] * per_client for k in range(clients)]


@check(points=1, timeout=30)
def one_transfer_at_a_time(student):
    """One transfer at a time: it moves the money, or refuses and changes nothing."""
    transfer = _transfer_of(student)
    accounts = Balances([100, 50, 0])
    taken = CTX.RawValue("q", 0)
    locks = [CountingLock(threading.Lock(), taken) for _ in range(3)]
    steps = [((0, 1, 30), True, [70, 80, 0]),
             ((2, 0, 1), False, [70, 80, 0]),
             ((1, 2, 80), True, [70, 0, 80])]  # all of a balance may go
    for (src, dst, amount), want, balances in steps:
        answer: list = []
        call = threading.Thread(target=lambda: answer.append(transfer(accounts, locks, src, dst, amount)),
                                daemon=True)
        call.start()
        call.join(ALONE_S)
        if call.is_alive():
            raise Fail(f"transfer(accounts, locks, {src}, {dst}, {amount}) alone did not return "
                       f"in {ALONE_S:.0f} s: does it wait for a lock it already holds?")
        if not answer:
            raise Fail(f"transfer(accounts, locks, {src}, {dst}, {amount}) raised an exception")
        if answer[0] is not want or accounts.snapshot() != balances:
            raise Fail(f"transfer(accounts, locks, {src}, {dst}, {amount}) returned {answer[0]!r} "
                       f"and left {accounts.snapshot()}; expected {want} and {balances}")
        held = [i for i, lock in enumerate(locks) if lock.locked()]
        if held:
            raise Fail(f"locks[{held[0]}] is still held after transfer returned: release every "
                       "lock you take (with locks[i]: does it for you)")


@check(points=3, timeout=90, repeat=5)
def threads_keep_every_update(student):
    """Four threads transfer at once, switching every microsecond: nothing lost."""
    transfer = _transfer_of(student)
    initial = [30, 30, 30]  # few accounts, little money: clashes and refusals are common
    plans = random_plans(next(_seeds), CLIENTS, 400, len(initial), 20)
    judge(transfer, "threads", initial, plans, race(transfer, "threads", initial, plans))


@check(points=3, timeout=90, repeat=3)
def processes_keep_every_update(student):
    """Four processes transfer at once on shared memory: nothing lost."""
    transfer = _transfer_of(student)
    initial = [30, 30, 30]
    plans = random_plans(1000 + next(_seeds), CLIENTS, 400, len(initial), 20)
    judge(transfer, "processes", initial, plans, race(transfer, "processes", initial, plans))


@check(points=2, timeout=90, repeat=2)
def opposite_transfers_finish(student):
    """Transfers A->B and B->A at once, on threads then on processes: all finish."""
    transfer = _transfer_of(student)
    initial = [1000, 1000]
    for kind, per_client in (("threads", 300), ("processes", 300)):
        plans = opposite_plans(CLIENTS, per_client)
        judge(transfer, kind, initial, plans, race(transfer, kind, initial, plans))
