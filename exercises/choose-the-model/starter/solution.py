"""Choose the model: for each workload, the tier you expect to win and its speedup.

The grader races each workload on sequential, threads, asyncio and processes, 4 workers
each, on this machine (the lab's: 2 CPUs), and compares. A speedup is sequential's wall
time over the tier's: 1.0 is as fast as sequential, 2.0 twice as fast, 0.5 half as fast.

* power-cpu:  the seed's calculate_raise_to made CPU-bound (4 calls, each ~50 ms of powers)
* power-io:   the seed's calculate_raise_to after a blocking wait (8 calls, 30 ms each)
* tiny-tasks: the seed's map-reduce with one number per task (2000 calls of ~1 us each)
"""

ANSWERS = {
    # TODO(student): for each workload, "tier": one of "sequential", "threads", "asyncio",
    # "processes" (the fastest, or one within noise of it), and "speedup": a number, your
    # prediction of that tier's speedup over sequential here.
    "power-cpu": {"tier": None, "speedup": None},
    "power-io": {"tier": None, "speedup": None},
    "tiny-tasks": {"tier": None, "speedup": None},
}
