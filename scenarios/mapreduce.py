"""The seed's Pool map-reduce: a large list is split into chunks, each chunk's powers
are summed by one task (map), and the partial sums are added up (reduce).

``--chunksize`` is the lesson: every chunk is one task, so it is pickled to a worker
process (or JSON-encoded to a broker) and its result sent back. Small chunks mean many
messages and the per-task overhead dominates; large chunks mean few, fat messages and
poor load balance.
"""
from __future__ import annotations

from scenarios.base import Execution, Param, Scenario, Verdict, task_errors


def sum_of_powers(chunk: list[int], y: int) -> int:
    return sum(i**y for i in chunk)


class MapReduce(Scenario):
    name = "mapreduce"
    summary = "split a big list into chunks, map powers over them, reduce by summing"
    params = (
        Param("size", int, 2_000_000, "how many numbers in the list", min=1, max=50_000_000),
        Param("chunksize", int, 50_000, "numbers per task (each chunk is one message)", min=1),
        Param("exponent", int, 20, "the power each number is raised to", min=0, max=64),
    )

    def chunks(self) -> list[tuple]:
        numbers = list(range(self.p["size"]))
        step = self.p["chunksize"]
        return [(numbers[i:i + step], self.p["exponent"]) for i in range(0, len(numbers), step)]

    def task_count(self) -> int:
        """One task per chunk. Not raised by strong scaling: --chunksize is the lesson."""
        return -(-self.p["size"] // self.p["chunksize"])

    def expected(self) -> int:
        return sum_of_powers(range(self.p["size"]), self.p["exponent"])

    def execute(self, tier) -> Execution:
        chunks = self.chunks()
        outcomes = tier.map(sum_of_powers, chunks)
        return Execution(outcomes, units=len(chunks), data={"chunks": len(chunks)})

    def check(self, execution, tier) -> Verdict:
        errors = task_errors(execution.outcomes)
        total = None if errors else sum(o.value for o in execution.outcomes)
        expected = self.expected()
        return Verdict(total == expected, expected, total, answer=total,
                       details={"chunks": execution.data["chunks"], "errors": errors})
