"""The fault lab's operation done by the student's ``transfer`` (what the fault checks
run on real workers, in place of ``scenarios.ledger:apply``).

    fault lab ──taskrace.op("idem_adapter:apply", [store, op, ...])──> broker ──> worker
    worker: mark the op running (where, since when: the lab aims its fault at it),
            work for work_s, then the student's transfer(state_url, transfer_id,
            src_key, dst_key, amount), then record what it said (applied / skipped)

The workers import this module because the check names it in their
TASKRACE_TASK_MODULES and puts this folder on their PYTHONPATH; it imports the student's
solution.py from TASKRACE_STUDENT_FOLDER (by path, never by pickle). The record is the
student's own word (its return value), so the check judges by the balances, which are
the truth: a kill between the transfer and this record costs the record, not the money.
"""
from __future__ import annotations

import json
import os
import time

from scenarios import ledger
from workers.redis_state import client

FOLDER_ENV = "TASKRACE_STUDENT_FOLDER"
ERRORS_ENV = "TASKRACE_STUDENT_ERRORS"  # a file: one line per exception the transfer raised

_RECORD = """
-- KEYS: running, applied or skipped, log; ARGV: op, kind, worker
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
redis.call('RPUSH', KEYS[3], cjson.encode({t, ARGV[1], ARGV[2], ARGV[3]}))
"""
_solution = None


def _transfer():
    global _solution
    if _solution is None:
        from taskrace.grading import load_solution

        _solution = load_solution(os.environ[FOLDER_ENV])
    return _solution.transfer


def transfer_id(store: str, op: dict) -> str:
    return f"{store.rsplit(':', 1)[-1]}.{op['op']}"


def apply(store: str, op: dict, idempotent: bool, work_s: float, *, redelivered: bool = False,
          worker: str = "") -> None:
    url = os.environ[ledger.STATE_ENV]
    r = client(url)
    k = ledger.keys(store)
    with r.pipeline(transaction=True) as pipe:  # as the ledger's own apply says it started
        pipe.hset(k["running"], op["op"], json.dumps([worker, time.time()]))
        pipe.hincrby(k["started"], op["op"], 1)
        pipe.incr(k["started_total"])
        if redelivered:
            pipe.hincrby(k["redelivered"], op["op"], 1)
        pipe.execute()
    if work_s:
        time.sleep(work_s)  # the work a real task does before its effect
    (src, _), (dst, amount) = op["deltas"]
    try:
        moved = _transfer()(url, transfer_id(store, op), ledger.account_key(store, src),
                            ledger.account_key(store, dst), amount)
    except Exception as exc:  # noqa: BLE001 - told to the check, then raised for Celery's log
        _tell(exc)
        raise
    kind = "skipped" if moved is False else "applied"
    r.eval(_RECORD, 3, k["running"], k[kind], k["log"], op["op"], kind, worker)


def _tell(exc: Exception) -> None:
    path = os.environ.get(ERRORS_ENV)
    if not path:
        return
    tb = exc.__traceback__
    where = ""
    while tb is not None:  # the student's deepest frame: file and line, as a grader says it
        if os.path.basename(tb.tb_frame.f_code.co_filename) == "solution.py":
            where = f"solution.py, line {tb.tb_lineno}: "
        tb = tb.tb_next
    line = f"{where}{type(exc).__name__}: {exc}".splitlines()[0][:200]
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
