"""Wrong: two CPUs, so two threads must compute twice as fast (not under the GIL)."""

ANSWERS = {
    "power-cpu": {"tier": "threads", "speedup": 2.0},
    "power-io": {"tier": "threads", "speedup": 3.6},
    "tiny-tasks": {"tier": "sequential", "speedup": 1.0},
}
