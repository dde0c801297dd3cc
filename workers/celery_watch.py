"""The watch of one wait on Celery results: which results arrived, which workers died,
and what each missing task can still become (the dead-worker rules of ``CeleryTier``)::

    CeleryTier._watched (a group's join, a chord's body)
        join_native(on_interval=...)  ->  CeleryTier._look_for_deaths(watch)
                                              waitpid / pings -> watch.died(node)
                                          CeleryTier._fates(watch): inspect, the broker's
                                              unacked and queue -> watch.lost
                                          nothing more can arrive -> raise Settled

Its own module so that the tier and the chord (``workers.celery_chord``) both use it
without importing each other.
"""
from __future__ import annotations

import json
import time

LOOK_EVERY_S = 0.5  # workers looked at (waitpid) at most this often while results arrive
CONFIRM_S = 0.5  # a task is called lost only when two looks this far apart agree
INSPECT_TIMEOUT_S = 1.0  # inspect active/reserved, asked only after a death
STALL_PING_S = 2.0  # external workers: pinged only after this long without a result
PING_MISSES = 3  # ... and taken for dead after missing this many pings in a row
ACTOR_GRACE_S = 5.0  # actors wait on each other: after a loss, stuck = shared state unchanged this long
# Noticing (a look every 0.5 s, join_native's 1 s drain tick), confirming (two looks 0.5 s
# apart, each with up to two 1 s inspect calls): what ending a wait may take beyond the work.
SETTLE_SLACK_S = LOOK_EVERY_S + 1.0 + CONFIRM_S + 2 * INSPECT_TIMEOUT_S + 1.0
LOST_FATES = ("gone", "parked", "stranded", "abandoned")


class Settled(Exception):
    """Raised from join_native's on_interval: nothing more can arrive."""


