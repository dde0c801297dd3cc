"""Hidden checks of store-step: the student's transfer on Redis, many clients at once.

    check process                                  the check's own Redis (loopback)
      clients (threads, or forked processes),  -->   bank:<run>:acct:<i>  balances
      each with its own connection, run their
      plan: t0, ok = transfer(r, src, dst, n), t1
      -> the history: (id, src, dst, amount, ok, t0, t1) in shared memory
      judge: the history replayed from the initial balances (below) against what
             Redis holds at the end

The history checker does not look at the student's code: it only knows what each call
was asked and what it answered, and when. Replayed sequentially, the transfers that said
True must give exactly the balances Redis holds (every delta counts once, in any order).
The order in which calls returned is not the order in which their effects happened, so
the replay that looks for a balance below zero takes the most favourable order the clocks
allow (a credit as early as its call began, a debit as late as it ended): a balance below
zero even then is below zero in every order. A refusal is wrong when the source held the
amount for the whole call even in the least favourable order.
"""
from __future__ import annotations

import bisect
import itertools
import multiprocessing
import random
import threading
import time
import traceback
import uuid
from collections import defaultdict

import redis

from taskrace.grading import Fail, StudentError, check, stalled

CTX = multiprocessing.get_context("fork")  # children inherit the student's module as imported
STALL_S = 5.0  # no transfer finished for this long, while some are left: stuck
_seeds = itertools.count(1)


# --- the client the student is handed: a redis.Redis that counts failed transactions ----

class _CountingPipeline(redis.client.Pipeline):
    """A failed EXEC (a watched key changed; redis-py raises WatchError) is counted: the
    judge's message can then say what the student's code did with it."""

    def execute(self, raise_on_error: bool = True):
        try:
            return super().execute(raise_on_error)
        except redis.WatchError:
            self._failed.value += 1
            raise


class Client(redis.Redis):
    def pipeline(self, transaction: bool = True, shard_hint=None):
        pipe = _CountingPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe._failed = self._failed
        return pipe


def connect(url: str, failed) -> Client:
    r = Client.from_url(url, decode_responses=True, socket_timeout=30, socket_connect_timeout=5)
    r._failed = failed
    return r


# --- the history checker (independent of the student's code) ---------------------------

def replay(initial: dict[str, int], history: list[tuple]) -> dict:
    """``history``: (id, src, dst, amount, ok, t0, t1), one per call. What the answers
    imply: the final balances, the lowest balance in the most favourable order, the
    refusals no order explains."""
    done = [h for h in history if h[4]]
    best = sorted([(h[5], 0, h[2], h[3], h[0]) for h in done] +      # credits early
                  [(h[6], 1, h[1], -h[3], h[0]) for h in done])      # debits late
    balances, below = dict(initial), None
    for _, _, account, delta, op in best:
        balances[account] += delta
        if balances[account] < 0 and (below is None or balances[account] < below[1]):
            below = (account, balances[account], op)
    # the least favourable order: debits as early as their call began, credits as late
    worst = sorted([(h[5], 0, h[1], -h[3]) for h in done] + [(h[6], 1, h[2], h[3]) for h in done])
    timeline: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    running = dict(initial)
    for t, _, account, delta in worst:
        running[account] += delta
        timeline[account][0].append(t)
        timeline[account][1].append(running[account])
    wrongly_refused = [h for h in history if h[4] is False
                       and _lowest(timeline[h[1]], initial[h[1]], h[5], h[6]) >= h[3]]
    return {"final": balances, "below_zero": below, "wrongly_refused": wrongly_refused}


def _lowest(timeline: tuple[list, list], start: int, t0: float, t1: float) -> int:
    """The lowest value of a pessimistic balance timeline between t0 and t1."""
    times, values = timeline
    i = bisect.bisect_right(times, t0)
    low = values[i - 1] if i else start
    while i < len(times) and times[i] <= t1:
        low = min(low, values[i])
        i += 1
    return low


# --- running the clients ------------------------------------------------------------------

def _one_line(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.endswith("solution.py")]
    where = f"solution.py, line {frames[-1].lineno}: " if frames else ""
    return f"{where}{type(exc).__name__}: {exc}".splitlines()[0]


