"""The reference tier: everything runs in the caller, one task after another.

Every other tier is tested against this one's answers. With no concurrency there is
nothing to race, so every bank strategy is trivially safe here; actors run one after
another in list order (scenarios put producers before consumers for that reason).
"""
from __future__ import annotations

import queue
import threading
import time

from workers.base import Actor, MemoryAccounts, Outcome, Tier, call


class SequentialTier(Tier):
    name = "sequential"
    summary = "everything in the caller, one task after another: the reference answer"
    shares_memory = True
    channel_bounded = False  # see channel()

    def __init__(self, workers: int = 1, **options) -> None:
        # One executor, whatever -n says: the baseline is by definition serial.
        super().__init__(1, **options)

    def map(self, fn, args_list, chunksize=1) -> list[Outcome]:
        self._queued(len(args_list), time.perf_counter())
        on_start = self.started_hook()
        outcomes = []
        for index, args in enumerate(args_list):
            submitted = time.perf_counter()
            outcomes.append(self._seen(call(index, fn, args, on_start), submitted))
        return outcomes

    def run_actors(self, actors: list[Actor]) -> list[Outcome]:
        return self.map(lambda fn, args: fn(*args), [(a.fn, a.args) for a in actors])

    def accounts(self, balances):
        return MemoryAccounts(balances)

    def lock(self):
        return threading.Lock()

    def channel(self, maxsize=0):
        # A bounded queue with nobody consuming concurrently would block forever on the
        # (maxsize+1)th put, so the serial baseline ignores the bound. Scenarios report it.
        return queue.Queue()
