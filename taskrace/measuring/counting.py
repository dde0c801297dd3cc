"""Overhead counted, not timed: Redis commands per task, and instructions per run.

Wall-clock taxes on a shared 2-vCPU machine swing by tens of percent between repeats.
Two figures do not: how many commands the broker executes for a batch of tasks, and how
many machine instructions a command line executes. ``taskrace bench`` reports both
beside its wall times; this module counts them.

**Redis commands** (``INFO commandstats``): the calls of every command, server-wide,
read before and after a batch; the difference is what the batch cost the broker (on a
broker shared with others, their commands too). The window's own ``INFO`` is taken out.
Everything that grows with the tasks is exact (19 commands per no-op task here, the same
in every run); what is not is the workers' timer: kombu restores unacknowledged messages
every 10 s per worker (EVALSHA, SCRIPT, TIME, ZRANGEBYSCORE, ...), ~20 commands in
whichever window the tick falls.

**Instructions** (``valgrind --tool=callgrind``, the ``Ir`` event): every user-space
instruction a command executed, summed over its processes (``--trace-children=yes``, one
output file per process) and their threads. The kernel's work for it (system calls,
pipes, page faults) is not in the count, nor is waiting. A single-threaded command on
the same input gives the same count to a few instructions in a billion: no clock and no
other load on the machine enters it. What can move it: the hash seed (``PYTHONHASHSEED``
is fixed here), ``.pyc`` files written by a first run (each command runs once natively
first), and work driven by the clock rather than the input: the harness's sampler
(psutil every 50 ms, reading /proc for the whole machine), a pool's worker handler
(every 0.1 s), threads handing the GIL over. Under valgrind the clock runs ~50x slower
against the work, so those wake more often than natively: they move the harness's
counts by up to ~1 % of the work between runs, and that much of its counted tax is an
artefact of counting.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# --- Redis commands -------------------------------------------------------------------------


def command_calls(client) -> dict[str, int]:
    """Calls per command so far, server-wide (``INFO commandstats``), lower-case names
    (``get``, ``brpop``, ``client|setname`` on Redis 7)."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def command_delta(before: dict[str, int], after: dict[str, int], own_info: int = 1) -> dict[str, int]:
    """Commands executed between two snapshots, the snapshot's own ``INFO`` taken out
    (``INFO`` is counted once it has run: the second snapshot's call is not in its own
    answer, the first one's is)."""
    out = {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)}
    out["info"] = out.get("info", 0) - own_info
    return {k: v for k, v in sorted(out.items()) if v}


class CommandCounter:
    """``with counter.window() as w: ...``, then ``w.delta``: the commands the broker ran
    in between. One redis-py connection, made before the first window."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        command_calls(self.client)  # a user without the right to run INFO: refused here

    def window(self) -> "_Window":
        return _Window(self.client)

    def close(self) -> None:
        self.client.close()


class _Window:
    def __init__(self, client) -> None:
        self.client = client
        self.delta: dict[str, int] = {}

    def __enter__(self) -> "_Window":
        self._before = command_calls(self.client)
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.delta = command_delta(self._before, command_calls(self.client))


def commands_differ(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    """Per command, a - b, where they differ (a command missing on one side counts 0)."""
    return {k: a.get(k, 0) - b.get(k, 0) for k in sorted(set(a) | set(b)) if a.get(k, 0) != b.get(k, 0)}


# --- instructions (callgrind) -------------------------------------------------------------

# A forked child starts with its parent's counters (callgrind copies them with the rest of
# the process), so summing every process's file would count the parent's work up to each
# fork twice. CPython calls this in the child right after fork(): zeroing there makes a
# child's count its own. (A child that exec()s starts a fresh valgrind, counters at 0.)
AFTER_FORK = "PyOS_AfterFork_Child"


class ValgrindMissing(RuntimeError):
    pass


class CountFailed(RuntimeError):
    """The command failed (natively or under valgrind), or callgrind wrote nothing."""


def find_valgrind() -> str | None:
    return shutil.which("valgrind")


def valgrind_version() -> str | None:
    valgrind = find_valgrind()
    if valgrind is None:
        return None
    proc = subprocess.run([valgrind, "--version"], capture_output=True, text=True, timeout=30)
    return proc.stdout.strip() or None


def python_binary() -> str:
    """The interpreter itself, as this process runs it: not ``python3`` from PATH, which
    may be a launcher (a pyenv shim is a bash script) that would be counted too. Not
    resolved further: a venv's python is a link, and the venv is found through it."""
    return sys.executable


