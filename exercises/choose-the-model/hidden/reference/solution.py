"""Choose the model: the reference answers (2 CPUs, 4 workers)."""

ANSWERS = {
    # Processes: an interpreter (and a GIL) each, so both CPUs compute: up to 2x on 2.
    "power-cpu": {"tier": "processes", "speedup": 1.9},
    # Waiting releases the GIL: 4 threads wait for 4 calls at once (8 calls: 2 waits, not 8),
    # a little under 4x for the hand-overs.
    "power-io": {"tier": "threads", "speedup": 3.6},
    # A microsecond of work per task: any hand-over costs more than the work. Sequential.
    "tiny-tasks": {"tier": "sequential", "speedup": 1.0},
}
