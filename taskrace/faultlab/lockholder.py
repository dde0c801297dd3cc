"""Lock-holder faults: what a crash or a pause does to a lock in shared memory, against a
lock with a lease in Redis (issue 8, "the local tiers, for contrast").

N worker processes (multiprocessing, any start method) take turns adding 1 to a counter
under one lock: read the counter, work ``step_s`` inside the critical section, write it
back. When ``fault_after`` increments have been made, the next holder takes the victim
role: it says "I hold it" and waits inside its critical section. Only then does the
harness strike, so the fault always lands inside:

* ``kill-holder``: SIGKILL. A ``multiprocessing.Lock`` is never released (nothing in
  the OS frees a semaphore for a dead process): the survivors wait forever, and the
  harness calls it a deadlock after ``stall_s`` without progress. A Redis lock's lease
  expires and another process takes over: the run completes.
* ``pause-holder``: SIGSTOP until someone else had a chance at the lock (Redis: another
  process entered; multiprocessing: every survivor's ``acquire(timeout)`` gave up once),
  then SIGCONT. The multiprocessing lock simply waits for its holder. The Redis lease
  expired meanwhile: two processes were inside at once, the resumed one writes back a
  stale count (lost updates) and its ``release()`` raises LockNotOwnedError.

How data crosses the processes::

    harness (this process)                           worker processes (N)
    ----------------------                           --------------------
    _Control: RawValue / RawArray, no locks  --inherited-->  ready[i]   go, stop, go_on
      (a killed process must not leave         <------------  done[i], timed_out[i],
       a lock of the plumbing held)                           victim_pid ("I hold it")
    store "multiprocessing"                  --inherited-->
      Lock (the lock under test)                              acquire(timeout) ... release()
      RawValue counter, holder_pid (guarded by it)            read, work, write
      Value inside + max_inside (own lock: counts holders without trusting the lock under test)
    store "redis" (URL passed as a Process argument, never on a command line)
      lock key: SET NX PX token (redis-py Lock)    <------->  acquire(blocking_timeout) ... release()
      holders set, max, enters, counter, done,     <-------   Lua enter / leave scripts
      victim (SET NX), not_owned

The harness polls ``sum(done)`` every POLL_S; every wait has a deadline from the plan.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import secrets
import signal
import time
from dataclasses import asdict, dataclass

import redis
from redis.exceptions import LockNotOwnedError

from workers.celery_workers import die_with_parent
from workers.infra.redis_server import EmbeddedRedis

STORES = ("multiprocessing", "redis")
FAULTS = ("kill-holder", "pause-holder")

POLL_S = 0.005  # how often the harness (and a parked victim) look at the shared flags
START_S = 60.0  # for N interpreters to start (spawn imports everything; 2 busy cores)
STALL_FACTOR = 20  # no progress for 20 steps' work ...
MIN_STALL_S = 2.0  # ... or at least this long: a deadlock, not a slow step
JOIN_S = 5.0  # for a stopped process to be reaped
REDIS_IO_S = 10.0  # socket timeout of every Redis call (none of them blocks server-side)

PROMISES = {
    "multiprocessing": "multiprocessing.Lock: one holder at a time, for as long as the holder "
                       "lives; nothing frees it if the holder dies.",
    "redis": "redis-py Lock with a {lease:g} s lease: one holder at a time only while each holder "
             "finishes within its lease; a dead holder's lock frees itself when the lease runs out.",
}


@dataclass(frozen=True)
class Plan:
    """The run's settings; every deadline is derived from them. Sent to each worker."""

    store: str
    fault: str
    workers: int
    steps: int
    step_s: float
    lease_s: float
    fault_after: int
    start_method: str

    @property
    def wait_s(self) -> float:
        # How long one acquire() blocks before the waiter notes it and tries again. The
        # lease's length on both stores, so the two rows compare.
        return self.lease_s

    @property
    def stall_s(self) -> float:
        """No progress for this long means deadlock (Redis: a lease may have to run out first)."""
        base = max(MIN_STALL_S, STALL_FACTOR * self.step_s)
        return base + (self.lease_s if self.store == "redis" else 0.0)

    @property
    def budget_s(self) -> float:
        """The whole run after the start: every step slowed 20x, plus a few stall windows."""
        return self.steps * self.step_s * STALL_FACTOR + 4 * (self.stall_s + self.wait_s)