class Watch:
    """The state of one wait: which results arrived, which workers died, and what the
    missing ones can still become.

    ``results``: one AsyncResult per message, in the order of ``spans``. Most arrive
    through the wait's callback; those in ``polled`` are not waited on (a chord's header:
    only its body is), so the watch reads them from the result backend itself, only when
    it must know (a death noticed and each look after it; external workers, before a
    ping). ``body``: the index of a message sent only once every other one arrived (a
    chord's body): while others are missing it has not been sent, and it can arrive
    exactly when they can, so its own fate is asked only once it is the last one."""

    def __init__(self, tier,  # the CeleryTier waiting (not imported: the tier imports this module)
                 results: list, spans: list[list[int]], actors: bool,
                 polled=(), body: int | None = None) -> None:
        self.tier, self.spans, self.actors = tier, spans, actors
        self.what = ""  # the function or the actors' roles: which run of a compare this was
        self.ids = [r.id for r in results]
        self.polled, self.body = list(polled), body
        self.index = {tid: k for k, tid in enumerate(self.ids)}
        self.values: dict[int, tuple] = {}
        self.t0 = self.last_arrival = time.monotonic()
        self.next_look = self.t0 + LOOK_EVERY_S
        self.deaths: list[dict] = []
        self.replaced: list[str] = []
        self.child_lost: dict[int, str] = {}  # message -> WorkerLostError text
        self.redelivered = False  # a result ran from a message kombu gave back
        self.lost: dict[int, tuple[str, str]] = {}  # message -> (fate, where), once settled
        self.misses: dict[str, int] = {}
        self.noticed_at: float | None = None
        self.pending_at_notice: int | None = None
        self.survivors = 0
        self._seen_fates: dict | None = None
        self._seen_at = 0.0
        self._digest: str | None = None  # actors: the shared state, to tell stuck from slow
        self._changed_at = 0.0
        self.stuck_for: float | None = None
        self.abandoned: dict[int, tuple[str, str]] = {}

    def arrived(self, task_id, value) -> None:
        k = self.index.get(task_id)
        if k is None or k in self.values:
            return
        if isinstance(value, BaseException):  # propagate=False: a failed task's exception
            text = f"{type(value).__name__}: {value}"
            if type(value).__name__ == "WorkerLostError":  # a pool child killed under it
                self.child_lost[k] = text
                self._notice()
            value = {"error": text}
        elif isinstance(value, dict) and "redelivered" in value:
            self.redelivered = True
        self.values[k] = (value, time.perf_counter())
        self.last_arrival = time.monotonic()

    def died(self, node: str, pid: int | None, how: str) -> None:
        self._notice()
        self.deaths.append({"node": node, "pid": pid, "how": how,
                            "noticed_s": round(time.monotonic() - self.t0, 3)})

    def _notice(self) -> None:
        if self.noticed_at is None:
            self.noticed_at = time.monotonic()
            self.poll()  # the unfinished work, counted for the bound
            self.pending_at_notice = len(self.ids) - len(self.values)
            live, _ = self.tier._live_nodes()
            if self.tier.external and not self.actors:  # plain tasks: only the -n that took the run's queue
                live = [n for n in live if n in self.tier._main_nodes]
            self.survivors = len(live)

    def poll(self) -> None:
        """The results in ``polled`` that are in the backend by now, as if they had arrived."""
        pending = [tid for tid in self.polled if self.index[tid] not in self.values]
        if pending:
            for tid, value in self.tier._stored_results(pending).items():
                self.arrived(tid, value)

    def on_interval(self) -> None:
        now = time.monotonic()
        if now < self.next_look:
            return
        self.next_look = now + LOOK_EVERY_S
        stalled = self.tier.external and now - self.last_arrival >= STALL_PING_S
        if stalled:  # a ping only if the polled results did not move either
            self.poll()
        self.tier._look_for_deaths(self)
        if not self.deaths:
            return
        if not stalled:
            self.poll()
        fates = self.tier._fates(self)
        if self.actors:
            fates = self._abandon(fates, now)
        if not fates or any(f not in LOST_FATES for f, _ in fates.values()):
            self._seen_fates = None
            return
        if self._seen_fates is not None and {k: f for k, (f, _) in fates.items()} == self._seen_fates \
                and now - self._seen_at >= CONFIRM_S:
            self.lost = fates
            raise Settled
        if self._seen_fates is None or {k: f for k, (f, _) in fates.items()} != self._seen_fates:
            self._seen_fates, self._seen_at = {k: f for k, (f, _) in fates.items()}, now

    def _abandon(self, fates: dict, now: float) -> dict:
        """Actors wait on each other: once one is surely lost, the others (consumers
        waiting for a lost producer's items) may wait forever. Stuck means the run's
        shared state (its keys in Redis: balances, channels, locks) has not changed for
        max(ACTOR_GRACE_S, how long the run had gone before the death); then the
        running ones count as abandoned and the workers running them are replaced."""
        fates = {**fates, **{k: v for k, v in self.abandoned.items() if k in fates}}  # abandoned stays so
        if not any(f in LOST_FATES for f, _ in fates.values()):
            return fates
        digest = self.tier._state_digest()
        if digest is None or digest != self._digest:
            self._digest, self._changed_at = digest, now
            return fates
        grace = max(ACTOR_GRACE_S, (self.noticed_at or now) - self.t0)
        if now - self._changed_at < grace:
            return fates
        self.stuck_for = self.stuck_for or round(now - self._changed_at, 3)
        held = {where for f, where in fates.values() if f == "running"}
        self.abandoned.update({k: ("abandoned", where) for k, (f, where) in fates.items() if f not in LOST_FATES})
        if held and not self.tier.external:
            self.tier._recycle(held, self)
        return {**fates, **self.abandoned}


def message_id(raw) -> str | None:
    """The task id in a kombu message (bytes or str JSON, or the decoded dict)."""
    try:
        payload = json.loads(raw) if isinstance(raw, (bytes, str)) else raw
        return payload["headers"]["id"]
    except (ValueError, KeyError, TypeError):
        return None


def why_lost(fate: tuple[str, str], nodes: str, mode) -> str:
    kind, where = fate
    if kind == "gone":
        early = not mode.settings.get("task_acks_late")
        return (f"worker {nodes} died while it ran it ("
                + ("acknowledged when it started, so nothing brings it back)" if early
                   else "its message is gone from the broker)"))
    if kind == "parked":
        return (f"worker {nodes} died holding it unacknowledged (prefetched, or running under late acks); "
                f"kombu restores it only after visibility_timeout {mode.visibility_timeout_s:.0f} s, past this "
                f"run's timeout")
    if kind == "stranded":
        return "queued with no live worker left to take it"
    if kind == "abandoned":
        return (f"still running on {where} with the shared state unchanged since a peer it may wait on was "
                f"lost (stuck); its worker was replaced")
    return kind


def ranges(indices: list[int], limit: int = 20) -> str:
    """1, 3-5, 9 (at most ``limit`` items, then how many more)."""
    out, run = [], []
    for i in sorted(set(indices)):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 2 else ", ".join(map(str, run)))
        run = [i]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 2 else ", ".join(map(str, run)))
    text = ", ".join(out[:limit])
    return text + (f" and {len(out) - limit} more" if len(out) > limit else "")