def counting_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VALGRIND"))}
    env.update(PYTHONHASHSEED="0", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    env.update(extra or {})
    return env


@dataclass
class Count:
    """Instructions of one command: in all, and per process (pid -> Ir)."""

    instructions: int
    processes: dict[int, int]


def _summary(path: Path) -> int:
    """The ``summary:`` of every part of one output file: the instructions the process
    executed since its counters were last zeroed. (Not ``totals:``: after a zeroing it
    also holds the inclusive costs of the calls that were on the stack at that moment.)"""
    parts = []
    with open(path) as fh:
        for line in fh:
            if line.startswith("summary:"):
                parts.append(int(line.split()[1]))
    if not parts:
        raise CountFailed(f"callgrind wrote no summary to {path.name}")
    return sum(parts)


def count_instructions(argv: list[str], env: dict | None = None, cwd: str | None = None,
                       timeout: float = 600.0, warm: bool = True) -> Count:
    """Run ``argv`` under ``valgrind --tool=callgrind`` and return the instructions it
    executed (``Ir``), summed over every process it started. ``warm``: run it once
    natively first, so ``.pyc`` files exist and both runs see the same imports (and a
    command that fails, fails fast and with its own message)."""
    valgrind = find_valgrind()
    if valgrind is None:
        raise ValgrindMissing("valgrind not found: apt-get install valgrind")
    env = env if env is not None else counting_env()
    if warm:
        proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise CountFailed(f"{argv[:3]} failed natively (exit {proc.returncode}): "
                               f"{(proc.stderr.strip().splitlines() or [''])[-1]}")
    with tempfile.TemporaryDirectory(prefix="taskrace-callgrind-") as tmp:
        cmd = [valgrind, "--tool=callgrind", "-q", "--trace-children=yes", f"--zero-before={AFTER_FORK}",
               f"--callgrind-out-file={tmp}/callgrind.%p", *argv]
        proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise CountFailed(f"{argv[:3]} failed under valgrind (exit {proc.returncode}): "
                               f"{(proc.stderr.strip().splitlines() or [''])[-1]}")
        processes: dict[int, int] = {}
        for path in Path(tmp).glob("callgrind.*"):
            pid = int(path.name.split(".")[1].split("-")[0])
            processes[pid] = processes.get(pid, 0) + _summary(path)
    if not processes:
        raise CountFailed("callgrind wrote no output")
    return Count(sum(processes.values()), processes)


def python_instructions(code: str, **kw) -> Count:
    """Instructions of ``python -c CODE`` (the interpreter binary, not a launcher)."""
    return count_instructions([python_binary(), "-c", code], **kw)


# --- the local tiers: the harness and the stdlib code it stands for ---------------------------

HARNESS = """\
from taskrace.measuring.runner import prepare, run_one
scenario, tier = prepare("power-cpu", {params!r}, {backend!r}, {workers}, {options!r})
record = run_one(scenario, tier)
assert record["verdict"]["ok"], record["verdict"]
"""

# The same calls, on the same inputs, written by hand; each checks its answer against a
# plain loop, as the harness's check does (so the work is in every count twice).
STDLIB_HEAD = """\
from scenarios.power import PowerCPU, calculate_raise_to
args = PowerCPU({params!r}).task_args()
"""
STDLIB_CHECK = "assert out == [calculate_raise_to(*a) for a in args]\n"
STDLIB = {
    "sequential": "out = [calculate_raise_to(*a) for a in args]\n",
    "threads": ("from concurrent.futures import ThreadPoolExecutor\n"
                "with ThreadPoolExecutor({workers}) as ex:\n"
                "    out = list(ex.map(calculate_raise_to, *zip(*args)))\n"),
    "processes": ("import multiprocessing as mp\n"
                  "if __name__ == '__main__':\n"
                  "    pool = mp.get_context({start_method!r}).Pool({workers})\n"
                  "    out = pool.starmap(calculate_raise_to, args, chunksize=1)\n"
                  "    pool.close()\n"
                  "    pool.join()\n"
                  "    " + STDLIB_CHECK),
}
STDLIB_SUMMARY = {
    "sequential": "a loop",
    "threads": "ThreadPoolExecutor({workers}).map",
    "processes": "{start_method} Pool({workers}).starmap(chunksize=1)",
}


# The harness with a subscriber to every event (task events included), as a notebook or
# the live view attaches one: what listening costs.
# What --live adds per event in the run's process: the live view's subscriber (each event
# scrubbed and serialised for the pages). Its server and CPU sampler are threads that wake
# a few times a second whatever the tasks, not per task.
SUBSCRIBED = """\
from taskrace import events
from taskrace.live.state import LiveState
heard = LiveState()
events.subscribe(heard.add, tasks=True)
"""


def harness_code(backend: str, params: dict, workers: int, options: dict | None = None,
                 subscribed: bool = False) -> str:
    code = HARNESS.format(params=params, backend=backend, workers=workers, options=options or {})
    if subscribed:
        code = SUBSCRIBED + code + ("assert sum('\"kind\":\"task.finished\"' in line for line in heard.since(0, 0)[0])"
                                    " == record['tasks']\n")
    return code


def stdlib_code(backend: str, params: dict, workers: int, start_method: str = "fork") -> str:
    body = STDLIB[backend].format(workers=workers, start_method=start_method)
    check = "" if backend == "processes" else STDLIB_CHECK
    return STDLIB_HEAD.format(params=params) + body + check
