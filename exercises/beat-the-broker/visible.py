"""Visible checks of beat-the-broker (``taskrace exercise check .`` runs them): your
batches hold every item in order, and every worker gets a share. The hidden checks also
run your batches on two real Celery workers and compare their rate with one item per
message, measured on the same workers: 5x or more."""
from __future__ import annotations

import math

from taskrace.grading import Fail, Student, check

ITEMS = list(range(1, 201))
WORKERS = 2
SHARE_SLACK = 1.25  # the biggest batch may hold 25 % more than an even share


def _plan(solution, items: list[int], workers: int) -> list[list[int]]:
    plan = solution.batches(list(items), workers)
    if not isinstance(plan, list) or not all(isinstance(b, list) for b in plan):
        raise Fail(f"batches() returned {type(plan).__name__}, not a list of lists (each one a "
                   f"message's items, as JSON carries them)")
    return plan


# --- 1 -------------------------------------------------------------------------------------
@check(points=1, timeout=30)
def batches_hold_every_item_in_order(student: Student):
    """Concatenated, the batches are the items in order; power_batch does each item."""
    solution = student.solution()
    for workers in (WORKERS, 3):
        plan = _plan(solution, ITEMS, workers)
        flat = [x for b in plan for x in b]
        if flat != ITEMS:
            missing = len(set(ITEMS) - set(flat))
            how = (f"{missing} items missing" if missing else
                   f"{len(flat) - len(ITEMS)} items too many" if len(flat) > len(ITEMS) else "out of order")
            raise Fail(f"batches(items 1..{len(ITEMS)}, {workers}) concatenated are not the items: "
                       f"{how}. Results come back batch by batch: keep each batch's items contiguous")
        if any(not b for b in plan):
            raise Fail(f"batches(items, {workers}) made an empty batch: a message for nothing")
        for b in plan:
            got = solution.power_batch(list(b))
            if got != [solution.power(x) for x in b]:
                raise Fail(f"power_batch of a batch of {len(b)} items returned {len(got)} results"
                           f"{'' if len(got) != len(b) else ' (wrong ones)'}: one power per item, in order")


# --- 2 -------------------------------------------------------------------------------------
@check(points=1, timeout=30)
def every_worker_gets_a_share(student: Student):
    """At least one batch per worker, none much bigger than an even share."""
    solution = student.solution()
    for workers in (WORKERS, 3, 4):
        plan = _plan(solution, ITEMS, workers)
        biggest = max((len(b) for b in plan), default=0)
        even = math.ceil(len(ITEMS) / workers)
        if len(plan) < workers or biggest > SHARE_SLACK * even:
            raise Fail(f"batches(200 items, {workers} workers) made {len(plan)} batch"
                       f"{'es' if len(plan) != 1 else ''}, the biggest of {biggest} items: one chunk "
                       f"runs on one worker, so {'the others sit' if workers > 2 else 'the other sits'} "
                       f"idle while it works. Make at least one batch per worker, of about "
                       f"{even} items or fewer")


@check(points=1, timeout=30)
def few_messages(student: Student):
    """Many items per message: 5 or more on average."""
    plan = _plan(student.solution(), ITEMS, WORKERS)
    if len(plan) * 5 > len(ITEMS):
        raise Fail(f"batches(200 items, 2 workers) made {len(plan)} messages: each costs a round trip "
                   f"through Redis (milliseconds) for microseconds of work. Put many items in each "
                   f"message (the hidden check measures the rate on real workers: 5x one per message)")
