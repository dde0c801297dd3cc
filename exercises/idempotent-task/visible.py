"""Visible checks of idempotent-task (``taskrace exercise check .`` runs them): the same
transfer delivered twice, one after the other, moves the money once. The hidden checks
also crash a delivery half way, run two at once, and run your task on real Celery workers
under the fault lab's faults."""
import uuid

import redis

from taskrace.grading import Fail, Student, check


def _accounts(url: str):
    r = redis.Redis.from_url(url, decode_responses=True)
    tag = uuid.uuid4().hex[:8]
    src, dst = f"acct:{tag}:alice", f"acct:{tag}:bob"
    r.mset({src: 100, dst: 0})
    return r, src, dst, f"t-{tag}"


@check(points=1, timeout=30, needs=("redis",))
def delivered_twice_moves_the_money_once(student: Student):
    """Two deliveries of one transfer, one after the other: the money moves once."""
    transfer = student.solution().transfer
    r, src, dst, tid = _accounts(student.redis_url)
    first = transfer(student.redis_url, tid, src, dst, 30)
    second = transfer(student.redis_url, tid, src, dst, 30)
    balances = [int(v) for v in r.mget(src, dst)]
    if balances != [70, 30]:
        raise Fail(f"after two deliveries of transfer {tid} (30 from alice to bob): alice {balances[0]}, "
                   f"bob {balances[1]}; exactly once is alice 70, bob 30")
    if (first, second) != (True, False):
        raise Fail(f"transfer returned {first!r}, then {second!r}: True when the call moved the money, "
                   f"False when that id had been applied already")


@check(points=1, timeout=30, needs=("redis",))
def a_new_id_moves_again(student: Student):
    """Two transfers with different ids between the same accounts: both move."""
    transfer = student.solution().transfer
    r, src, dst, tid = _accounts(student.redis_url)
    transfer(student.redis_url, tid + "-a", src, dst, 30)
    transfer(student.redis_url, tid + "-b", src, dst, 30)
    balances = [int(v) for v in r.mget(src, dst)]
    if balances != [40, 60]:
        raise Fail(f"two transfers with different ids left alice {balances[0]}, bob {balances[1]} "
                   f"(expected 40, 60): skip only an id already applied")