def make_plan(store: str, fault: str, workers: int, steps: int, lease_s: float, step_s: float,
              fault_after: int | None, start_method: str | None) -> Plan:
    if store not in STORES:
        raise ValueError(f"unknown store {store!r}: choose one of {', '.join(STORES)}")
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}: choose one of {', '.join(FAULTS)}")
    methods = mp.get_all_start_methods()
    if start_method is not None and start_method not in methods:
        raise ValueError(f"unknown start method {start_method!r}: choose one of {', '.join(methods)}")
    if not 2 <= workers <= 64:
        raise ValueError(f"workers must be 2..64 (a holder and at least one survivor), not {workers}")
    if steps < 2:
        raise ValueError(f"steps must be at least 2, not {steps}")
    if not lease_s > 0 or not step_s >= 0:
        raise ValueError(f"lease_s must be > 0 and step_s >= 0, not {lease_s} and {step_s}")
    fault_after = max(1, steps // 4) if fault_after is None else fault_after
    if not 0 <= fault_after < steps:
        raise ValueError(f"fault_after must be 0..{steps - 1} (before the last step), not {fault_after}")
    method = mp.get_context(start_method).get_start_method()
    return Plan(store, fault, workers, steps, step_s, lease_s, fault_after, method)


class _Control:
    """Harness <-> worker flags in lock-free shared memory (RawValue/RawArray): each slot
    has one writer, and no lock of the plumbing can die with a killed process."""

    def __init__(self, ctx, workers: int) -> None:
        self.ready = ctx.RawArray("b", workers)  # worker i is up
        self.done = ctx.RawArray("q", workers)  # increments made by worker i
        self.timed_out = ctx.RawArray("q", workers)  # acquire() attempts of worker i that gave up
        self.go = ctx.RawValue("b", 0)  # harness: start together
        self.stop = ctx.RawValue("b", 0)  # harness: leave now
        self.go_on = ctx.RawValue("b", 0)  # harness: the parked victim may finish its step
        self.victim_pid = ctx.RawValue("q", 0)  # victim: "I hold it" (written once)


# -- worker side (module level: spawn imports these by name) ----------------------------

def _child_start(index: int, ctl: _Control, plan: Plan) -> float:
    """Common start of a worker; returns its own deadline (it never outlives the run)."""
    die_with_parent()  # harness SIGKILLed: no clean-up runs there, so end with it
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the harness's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked child may inherit a handler
    deadline = time.monotonic() + START_S + plan.budget_s + JOIN_S
    ctl.ready[index] = 1
    while not ctl.go.value and not ctl.stop.value and time.monotonic() < deadline:
        time.sleep(POLL_S)
    return deadline


def _park(ctl: _Control, deadline: float) -> None:
    """The victim, inside its critical section: wait for the harness (which kills us, or
    pauses and resumes us). Polling a lock-free flag, so a kill here leaves nothing else held."""
    while not ctl.go_on.value and not ctl.stop.value and time.monotonic() < deadline:
        time.sleep(POLL_S)


def _mp_worker(index: int, plan: Plan, ctl: _Control, sh: "_MpShared") -> None:
    deadline = _child_start(index, ctl, plan)
    pid = os.getpid()
    while not ctl.stop.value and time.monotonic() < deadline:
        if not sh.lock.acquire(timeout=plan.wait_s):
            ctl.timed_out[index] += 1
            continue
        try:
            before = sh.counter.value
            if before >= plan.steps:
                return
            sh.holder_pid.value = pid
            with sh.inside.get_lock():
                sh.inside.value += 1
                sh.max_inside.value = max(sh.max_inside.value, sh.inside.value)
            if before >= plan.fault_after and not ctl.victim_pid.value:
                ctl.victim_pid.value = pid  # exclusive: we hold the lock under test
                _park(ctl, deadline)
            time.sleep(plan.step_s)  # the work inside the critical section
            sh.counter.value = before + 1
            ctl.done[index] += 1
            with sh.inside.get_lock():
                sh.inside.value -= 1
            sh.holder_pid.value = 0
        finally:
            sh.lock.release()


# KEYS: holders, max, enters, counter, done, victim. ARGV: pid, planned, fault_after.
# Returns {finished, counter read, 1 if this holder is the victim}. Reading the counter in
# the same atomic step as entering makes "who read what, while who was inside" exact.
_ENTER = """
local done = tonumber(redis.call('GET', KEYS[5]) or '0')
if done >= tonumber(ARGV[2]) then return {1, 0, 0} end
redis.call('SADD', KEYS[1], ARGV[1])
local n = redis.call('SCARD', KEYS[1])
if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end
redis.call('INCR', KEYS[3])
local victim = 0
if done >= tonumber(ARGV[3]) and redis.call('SET', KEYS[6], ARGV[1], 'NX') then victim = 1 end
return {0, tonumber(redis.call('GET', KEYS[4]) or '0'), victim}
"""
# KEYS: holders, counter, done. ARGV: pid, the value to write (read at enter, plus one).
_LEAVE = """
redis.call('SET', KEYS[2], ARGV[2])
redis.call('INCR', KEYS[3])
redis.call('SREM', KEYS[1], ARGV[1])
"""


@dataclass(frozen=True)
class _Keys:
    """This run's Redis key names, under one random prefix (all deleted afterwards)."""

    lock: str
    holders: str  # set of the pids inside their critical section now
    max: str  # the most members that set ever had
    enters: str  # how many times anyone entered
    counter: str  # the protected value (read at enter, written at leave)
    done: str  # increments made (atomic: the truth the counter is checked against)
    victim: str  # pid of the holder chosen for the fault (SET NX)
    not_owned: str  # LockNotOwnedError raised by release()

    @classmethod
    def new(cls) -> "_Keys":
        prefix = f"taskrace:lockholder:{secrets.token_hex(6)}"
        return cls(*(f"{prefix}:{f}" for f in cls.__dataclass_fields__))

    def all(self) -> list[str]:
        return list(asdict(self).values())


def _redis_worker(index: int, plan: Plan, ctl: _Control, url: str, keys: _Keys) -> None:
    deadline = _child_start(index, ctl, plan)
    pid = os.getpid()
    r = redis.Redis.from_url(url, socket_timeout=REDIS_IO_S, socket_connect_timeout=REDIS_IO_S,
                             decode_responses=True)
    try:
        # sleep: how often a waiter retries SET NX; the lease is the lock's timeout.
        lock = r.lock(keys.lock, timeout=plan.lease_s, sleep=POLL_S)
        enter, leave = r.register_script(_ENTER), r.register_script(_LEAVE)
        enter_keys = [keys.holders, keys.max, keys.enters, keys.counter, keys.done, keys.victim]
        while not ctl.stop.value and time.monotonic() < deadline:
            if not lock.acquire(blocking_timeout=plan.wait_s):
                ctl.timed_out[index] += 1
                continue
            finished, before, victim = enter(keys=enter_keys, args=[pid, plan.steps, plan.fault_after])
            if not finished:
                if victim:
                    ctl.victim_pid.value = pid
                    _park(ctl, deadline)
                time.sleep(plan.step_s)  # the work inside the critical section
                leave(keys=[keys.holders, keys.counter, keys.done], args=[pid, int(before) + 1])
                ctl.done[index] += 1
            try:
                lock.release()
            except LockNotOwnedError:  # our lease ran out while we were inside
                r.incr(keys.not_owned)
            if finished:
                return
    finally:
        r.close()


# -- the stores, seen from the harness ---------------------------------------------------

class _MpShared:
    def __init__(self, ctx) -> None:
        self.lock = ctx.Lock()
        self.counter = ctx.RawValue("q", 0)
        self.holder_pid = ctx.RawValue("q", 0)
        self.inside = ctx.Value("i", 0)
        self.max_inside = ctx.RawValue("i", 0)


class _MpStore:
    target = staticmethod(_mp_worker)

    def __init__(self, ctx) -> None:
        self.sh = _MpShared(ctx)

    def args(self, index, plan, ctl):
        return (index, plan, ctl, self.sh)

    def retire(self, pid: int) -> None:
        with self.sh.inside.get_lock():  # a dead process is inside nothing
            self.sh.inside.value -= 1

    def pause_mark(self, ctl):
        return list(ctl.timed_out)

    def pause_seen(self, ctl, mark, survivors) -> bool:
        """Every survivor gave up one acquire() while the holder was stopped."""
        return all(ctl.timed_out[i] > mark[i] for i in survivors)

    def lock_held(self) -> bool:
        if self.sh.lock.acquire(block=False):
            self.sh.lock.release()
            return False
        return True

    def counts(self) -> dict:
        return {"counter": self.sh.counter.value, "max_holders": self.sh.max_inside.value,
                "not_owned": 0}

    def close(self) -> None:
        pass


class _RedisStore:
    target = staticmethod(_redis_worker)

    def __init__(self, url: str) -> None:
        self.url = url
        self.keys = _Keys.new()
        self.r = redis.Redis.from_url(url, socket_timeout=REDIS_IO_S,
                                      socket_connect_timeout=REDIS_IO_S, decode_responses=True)
        self.r.ping()

    def args(self, index, plan, ctl):
        return (index, plan, ctl, self.url, self.keys)

    def retire(self, pid: int) -> None:
        # Before the kill, so a dead process can never be counted as a second holder.
        self.r.srem(self.keys.holders, pid)

    def pause_mark(self, ctl):
        return int(self.r.get(self.keys.enters) or 0)

    def pause_seen(self, ctl, mark, survivors) -> bool:
        """Another process entered: the stopped holder's lease ran out and was taken."""
        return int(self.r.get(self.keys.enters) or 0) > mark

    def lock_held(self) -> bool:
        return bool(self.r.exists(self.keys.lock))

    def counts(self) -> dict:
        counter, max_holders, not_owned = self.r.mget(self.keys.counter, self.keys.max,
                                                      self.keys.not_owned)
        return {"counter": int(counter or 0), "max_holders": int(max_holders or 0),
                "not_owned": int(not_owned or 0)}

    def close(self) -> None:
        try:
            self.r.delete(*self.keys.all())  # leave no key behind
        finally:
            self.r.close()


# -- the harness ---------------------------------------------------------------------------

class _Race:
    def __init__(self, plan: Plan, store) -> None:
        self.plan, self.store = plan, store
        self.ctx = mp.get_context(plan.start_method)
        self.ctl = _Control(self.ctx, plan.workers)
        self.procs: list = []
        self.events: list[dict] = []
        self.t0 = time.monotonic()
        self.progress, self.progress_t = 0, self.t0
        self.victim: int | None = None  # index into procs

    # helpers
    def note(self, event: str) -> float:
        now = time.monotonic()
        self.events.append({"t": round(now - self.t0, 3), "event": event})
        return now

    def tick(self) -> float:
        """One poll: track progress, fail loudly on a crashed worker or a blown budget."""
        time.sleep(POLL_S)
        now = time.monotonic()
        n = sum(self.ctl.done)
        if n != self.progress:
            self.progress, self.progress_t = n, now
        for i, p in enumerate(self.procs):
            if i != self.victim and p.exitcode not in (None, 0):
                raise RuntimeError(f"lockholder: worker {i} (pid {p.pid}) crashed, exit code {p.exitcode}")
        if now - self.t0 > self.plan.budget_s:
            raise TimeoutError(f"lockholder: run exceeded its budget of {self.plan.budget_s:.0f} s")
        return now

    def survivors(self) -> list[int]:
        return [i for i in range(len(self.procs)) if i != self.victim]

    def all_exited(self, which) -> bool:
        return all(self.procs[i].exitcode is not None for i in which)

    # phases
    def start(self) -> None:
        for i in range(self.plan.workers):
            p = self.ctx.Process(target=self.store.target, args=self.store.args(i, self.plan, self.ctl),
                                 name=f"lockholder-{i}", daemon=True)
            p.start()
            self.procs.append(p)
        deadline = time.monotonic() + START_S
        while not all(self.ctl.ready):
            if time.monotonic() > deadline:
                raise TimeoutError(f"lockholder: workers not up within {START_S:.0f} s")
            if any(p.exitcode is not None for p in self.procs):
                raise RuntimeError("lockholder: a worker exited while starting")
            time.sleep(POLL_S)
        self.t0 = self.progress_t = time.monotonic()
        self.ctl.go.value = 1

    def wait_victim(self) -> bool:
        """Until a holder says "I hold it" after fault_after increments. False: never."""
        while not self.ctl.victim_pid.value:
            now = self.tick()
            if self.all_exited(range(len(self.procs))):
                return False
            if now - self.progress_t > self.plan.stall_s:
                raise RuntimeError(f"lockholder: no progress for {self.plan.stall_s:.1f} s before the fault")
        pid = self.ctl.victim_pid.value
        # Read afresh: the last tick may predate the increment made just before the claim.
        self.progress, self.progress_t = sum(self.ctl.done), time.monotonic()
        self.victim = next(i for i, p in enumerate(self.procs) if p.pid == pid)
        self.note(f"worker {self.victim} (pid {pid}) holds the lock after {self.progress} increments")
        return True

    def kill(self, pid: int) -> float:
        self.store.retire(pid)
        t = self.note(f"fault: SIGKILL worker {self.victim} (pid {pid}) inside the lock")
        os.kill(pid, signal.SIGKILL)
        self.procs[self.victim].join(JOIN_S)  # reaped: really gone
        return t

    def pause(self, pid: int) -> tuple[float, float]:
        """SIGSTOP until someone else had a chance at the lock, then SIGCONT."""
        mark = self.store.pause_mark(self.ctl)
        t = self.note(f"fault: SIGSTOP worker {self.victim} (pid {pid}) inside the lock")
        os.kill(pid, signal.SIGSTOP)
        try:
            deadline = t + self.plan.wait_s + self.plan.stall_s
            while not self.store.pause_seen(self.ctl, mark, self.survivors()):
                if self.tick() > deadline:
                    raise TimeoutError(f"lockholder: nobody tried the lock within {deadline - t:.1f} s of the pause")
        finally:
            os.kill(pid, signal.SIGCONT)  # never leave it stopped, whatever happened
        resumed = self.note(f"SIGCONT worker {self.victim}: it finishes its step")
        self.ctl.go_on.value = 1
        return t, resumed

    def watch(self, since: float, progress_at_fault: int, who: list[int]) -> tuple[bool, float, float | None]:
        """After the fault: until ``who`` have all finished, or no progress for stall_s.
        Returns (deadlocked, when decided, first progress after the fault or None)."""
        recovered = None
        while True:
            now = self.tick()
            if recovered is None and self.progress > progress_at_fault:
                recovered = self.progress_t
                self.note(f"progress again: {self.progress} increments")
            if self.all_exited(who):
                return False, now, recovered
            if now - max(self.progress_t, since) > self.plan.stall_s:
                return True, self.note(f"no progress for {self.plan.stall_s:.1f} s: deadlock"), recovered

    def stop_survivors(self) -> list[int]:
        """Stop stuck workers by PID (they wait in acquire(timeout) loops)."""
        stopped = []
        for i in self.survivors():
            p = self.procs[i]
            if p.exitcode is None:
                p.terminate()
                stopped.append(p.pid)
        for i in self.survivors():
            self.procs[i].join(JOIN_S)
        return stopped

    def cleanup(self) -> None:
        """Whatever happened: every process we started is continued, killed and reaped."""
        self.ctl.stop.value = 1
        for p in self.procs:
            if p.exitcode is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                    p.kill()
                except ProcessLookupError:
                    pass
        for p in self.procs:
            p.join(JOIN_S)

    def run(self) -> dict:
        plan = self.plan
        try:
            self.start()
            if not self.wait_victim():
                raise RuntimeError("lockholder: the run ended before the fault fired")
            pid = self.ctl.victim_pid.value
            at_fault = self.progress
            paused_s = None
            if plan.fault == "kill-holder":
                t_fault = since = self.kill(pid)
                who = self.survivors()
            else:
                t_fault, since = self.pause(pid)
                paused_s = since - t_fault
                who = list(range(len(self.procs)))
            deadlocked, decided, recovered = self.watch(since, at_fault, who)
            stuck = [self.procs[i].pid for i in self.survivors() if self.procs[i].exitcode is None]
            self.ctl.stop.value = 1
            if deadlocked:
                lock_held = self.store.lock_held()  # proof: nobody alive holds it, yet it is held
                stopped = self.stop_survivors()
                self.note(f"stopped {len(stopped)} stuck survivor(s) by PID")
            else:
                for i in who:
                    self.procs[i].join(JOIN_S)
                lock_held, stopped = self.store.lock_held(), []  # everyone left: it must be free
            counts = self.store.counts()
            pids = [p.pid for p in self.procs]
        finally:
            try:
                self.cleanup()
            finally:
                self.store.close()
        after = (decided if deadlocked else recovered or decided) - t_fault
        return self.result(pid, deadlocked, after, paused_s, lock_held, stuck, stopped, counts, pids)

    def result(self, pid, deadlocked, after, paused_s, lock_held, stuck, stopped, counts, pids) -> dict:
        plan = self.plan
        increments = sum(self.ctl.done)
        completed = not deadlocked and increments >= plan.steps
        lost = increments - counts["counter"]
        broken = []
        if counts["max_holders"] > 1:
            broken.append("mutual exclusion")
        if not completed:
            broken.append("progress")
        out = {
            "fault": plan.fault, "store": plan.store,
            "deadlocked": deadlocked, "completed": completed,
            "increments": increments, "planned": plan.steps, "counter": counts["counter"],
            "lost_updates": lost,
            "max_holders_at_once": counts["max_holders"],
            "lock_not_owned_errors": counts["not_owned"],
            "detected_after_s": round(after, 3),
            "paused_s": None if paused_s is None else round(paused_s, 3),
            "holder": {"worker": self.victim, "pid": pid,
                       "fate": "killed" if plan.fault == "kill-holder" else "paused"},
            "lock_held_at_end": lock_held,
            "survivors_stuck": len(stuck), "stopped_by_pid": stopped,
            "acquire_timeouts": sum(self.ctl.timed_out),
            "increments_by_worker": list(self.ctl.done),
            "pids": pids,
            "promise": PROMISES[plan.store].format(lease=plan.lease_s),
            "kept": not broken, "broken": broken,
            "settings": {**asdict(plan), "wait_s": plan.wait_s, "stall_s": plan.stall_s},
            "events": self.events,
        }
        out["summary"] = summary(out)
        return out


def _n(count: int, what: str) -> str:
    return f"{count} {what}{'' if count == 1 else 's'}"


def summary(r: dict) -> str:
    """One line for a table: what the fault did to this lock."""
    lease = r["settings"]["lease_s"]
    if r["fault"] == "kill-holder":
        head = "holder killed inside the lock"
    else:
        head = f"holder paused {r['paused_s']:.1f} s inside the lock"
    tally = f"{r['increments']}/{r['planned']} increments"
    if r["deadlocked"]:
        return (f"{head}: lock never released, {_n(r['survivors_stuck'], 'survivor')} stuck after "
                f"{tally}; deadlock detected after {r['detected_after_s']:.1f} s")
    end = f"{tally}, " + ("completed" if r["completed"] else "not completed")
    if r["max_holders_at_once"] > 1:
        return (f"{head}, past its {lease:g} s lease: {r['max_holders_at_once']} holders at once, "
                f"{_n(r['lost_updates'], 'update')} lost, {r['lock_not_owned_errors']} LockNotOwnedError "
                f"on release; {end} (counter {r['counter']})")
    if r["store"] == "redis" and r["fault"] == "kill-holder":
        return f"{head}: its {lease:g} s lease ran out, another process took over after {r['detected_after_s']:.1f} s; {end}"
    survivors = r["settings"]["workers"] - 1
    return (f"{head}: {_n(survivors, 'survivor')} waited ({_n(r['acquire_timeouts'], 'acquire timeout')}), "
            f"never 2 holders; {end}")


def lock_holder_fault(store: str, fault: str = "kill-holder", workers: int = 2, steps: int = 20,
                      lease_s: float = 1.0, redis_url: str | None = None, *, step_s: float = 0.02,
                      fault_after: int | None = None, start_method: str | None = None) -> dict:
    """Run ``workers`` processes incrementing a counter ``steps`` times under one lock of
    ``store``, strike the holder after ``fault_after`` increments (default steps // 4) with
    ``fault``, and return a JSON-able verdict (see the module docstring).

    ``redis_url=None`` starts a private EmbeddedRedis and stops it afterwards. Raises
    ValueError (one line, listing the choices) on bad input.

    The verdict: ``deadlocked`` (no progress for ``settings.stall_s``; the survivors were
    then stopped by PID), ``completed`` (all ``planned`` increments made), ``increments``
    made against ``counter`` (the protected value: ``lost_updates`` is the difference),
    ``max_holders_at_once``, ``lock_not_owned_errors``, ``detected_after_s`` (fault to the
    next increment, or to the deadlock verdict), ``holder`` (who was struck), ``promise``,
    ``kept``/``broken`` (mutual exclusion, progress), ``summary`` and a short ``events`` log."""
    plan = make_plan(store, fault, workers, steps, lease_s, step_s, fault_after, start_method)
    if store == "multiprocessing":
        return _Race(plan, _MpStore(mp.get_context(plan.start_method))).run()
    if redis_url:
        return _Race(plan, _RedisStore(redis_url)).run()
    with EmbeddedRedis() as server:
        return _Race(plan, _RedisStore(server.url)).run()
