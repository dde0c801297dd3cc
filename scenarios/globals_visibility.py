"""The seed's "global variables" demos: each task appends its result to a module-level
list. Threads run in the caller's process and append to the caller's list; processes
(and Celery workers) append to *their own copy* of the module, which the caller never
sees. The verdict's ``visible`` says which happened, and ``ok`` says whether that is
what the tier's memory model predicts (``Tier.shares_memory``).

(The seed's thread demo appends to an undefined ``results`` instead of
``global_results``; here the name is right, so the claim can really be observed.)
"""
from __future__ import annotations

from scenarios.base import Execution, Param, Scenario, Verdict, task_errors

global_results: list = []


def calculate_raise_to(x: list[int], y: int) -> list[int]:
    powers = [i**y for i in x]
    global_results.append(powers)
    return powers


class GlobalsVisibility(Scenario):
    name = "globals"
    summary = "tasks append to a module-level list: does the caller see it afterwards?"
    params = (
        Param("tasks", int, 2, "how many tasks append (y = 2, 3, ...)", min=1, max=10_000),
        Param("size", int, 7, "input list [1..size]", min=1, max=100_000),
    )

    def task_args(self) -> list[tuple]:
        x = list(range(1, self.p["size"] + 1))
        return [(x, 2 + k) for k in range(self.p["tasks"])]

    def execute(self, tier) -> Execution:
        global_results.clear()
        outcomes = tier.map(calculate_raise_to, self.task_args())
        seen = len(global_results)
        global_results.clear()
        return Execution(outcomes, units=len(outcomes), data={"seen_in_caller": seen})

    def check(self, execution, tier) -> Verdict:
        tasks = len(execution.outcomes)
        seen = execution.data["seen_in_caller"]
        visible = seen == tasks
        errors = task_errors(execution.outcomes)
        answer = [o.value for o in execution.outcomes]
        right = answer == [[i**y for i in x] for x, y in self.task_args()]
        ok = not errors and right and visible == tier.shares_memory and seen in (0, tasks)
        return Verdict(ok, f"visible={tier.shares_memory}", f"visible={visible}", answer=answer,
                       details={"visible": visible, "appended_seen_by_caller": seen,
                                "tasks": tasks, "errors": errors})
