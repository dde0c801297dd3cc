"""Visible checks of store-step: run them with ``taskrace exercise check .``

They need a Redis: the checker starts a private one (loopback only) for each check. The
grader's hidden checks race your transfer longer, from many threads and processes, and
replay what it answered against what Redis holds.
"""
from __future__ import annotations

import threading
import uuid

import redis

from taskrace.grading import Fail, check


def _client(url):
    return redis.Redis.from_url(url, decode_responses=True)


@check(points=1, timeout=20, needs=("redis",))
def moves_or_refuses(student):
    """One transfer at a time: it moves the money, or refuses and changes nothing."""
    transfer = student.solution().transfer
    r = _client(student.redis_url)
    a, b = f"visible:{uuid.uuid4().hex}:a", f"visible:{uuid.uuid4().hex}:b"
    r.mset({a: 100, b: 50})
    if transfer(r, a, b, 30) is not True or [int(v) for v in r.mget(a, b)] != [70, 80]:
        raise Fail(f"transfer 30 from a to b should return True and leave [70, 80]; "
                   f"got {r.mget(a, b)}")
    if transfer(r, a, b, 71) is not False or [int(v) for v in r.mget(a, b)] != [70, 80]:
        raise Fail("transfer 71 from an account holding 70 should return False and change nothing")


@check(points=1, timeout=30, needs=("redis",))
def four_clients_one_balance(student):
    """Four threads, each with its own connection, race to move the same 100: one may."""
    transfer = student.solution().transfer
    for _ in range(10):
        a, b = f"visible:{uuid.uuid4().hex}:a", f"visible:{uuid.uuid4().hex}:b"
        _client(student.redis_url).mset({a: 100, b: 0})
        answers, go = [], threading.Barrier(4)

        def client():
            r = _client(student.redis_url)
            go.wait()
            answers.append(transfer(r, a, b, 100))

        threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        final = [int(v) for v in _client(student.redis_url).mget(a, b)]
        if answers.count(True) != 1 or final != [0, 100]:
            raise Fail(f"4 clients moved the same 100 at once: {answers.count(True)} said True, "
                       f"the accounts hold {final}; one should say True and leave [0, 100]")
