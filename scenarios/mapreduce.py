"""The seed's Pool map-reduce: a large list is split into chunks, each chunk's powers
are summed by one task (map), and the partial sums are added up (reduce).

``--chunksize`` is the lesson: every chunk is one task, so it is pickled to a worker
process (or JSON-encoded to a broker) and its result sent back. Small chunks mean many
messages and the per-task overhead dominates; large chunks mean few, fat messages and
poor load balance.

``--reduce`` says where the partial sums are added up: ``harness`` (the caller collects
every chunk's result and adds them) or ``chord`` (Celery's chord: the map tasks and a
reduce callback on a worker, which gets every result; only on a tier whose
``reduces_remotely`` is true). The answer is the same; what the chord costs the broker
is counted beside the plain group and kept in the record (``record["chord"]``).
"""
from __future__ import annotations

from scenarios.base import Execution, Param, Scenario, Verdict, task_errors


def sum_of_powers(chunk: list[int], y: int) -> int:
    return sum(i**y for i in chunk)


def add_up(values: list[int]) -> int:
    """The reduce: the partial sums added up (by the harness, or by a chord's body)."""
    return sum(values)


def sum_of_powers_failing_at_zero(chunk: list[int], y: int) -> int:
    """``sum_of_powers``, except on the chunk that holds 0, which raises: how
    tests/test_chord.py makes a map task fail on real workers (the test sets
    ``MapReduce.map_task`` to it in its own process; no option of the scenario does)."""
    if 0 in chunk:
        raise ValueError("the chunk holding 0 fails (sum_of_powers_failing_at_zero)")
    return sum_of_powers(chunk, y)


REDUCES = ("harness", "chord")


class MapReduce(Scenario):
    name = "mapreduce"
    summary = "split a big list into chunks, map powers over them, reduce by summing"
    params = (
        Param("size", int, 2_000_000, "how many numbers in the list", min=1, max=50_000_000),
        Param("chunksize", int, 50_000, "numbers per task (each chunk is one message)", min=1),
        Param("exponent", int, 20, "the power each number is raised to", min=0, max=64),
        Param("reduce", str, "harness", "where the partial sums are added up: harness (the caller) or "
              "chord (a Celery chord's callback on a worker)", choices=REDUCES),
    )
    map_task = staticmethod(sum_of_powers)

    def supported_by(self, tier_cls) -> str | None:
        if self.p["reduce"] == "chord" and not tier_cls.reduces_remotely:
            return (f"--reduce chord needs a backend that runs a reduce callback where its map tasks "
                    f"run (a chord); {tier_cls.name!r} cannot: use --reduce harness")
        return None

    def oracle_params(self) -> dict:
        """The chord moves the reduce, not the answer: sequential is read at the harness's."""
        return {"reduce": "harness"} if self.p["reduce"] != "harness" else {}

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
        if self.p["reduce"] == "chord":
            run = tier.map_reduce(self.map_task, chunks, add_up)  # outcomes: the map tasks, then the reduce
            return Execution(run.outcomes, units=len(chunks),
                             data={"chunks": len(chunks), "chord": run, "record": {"chord": run.record}})
        outcomes = tier.map(self.map_task, chunks)
        return Execution(outcomes, units=len(chunks), data={"chunks": len(chunks)})

    def check(self, execution, tier) -> Verdict:
        errors = task_errors(execution.outcomes)
        chord = execution.data.get("chord")
        if chord is not None:
            total = None if errors else chord.reduce.value
            if not errors:
                chord.count_reference()  # the plain group beside it, counted after the timed run
        else:
            total = None if errors else add_up([o.value for o in execution.outcomes])
        expected = self.expected()
        return Verdict(total == expected, expected, total, answer=total,
                       details={"chunks": execution.data["chunks"], "errors": errors})