def _client(transfer, url, failed, plan, outcomes, t0s, t1s, done, me, errors, go) -> None:
    """One client with its own connection: its plan, in order. outcomes[k]: 1 moved,
    0 refused, 2 not a bool; t0s/t1s: when the call began and returned."""
    r = connect(url, failed)
    go.wait()
    try:
        for k, (src, dst, amount) in enumerate(plan):
            t0s[k] = time.monotonic()  # one clock for every process of this host
            try:
                ok = transfer(r, src, dst, amount)
            except Exception as exc:
                errors.put(_one_line(exc))
                return
            t1s[k] = time.monotonic()
            outcomes[k] = 1 if ok is True else 0 if ok is False else 2
            done[me] = k + 1
    finally:
        r.close()



def race(transfer, url: str, kind: str, initial: dict[str, int], plans) -> dict:
    """Every plan at once, one client each, on ``kind``; the history and the end state."""
    admin = redis.Redis.from_url(url, decode_responses=True)
    try:
        admin.mset(initial)
        failed = CTX.RawValue("q", 0)
        outcomes = [CTX.RawArray("b", [-1] * len(p)) for p in plans]
        t0s = [CTX.RawArray("d", len(p)) for p in plans]
        t1s = [CTX.RawArray("d", len(p)) for p in plans]
        done = CTX.RawArray("q", len(plans))
        errors, go = CTX.SimpleQueue(), CTX.Event()
        make = (lambda **kw: threading.Thread(daemon=True, **kw)) if kind == "threads" else \
            (lambda **kw: CTX.Process(daemon=True, **kw))
        workers = [make(target=_client, args=(transfer, url, failed, plan, outcomes[k], t0s[k], t1s[k],
                                              done, k, errors, go))
                   for k, plan in enumerate(plans)]
        try:
            for w in workers:
                w.start()
            go.set()
            stuck = stalled(workers, done, STALL_S)
        finally:
            if kind == "processes":
                for w in workers:
                    if w.is_alive():
                        w.kill()
                    w.join(5)
        found = []
        while not errors.empty():
            found.append(errors.get())
        history = [(f"{k}.{i}", *op, {1: True, 0: False}.get(outcomes[k][i], outcomes[k][i]),
                    t0s[k][i], t1s[k][i])
                   for k, plan in enumerate(plans) for i, op in enumerate(plan[:done[k]])]
        final = dict(zip(initial, (int(v) for v in admin.mget(list(initial)))))
        admin.delete(*initial)
        return {"stalled": stuck, "errors": found, "history": history, "final": final,
                "failed_execs": failed.value, "planned": sum(len(p) for p in plans)}
    finally:
        admin.close()


def judge(kind: str, initial: dict[str, int], result: dict) -> None:
    """Fail with the lesson if the history and the end state disagree (see the module)."""
    history, final = result["history"], result["final"]
    where = f"{result['planned']} transfers from {kind}"
    if result["stalled"]:
        raise Fail(f"no transfer finished for {STALL_S:.0f} s ({where}): is a client waiting "
                   "for something that never comes (a lock nobody releases, a retry that never ends)?")
    if result["errors"]:
        raise StudentError(result["errors"][0])
    if len(history) < result["planned"]:
        raise Fail(f"only {len(history)} of {where} finished: a client ended early")
    if any(h[4] not in (True, False) for h in history):
        raise Fail("transfer returned something else than True or False: return True when the "
                   "money moved, False when it was refused")
    if not any(h[4] for h in history):
        raise Fail(f"none of {where} moved money: refuse only when the source holds less than "
                   "the amount")
    name = {key: f"account {i}" for i, key in enumerate(initial)}
    lowest = min(final, key=final.get)
    if final[lowest] < 0:
        raise Fail(f"{name[lowest]} ended at {final[lowest]}, below zero ({where}): two clients "
                   "both saw enough money and both took it; the check (balance >= amount) "
                   "must be part of the same atomic step as the decrement")
    seen = replay(initial, history)
    if seen["final"] != final:
        account = next(k for k in initial if seen["final"][k] != final[k])
        if result["failed_execs"]:
            raise Fail(f"{result['failed_execs']} transactions failed while transfer returned True "
                       f"({where}; {name[account]} holds {final[account]}, the answers say "
                       f"{seen['final'][account]}): EXEC returned None: the transaction did not "
                       "happen; retry it (redis-py raises WatchError: WATCH, read, MULTI, "
                       "write, EXEC again)")
        total = (f"the bank's total went from {sum(initial.values())} to {sum(final.values())}"
                 if sum(final.values()) != sum(initial.values()) else
                 f"{name[account]} holds {final[account]} but the transfers that returned True "
                 f"leave it at {seen['final'][account]}")
        raise Fail(f"{total} ({where}): an update was lost: another client wrote between your "
                   "read (GET) and your write (SET); make them one atomic step (a Lua script, or "
                   "WATCH/MULTI/EXEC retried)")
    if seen["below_zero"]:
        account, value, op = seen["below_zero"]
        raise Fail(f"{name[account]} went to {value}, below zero, in every order your answers "
                   f"allow (transfer {op}, {where}): two transfers took the same money; check and "
                   "decrement in one atomic step")
    if seen["wrongly_refused"]:
        op, src, _, amount = seen["wrongly_refused"][0][:4]
        raise Fail(f"transfer {op} of {amount} from {name[src]} returned False although it held "
                   f"at least {amount} during the whole call ({where}): refuse only when the "
                   "balance is short (a failed EXEC means: retry)")


