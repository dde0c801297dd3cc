"""Visible checks of choose-the-model (``taskrace exercise check .`` runs them): every
workload has an answer of the right shape. The hidden checks measure each workload on
this machine and judge your tier and your predicted speedup against what they measured."""
from __future__ import annotations

import math

from taskrace.grading import Fail, Student, check

TIERS = ("sequential", "threads", "asyncio", "processes")
WORKLOADS = ("power-cpu", "power-io", "tiny-tasks")


@check(points=1, timeout=30)
def every_workload_has_an_answer(student: Student):
    """ANSWERS names a tier and a predicted speedup for power-cpu, power-io and tiny-tasks."""
    answers = getattr(student.solution(), "ANSWERS", None)
    if not isinstance(answers, dict):
        raise Fail("solution.py needs ANSWERS, a dict: workload -> {'tier': ..., 'speedup': ...}")
    for workload in WORKLOADS:
        entry = answers.get(workload)
        tier = entry.get("tier") if isinstance(entry, dict) else None
        speedup = entry.get("speedup") if isinstance(entry, dict) else None
        if tier not in TIERS:
            raise Fail(f"ANSWERS[{workload!r}]['tier'] is {tier!r}: choose one of {', '.join(TIERS)}")
        if isinstance(speedup, bool) or not isinstance(speedup, (int, float)) or not 0 < speedup < 100 \
                or math.isnan(speedup):
            raise Fail(f"ANSWERS[{workload!r}]['speedup'] is {speedup!r}: predict {tier}'s speedup over "
                       f"sequential, a number (1.0: as fast; 2.5: two and a half times)")
