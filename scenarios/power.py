"""The seed's first examples: ``calculate_raise_to(x, y)`` run as a few tasks.

``power-io`` keeps the seed's ``time.sleep(2)``, standing for blocking I/O: a sleeping
thread releases the GIL, so threads overlap the waits and 2 tasks take ~2 s, not 4.
``power-cpu`` drops the sleep and makes the arithmetic heavy instead: now the GIL lets
only one thread compute at a time, so threads take as long as sequential, and only
processes (or workers elsewhere) use the second core.

On an event loop (the asyncio tier) the task's twin awaits ``asyncio.sleep`` instead: the
waits overlap like threads', on one thread. The powers themselves never await, so on
``power-cpu`` each task holds the loop until it is done: one core, as under the GIL.
"""
from __future__ import annotations

import asyncio
import functools
import math
import time

from scenarios.base import BadInput, Execution, Param, Scenario, Verdict, coroutine_twin, task_errors

CHECKSUM_MODULUS = (1 << 61) - 1  # a Mersenne prime: big results fold into one int
MAX_RESULT_BITS = 1 << 20  # one power may have at most ~1 Mbit (131 kB): a sane cap
MAX_POWERS = 50_000_000  # powers computed in one run, all tasks together


def calculate_raise_to(x: list[int], y: int, sleep_s: float = 0.0, checksum: bool = False):
    """The seed's function: ``[i ** y for i in x]``, after an optional blocking wait.

    With ``checksum`` the (huge) powers are folded into one number so that the task's
    result costs nothing to send back: power-cpu measures computing, not pickling.
    """
    if sleep_s:
        time.sleep(sleep_s)
    powers = [i**y for i in x]
    if checksum:
        return sum(powers) % CHECKSUM_MODULUS
    return powers


@coroutine_twin(calculate_raise_to)
async def calculate_raise_to_async(x: list[int], y: int, sleep_s: float = 0.0, checksum: bool = False):
    """The same on an event loop: the wait is an ``await`` (other tasks run meanwhile);
    the computing is not, so it blocks the loop for as long as it takes."""
    if sleep_s:
        await asyncio.sleep(sleep_s)
    return calculate_raise_to(x, y, 0.0, checksum)


@functools.lru_cache(maxsize=8)
def _expected(size: int, exponent: int, tasks: int, checksum: bool) -> list:
    """The right answer, computed once per parameter set: a sweep checks the same
    power-cpu work many times, and recomputing it would double every point's time."""
    x = list(range(1, size + 1))
    return [calculate_raise_to(x, exponent + k, 0.0, checksum) for k in range(tasks)]


class _Power(Scenario):
    checksum = False
    scaling_param = "tasks"  # independent calls: any number of them, one per worker or more

    def validate(self) -> None:
        if self.p["size"] * self.p["tasks"] > MAX_POWERS:
            raise BadInput(f"--size x --tasks = {self.p['size'] * self.p['tasks']:,} powers, over the cap "
                           f"of {MAX_POWERS:,}")
        biggest = self.p["size"]
        top_exponent = self.p["exponent"] + self.p["tasks"] - 1
        bits = top_exponent * math.log2(max(biggest, 2))
        if bits > MAX_RESULT_BITS:
            raise BadInput(f"{biggest}**{top_exponent} has ~{int(bits):,} bits, over the cap of "
                           f"{MAX_RESULT_BITS:,}; lower --size or --exponent")

    def task_args(self) -> list[tuple]:
        x = list(range(1, self.p["size"] + 1))
        return [(x, self.p["exponent"] + k, self.p["sleep"], self.checksum)
                for k in range(self.p["tasks"])]

    def execute(self, tier) -> Execution:
        outcomes = tier.map(calculate_raise_to, self.task_args())
        return Execution(outcomes, units=len(outcomes))

    def check(self, execution, tier) -> Verdict:
        expected = _expected(self.p["size"], self.p["exponent"], self.p["tasks"], self.checksum)
        actual = [o.value for o in execution.outcomes]
        errors = task_errors(execution.outcomes)
        ok = not errors and actual == expected
        short = (lambda v: v) if self.checksum else (lambda v: [len(r) if r else r for r in v])
        return Verdict(ok, f"{len(expected)} results", f"{sum(a is not None for a in actual)} results"
                       + ("" if ok else " (wrong)"), answer=actual,
                       details={"errors": errors, "result_sizes": short(actual)})


class PowerIO(_Power):
    name = "power-io"
    summary = "the seed's calculate_raise_to with a 2 s sleep: blocking I/O, threads overlap it"
    params = (
        Param("tasks", int, 2, "how many calls (y = exponent, exponent+1, ...)", min=1, max=10_000),
        Param("size", int, 7, "input list [1..size]", min=1, max=1_000_000),
        Param("exponent", int, 2, "exponent of the first task", min=0),
        Param("sleep", float, 2.0, "seconds each task blocks (stands for I/O)", min=0, max=3600),
    )


class PowerCPU(_Power):
    name = "power-cpu"
    summary = "calculate_raise_to made CPU-bound (long input, big exponents): the GIL shows"
    checksum = True
    params = (
        Param("tasks", int, 8, "how many calls (y = exponent, exponent+1, ...)", min=1, max=10_000),
        Param("size", int, 4000, "input list [1..size]", min=1, max=1_000_000),
        Param("exponent", int, 3000, "exponent of the first task", min=0),
        Param("sleep", float, 0.0, "seconds each task blocks first", min=0, max=3600),
    )