def accounts(n: int, balance: int) -> dict[str, int]:
    run = uuid.uuid4().hex[:8]  # repeats share the check's Redis: keys of their own
    return {f"bank:{run}:acct:{i}": balance for i in range(n)}


def random_plans(seed: int, keys: list[str], clients: int, per_client: int, top: int):
    rng = random.Random(seed)
    return [[(*rng.sample(keys, 2), rng.randint(1, top)) for _ in range(per_client)]
            for _ in range(clients)]


def _transfer_of(student):
    transfer = getattr(student.solution(), "transfer", None)
    if not callable(transfer):
        raise Fail("solution.py has no function transfer(r, src, dst, amount)")
    return transfer


@check(points=1, timeout=30, needs=("redis",))
def one_transfer_at_a_time(student):
    """One transfer at a time: it moves the money, or refuses and changes nothing."""
    transfer = _transfer_of(student)
    initial = accounts(3, 0)
    a, b, c = initial
    r = connect(student.redis_url, CTX.RawValue("q", 0))
    try:
        r.mset({a: 100, b: 50, c: 0})
        for (src, dst, amount), want, balances in (((a, b, 30), True, [70, 80, 0]),
                                                   ((c, a, 1), False, [70, 80, 0]),
                                                   ((b, c, 80), True, [70, 0, 80])):
            got = transfer(r, src, dst, amount)
            now = [int(v) for v in r.mget([a, b, c])]
            if got is not want or now != balances:
                shown = {a: 0, b: 1, c: 2}
                raise Fail(f"transfer from account {shown[src]} to {shown[dst]} of {amount} "
                           f"returned {got!r} and left {now}; expected {want} and {balances}")
    finally:
        r.delete(a, b, c)
        r.close()


@check(points=2, timeout=90, repeat=2, needs=("redis",))
def last_coins_go_once(student):
    """Eight clients (threads) all try to move the same last 100 at once: one may."""
    transfer = _transfer_of(student)
    for _ in range(10):  # rounds: each a fresh race for one account's whole balance
        initial = accounts(2, 0)
        src, dst = initial
        initial[src] = 100
        result = race(transfer, student.redis_url, "threads", initial, [[(src, dst, 100)]] * 8)
        judge("8 threads, all at once", initial, result)


@check(points=3, timeout=120, repeat=3, needs=("redis",))
def threads_keep_every_transfer(student):
    """Eight threads with their own connections transfer at once: nothing lost or overdrawn."""
    transfer = _transfer_of(student)
    initial = accounts(4, 30)  # little money: clashes and refusals are common
    plans = random_plans(next(_seeds), list(initial), 8, 100, 20)
    judge("8 threads", initial, race(transfer, student.redis_url, "threads", initial, plans))


@check(points=2, timeout=120, repeat=2, needs=("redis",))
def processes_keep_every_transfer(student):
    """Four processes transfer at once with plenty of money: every transfer moves it."""
    transfer = _transfer_of(student)
    initial = accounts(4, 1_000_000)  # no transfer here may be refused
    plans = random_plans(1000 + next(_seeds), list(initial), 4, 150, 20)
    judge("4 processes", initial, race(transfer, student.redis_url, "processes", initial, plans))
