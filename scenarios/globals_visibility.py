"""The seed's "global variables" demos, and its answer to them.

``--store module`` (the default; the seed's two globals demos): each task appends its
result to a module-level list. Threads run in the caller's process and append to the
caller's list; processes (and Celery workers) append to *their own copy* of the module,
which the caller never sees.

``--store shared`` (the seed's "share memory between processes"): each task writes its
powers into a store made for sharing, the tier's accounts: the caller's memory for
threads, a ``multiprocessing.Array`` for processes, a Redis key for Celery. Now every
tier's caller sees every write. Shared memory can only be handed to a process when it
starts, so these tasks run as actors (a process each, as in the seed).

The verdict's ``visible`` says which happened, and ``ok`` says whether that is what the
tier's memory model predicts (``Tier.shares_memory``; a shared store is visible always).
(The seed's thread demo appends to an undefined ``results`` instead of
``global_results``; here the name is right, so the claim can really be observed.)
"""
from __future__ import annotations

from scenarios.base import BadInput, Execution, Param, Scenario, Verdict, task_errors
from workers.base import Actor

global_results: list = []


def calculate_raise_to(x: list[int], y: int) -> list[int]:
    powers = [i**y for i in x]
    global_results.append(powers)
    return powers


def write_powers(store, first: int, x: list[int], y: int) -> list[int]:
    """The shared-store task: powers written into slots ``first..`` of the tier's store."""
    powers = [i**y for i in x]
    for offset, value in enumerate(powers):
        store.write(first + offset, value)
    return powers


INT64_MAX = 2**63 - 1  # a multiprocessing.Array('q') slot
MAX_SHARED_TASKS = 64  # one actor (a process, on processes) per task


class GlobalsVisibility(Scenario):
    name = "globals"
    summary = "tasks append to a module-level list: does the caller see it afterwards?"
    params = (
        Param("tasks", int, 2, "how many tasks append (y = 2, 3, ...)", min=1, max=10_000),
        Param("size", int, 7, "input list [1..size]", min=1, max=100_000),
        Param("store", str, "module", "module: a module-level list (the seed's globals demos); shared: the "
              "tier's shared store, Array / Redis (the seed's shared memory)", choices=("module", "shared")),
    )

    def validate(self) -> None:
        if self.p["store"] != "shared":
            return
        if self.p["tasks"] > MAX_SHARED_TASKS:
            raise BadInput(f"--store shared runs one actor per task: --tasks must be at most {MAX_SHARED_TASKS}")
        top = self.p["size"] ** (self.p["tasks"] + 1)
        if top > INT64_MAX:
            raise BadInput(f"{self.p['size']}**{self.p['tasks'] + 1} does not fit a 64-bit shared slot; "
                           "lower --size or --tasks")

    def actors_needed(self, workers: int) -> int:
        return self.p["tasks"] if self.p["store"] == "shared" else 0

    def task_args(self) -> list[tuple]:
        x = list(range(1, self.p["size"] + 1))
        return [(x, 2 + k) for k in range(self.p["tasks"])]

    def expected(self) -> list[list[int]]:
        """Each task's powers, as every tier must return them (and write them, if shared)."""
        return [[i**y for i in x] for x, y in self.task_args()]

    def execute(self, tier) -> Execution:
        if self.p["store"] == "shared":
            return self._execute_shared(tier)
        global_results.clear()
        outcomes = tier.map(calculate_raise_to, self.task_args())
        seen = len(global_results)
        global_results.clear()
        return Execution(outcomes, units=len(outcomes), data={"seen_in_caller": seen})

    def _execute_shared(self, tier) -> Execution:
        args = self.task_args()
        size = self.p["size"]
        store = tier.accounts([0] * (size * len(args)))
        outcomes = tier.run_actors([Actor(f"writer-{k}", write_powers, (store, k * size, x, y))
                                    for k, (x, y) in enumerate(args)])
        slots = store.snapshot()
        rows = [slots[k * size:(k + 1) * size] for k in range(len(args))]
        seen = sum(row == want for row, want in zip(rows, self.expected()))
        return Execution(outcomes, units=len(outcomes), data={"seen_in_caller": seen})

    def check(self, execution, tier) -> Verdict:
        tasks = len(execution.outcomes)
        seen = execution.data["seen_in_caller"]
        visible = seen == tasks
        errors = task_errors(execution.outcomes)
        answer = [o.value for o in execution.outcomes]
        right = answer == self.expected()
        predicted = tier.shares_memory or self.p["store"] == "shared"
        ok = not errors and right and visible == predicted and seen in (0, tasks)
        return Verdict(ok, f"visible={predicted}", f"visible={visible}", answer=answer,
                       details={"visible": visible, "appended_seen_by_caller": seen, "store": self.p["store"],
                                "tasks": tasks, "errors": errors})
