"""CPU use while the live view is on: the machine's busy share, per core and in all,
sampled every ``INTERVAL_S`` and told to the event stream as ``cpu.sample`` (so an event
log keeps it for a replay). The page draws it under the backend running at the time.

Computed from ``psutil.cpu_times(percpu=True)`` differences of its own, not with
``psutil.cpu_percent``: that keeps one window per process, which the measuring of each
point (``taskrace.measuring.measure``) uses; calling it here would cut that window short.
"""
from __future__ import annotations

import threading

import psutil

from taskrace import events

INTERVAL_S = 0.5


def _busy(before, after) -> float:
    total = sum(after) - sum(before)
    idle = (after.idle - before.idle) + (getattr(after, "iowait", 0) - getattr(before, "iowait", 0))
    return 0.0 if total <= 0 else round(100.0 * max(0.0, total - idle) / total, 1)


class CpuMeter:
    """The machine's busy share since the last ``read()``: the average and each core's."""

    def __init__(self) -> None:
        self._last = psutil.cpu_times(percpu=True)

    def read(self) -> dict:
        now = psutil.cpu_times(percpu=True)
        cores = [_busy(a, b) for a, b in zip(self._last, now)]
        self._last = now
        return {"percent": round(sum(cores) / max(1, len(cores)), 1), "cores": cores}


class CpuSampler:
    """A thread that tells ``cpu.sample`` every ``interval`` seconds (the --live run)."""

    def __init__(self, interval: float = INTERVAL_S) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="taskrace-live-cpu", daemon=True)

    def _run(self) -> None:
        meter = CpuMeter()
        while not self._stop.wait(self.interval):
            events.emit("cpu.sample", **meter.read())

    def start(self) -> "CpuSampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
