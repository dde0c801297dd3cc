"""Visible checks of lost-update: run them with ``taskrace exercise check .``

The grader's hidden checks race your transfer longer, on threads and on processes, with
transfers in both directions at once.
"""
from __future__ import annotations

import multiprocessing
import random
import sys
import threading
import time

from taskrace.grading import Fail, check


class Balances:
    """Shared balances (a multiprocessing.Array); a read takes a moment, as a store's would."""

    def __init__(self, initial):
        self._array = multiprocessing.Array("q", initial)

    def __getitem__(self, account):
        value = self._array[account]
        time.sleep(0)  # another thread may run here, between your read and your write
        return value

    def __setitem__(self, account, value):
        self._array[account] = value

    def snapshot(self):
        return list(self._array[:])


@check(points=1, timeout=10)
def moves_or_refuses(student):
    """One transfer at a time: it moves the money, or refuses and changes nothing."""
    transfer = student.solution().transfer
    accounts, locks = Balances([100, 50]), [threading.Lock(), threading.Lock()]
    if transfer(accounts, locks, 0, 1, 30) is not True or accounts.snapshot() != [70, 80]:
        raise Fail(f"transfer 30 from 0 to 1 should return True and leave [70, 80]; "
                   f"got {accounts.snapshot()}")
    if transfer(accounts, locks, 0, 1, 71) is not False or accounts.snapshot() != [70, 80]:
        raise Fail("transfer 71 from an account holding 70 should return False and change nothing")


@check(points=1, timeout=30)
def two_threads_lose_nothing(student):
    """Two threads transfer at once (a switch every microsecond): the total stays 60."""
    transfer = student.solution().transfer
    accounts, locks = Balances([20, 20, 20]), [threading.Lock() for _ in range(3)]
    rng = random.Random(1)
    plans = [[(*rng.sample(range(3), 2), rng.randint(1, 10)) for _ in range(300)] for _ in range(2)]

    def client(plan):
        for src, dst, amount in plan:
            transfer(accounts, locks, src, dst, amount)

    threads = [threading.Thread(target=client, args=(plan,), daemon=True) for plan in plans]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
    finally:
        sys.setswitchinterval(interval)
    if any(t.is_alive() for t in threads):
        raise Fail("the two threads did not finish in 10 s: are they waiting on each other's locks?")
    final = accounts.snapshot()
    if sum(final) != 60 or min(final) < 0:
        raise Fail(f"after 600 transfers the balances are {final} (total {sum(final)}, "
                   "should be 60, none below 0): an update was lost")
