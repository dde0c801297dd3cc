"""Hidden checks of beat-the-broker: batched tiny tasks on real Celery workers.

1. the batches hold every item once, in order, and ``power_batch`` computes each;
2. every worker gets a share: at least one batch per worker, none much bigger than an
   even share;
3. on two real Celery workers (taskrace's CeleryTier, the student's module on their
   TASKRACE_TASK_MODULES): the batched run returns every item's power in order, at 5x
   or more the rate of the same items sent one per message, measured in the same check on
   the same workers (a ratio, never a wall-clock threshold).
"""
from __future__ import annotations

import math
import statistics
import time

from taskrace.grading import Fail, Student, check

ITEMS = list(range(1, 201))  # 200 items: one per message takes ~0.3-1 s on 2 workers
WORKERS = 2
GAIN_MIN = 5.0  # batched rate / one-per-message rate
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


# --- 3 -------------------------------------------------------------------------------------
def _run(tier, fn, args_list: list[tuple]) -> tuple[float, list]:
    t = time.perf_counter()
    outcomes = tier.map(fn, args_list)
    seconds = time.perf_counter() - t
    errors = [o.error for o in outcomes if o.error]
    if errors:
        raise Fail(f"on a Celery worker: {errors[0]}")
    return seconds, outcomes


@check(points=3, timeout=150, needs=("celery",))
def batched_beats_one_per_message(student: Student):
    """On 2 real Celery workers: every item's power, in order, at >= 5x the rate of one
    item per message (both measured here, on the same workers)."""
    from workers.celery_tier import CeleryTier

    solution = student.solution()
    if solution.__name__ != "solution":
        raise RuntimeError(f"the student's module loaded as {solution.__name__}: workers import 'solution'")
    plan = _plan(solution, ITEMS, WORKERS)
    expected = [solution.power(x) for x in ITEMS]
    tier = CeleryTier(workers=WORKERS, task_modules={"solution": str(student.folder)})
    try:
        tier.start()
        _run(tier, solution.power, [(x,) for x in ITEMS[:10]])  # the workers import the module
        _run(tier, solution.power_batch, [([x],) for x in ITEMS[:4]])
        one_s, _ = _run(tier, solution.power, [(x,) for x in ITEMS])
        runs = []
        for _ in range(3):
            seconds, outcomes = _run(tier, solution.power_batch, [(b,) for b in plan])
            runs.append(seconds)
            if seconds > one_s / 2:  # no faster than one per message: once is enough to say so
                break
    finally:
        tier.stop()
    got = [v for o in outcomes for v in (o.value if isinstance(o.value, list) else [o.value])]
    if got != expected:
        raise Fail(f"the batched run on Celery returned {len(got)} results for {len(ITEMS)} items"
                   f"{' (not the powers, in order)' if len(got) == len(ITEMS) else ''}")
    batched_s = statistics.median(runs)
    gain = one_s / batched_s
    if gain < GAIN_MIN:
        per = len(ITEMS) / len(plan)
        timed = (f"your batched run took {batched_s * 1e3:.0f} ms, one item per message {one_s * 1e3:.0f} ms: "
                 f"a ratio of {gain:.1f}x, under {GAIN_MIN:g}x")
        if per <= 1:
            raise Fail(f"1 item per message: {len(ITEMS)} round trips through Redis for microseconds of "
                       f"work each; {timed}. Put many items in each message")
        raise Fail(f"{len(plan)} messages of ~{per:.0f} items: {timed}. Fewer, bigger batches: each "
                   f"message costs a round trip through Redis")
