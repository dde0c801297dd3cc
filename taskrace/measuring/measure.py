"""Measuring one run: wall time in the parent, resource use of the whole process tree.

Timing wraps the tier from the outside (``perf_counter`` in the caller, never inside a
task), split into startup (pool/workers/broker coming up), the run itself, and shutdown.
A background thread samples the caller and all its descendants with psutil: CPU time,
resident memory, how many OS processes and threads exist - the measured version of the
seed's ``print_python_processes``.
"""
from __future__ import annotations

import threading
import time

import psutil

from workers.infra.redact import redact_cmdline

SAMPLE_INTERVAL_S = 0.05
MIN_CPU_WINDOW_S = 0.1


class TreeSampler:
    """Samples this process and its descendants until stopped.

    CPU % is CPU-seconds used by the tree during the window divided by the window's wall
    time (so 200 % = two cores busy). Processes that start and exit between two samples
    are missed; 50 ms is short next to anything the scenarios run.
    """

    LIST_EVERY = 5  # look for new descendants every 5th sample (250 ms)

    def __init__(self, interval: float = SAMPLE_INTERVAL_S) -> None:
        self._procs: list = []
        self.interval = interval
        self.root = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="taskrace-sampler", daemon=True)
        self._cpu_first: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self.peak_rss = 0
        self.max_processes = 0
        self.max_threads = 0
        self.seen: dict[int, dict] = {}
        self.samples = 0
        self._t0 = self._t1 = 0.0
        self.per_core: list[float] = []

    def __enter__(self) -> "TreeSampler":
        psutil.cpu_percent(percpu=True)  # starts the machine-wide per-core window
        self._t0 = time.perf_counter()
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._procs = []  # a last full listing
        self._sample()
        self._t1 = time.perf_counter()
        # Busy % of each core over the window, whoever used it: shows a second core idle
        # under the GIL, or other load on the machine that the tree figures do not.
        self.per_core = psutil.cpu_percent(percpu=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        # Finding descendants reads /proc/*/stat for every process on the machine (~3 ms
        # of CPU each time): do it every LIST_EVERY samples, and in between only read the
        # processes already known. A 50 ms sampler would otherwise steal ~6 % of a core.
        if self.samples % self.LIST_EVERY == 0 or not self._procs:
            try:
                self._procs = [self.root] + self.root.children(recursive=True)
            except psutil.Error:
                return
        procs = self._procs
        rss = threads = alive = 0
        for proc in procs:
            try:
                with proc.oneshot():
                    cpu = proc.cpu_times()
                    busy = cpu.user + cpu.system
                    rss += proc.memory_info().rss
                    threads += proc.num_threads()
                    if proc.pid not in self.seen:
                        # Credentials hidden before the cut (a cut could leave half of one):
                        # the harness's own line may carry --redis-url redis://:pw@...
                        self.seen[proc.pid] = {"pid": proc.pid, "name": proc.name(),
                                               "cmdline": redact_cmdline(proc.cmdline(), 120)}
            except psutil.Error:
                continue  # it exited between listing and reading: fine
            alive += 1
            # Processes born during the window count from zero; older ones from now.
            self._cpu_first.setdefault(proc.pid, busy if self.samples == 0 else 0.0)
            self._cpu_last[proc.pid] = busy
        self.samples += 1
        self.peak_rss = max(self.peak_rss, rss)
        self.max_processes = max(self.max_processes, alive)
        self.max_threads = max(self.max_threads, threads)

    def metrics(self) -> dict:
        window = max(self._t1 - self._t0, 1e-9)
        cpu_s = sum(self._cpu_last[p] - self._cpu_first[p] for p in self._cpu_last)
        return {
            # CPU times tick in 10 ms steps: over a shorter window one tick would read
            # as hundreds of percent, so say "not measurable" instead.
            "cpu_percent": round(100 * cpu_s / window, 1) if window >= MIN_CPU_WINDOW_S else None,
            "cpu_seconds": round(cpu_s, 3),
            "cpu_percent_per_core": self.per_core,
            "peak_rss_bytes": self.peak_rss,
            "os_processes": self.max_processes,
            "threads": self.max_threads,
            "processes_seen": list(self.seen.values()),
            "samples": self.samples,
        }
