"""The fault lab's operations, and the ledger that counts where each one landed.

An operation is one Celery task (``taskrace.op``): a bank transfer (money moves between
two accounts) or a numbered job (no money, just "it ran"). Its effect and its record are
written by one Lua script, so an effect can never happen without being counted, nor be
counted without happening. The store is a Redis of its own (the bank's *database*), not
the broker: a broker restart that loses the queue must not also lose the evidence.

    harness                       broker Redis                 worker (pool child)
    plan ops -> apply_async  -->  queue / unacked  ---------->  apply(op): mark started,
                                                                work, then one EVAL:
    state Redis (the ledger) <------------------------------------ [HSETNX done op]
      <key>:acct:<i>      balances                                 INCRBY the accounts
      <key>:applied       op -> times its effect was applied       HINCRBY applied op
      <key>:skipped       op -> executions stopped by the key      HDEL running op
      <key>:started       op -> executions begun                   RPUSH log <time op ...>
      <key>:redelivered   op -> deliveries flagged redelivered
      <key>:running       op -> ["node:pid", start time] while it runs
      <key>:log           one entry per execution, on Redis's clock

``effectively-once`` adds the idempotency key: HSETNX of the op id *inside* the same script
as the balance change, so a second execution finds it and changes nothing. Setting the key
in a separate step would reopen the window it is meant to close.
"""
from __future__ import annotations

import json
import os
import time

from workers.redis_state import client

STATE_ENV = "TASKRACE_STATE_URL"

_APPLY = """
-- KEYS: applied, skipped, running, log, done, then the accounts
-- ARGV: op, idempotent (1/0), worker, then one delta per account
local op = ARGV[1]
redis.call('HDEL', KEYS[3], op)
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
if ARGV[2] == '1' and redis.call('HSETNX', KEYS[5], op, 1) == 0 then
  redis.call('HINCRBY', KEYS[2], op, 1)
  redis.call('RPUSH', KEYS[4], cjson.encode({t, op, 'skipped', ARGV[3]}))
  return 0
end
for i = 6, #KEYS do redis.call('INCRBY', KEYS[i], tonumber(ARGV[i - 2])) end
redis.call('HINCRBY', KEYS[1], op, 1)
redis.call('RPUSH', KEYS[4], cjson.encode({t, op, 'applied', ARGV[3]}))
return 1
"""


def keys(store: str) -> dict[str, str]:
    return {name: f"{store}:{name}" for name in
            ("applied", "skipped", "running", "log", "done", "started", "redelivered", "started_total")}


def account_key(store: str, account: int) -> str:
    return f"{store}:acct:{account}"


def apply(store: str, op: dict, idempotent: bool, work_s: float, *, redelivered: bool = False,
          worker: str = "") -> None:
    """One execution of ``op`` (``{"op": id, "deltas": [[account, delta], ...]}``): say it
    started (and where, so the lab can kill exactly this process), do the work, then
    apply and record it in one atomic step."""
    r = client(os.environ.get(STATE_ENV))
    k = keys(store)
    with r.pipeline(transaction=True) as pipe:
        # where and since when: the lab aims its fault at work with most of its time ahead
        pipe.hset(k["running"], op["op"], json.dumps([worker, time.time()]))
        pipe.hincrby(k["started"], op["op"], 1)
        pipe.incr(k["started_total"])
        if redelivered:
            pipe.hincrby(k["redelivered"], op["op"], 1)
        pipe.execute()
    if work_s:
        time.sleep(work_s)  # the work a real task does before it commits its effect
    deltas = op.get("deltas") or []
    r.eval(_APPLY, 5 + len(deltas), k["applied"], k["skipped"], k["running"], k["log"], k["done"],
           *[account_key(store, a) for a, _ in deltas], op["op"], int(idempotent), worker,
           *[d for _, d in deltas])


def create(r, store: str, balances: list[int]) -> None:
    if balances:
        r.mset({account_key(store, i): v for i, v in enumerate(balances)})


def snapshot(r, store: str, accounts: int) -> dict:
    """Everything the checker needs, read once at the end of a run."""
    k = keys(store)

    def counts(name):
        return {op: int(v) for op, v in r.hgetall(k[name]).items()}

    balances = ([int(v) for v in r.mget([account_key(store, i) for i in range(accounts)])]
                if accounts else [])
    return {"applied": counts("applied"), "skipped": counts("skipped"), "started": counts("started"),
            "redelivered": counts("redelivered"),
            "balances": balances,
            "log": [json.loads(e) for e in r.lrange(k["log"], 0, -1)]}


def progress(r, store: str) -> dict:
    """Cheap counters for the harness's watch loop (a few commands per poll)."""
    k = keys(store)
    with r.pipeline(transaction=False) as pipe:
        pipe.get(k["started_total"])
        pipe.hlen(k["applied"])
        pipe.llen(k["log"])
        pipe.hgetall(k["running"])
        started, distinct, executions, running = pipe.execute()
    return {"started": int(started or 0), "applied_distinct": distinct, "executions": executions,
            "running": {op: json.loads(v) for op, v in running.items()}}


def clear(r, store: str, accounts: int) -> None:
    r.delete(*keys(store).values(), *[account_key(store, i) for i in range(accounts)])
