"""Shared state that lives in Redis: what Celery workers share instead of memory.

These handles cross the broker as JSON (registered with kombu's JSON encoder below),
carrying only key names. Each side connects with its own URL: the harness with the one
it was given, a worker with ``TASKRACE_BROKER_URL`` from its environment, so no password
travels in a message.

    harness                      broker (JSON)                 worker process
    RedisAccounts(key, n) --> {"__type__": "taskrace.accounts", --> RedisAccounts(key, n)
                               "__value__": {"key", "n"}}           -> GET/SET/INCRBY/EVAL

Accounts are one Redis string per account. ``read``/``write`` are GET and SET: two round
trips, with room for another writer in between. ``apply_atomic`` is one Lua script (Redis
runs scripts one at a time). ``apply_optimistic`` is WATCH/MULTI/EXEC, retried when
another writer got in first. Each of the last two takes a ticket from a counter inside
the same atomic step, so the history can be ordered exactly.
"""
from __future__ import annotations

import json
import os
import threading
import time

import redis
from kombu.utils.json import register_type

# Blocking calls poll in short steps so a dead peer cannot hang a task forever.
POLL_S = 1.0
DEFAULT_DEADLINE_S = 300.0

_clients: dict[str, redis.Redis] = {}
_clients_guard = threading.Lock()


def client(url: str | None = None) -> redis.Redis:
    """One client (connection pool) per URL per process."""
    url = url or os.environ.get("TASKRACE_BROKER_URL")
    if not url:
        raise RuntimeError("no Redis URL: TASKRACE_BROKER_URL is not set in this worker")
    with _clients_guard:
        if url not in _clients:
            _clients[url] = redis.Redis.from_url(url, socket_timeout=POLL_S + 10,
                                                 socket_connect_timeout=5, decode_responses=True)
        return _clients[url]


_ATOMIC = """
-- KEYS: the accounts, then the ticket counter. ARGV[1]: guard (1/0), then the deltas.
local n = #KEYS - 1
local out = {0, 0}
local after = {}
for i = 1, n do
  local before = tonumber(redis.call('GET', KEYS[i]) or '0')
  after[i] = before + tonumber(ARGV[i + 1])
  out[2 + i] = before
end
if ARGV[1] == '1' then
  for i = 1, n do
    if after[i] < 0 then out[2] = redis.call('INCR', KEYS[n + 1]); return out end
  end
end
for i = 1, n do redis.call('SET', KEYS[i], after[i]); out[2 + n + i] = after[i] end
out[1] = 1
out[2] = redis.call('INCR', KEYS[n + 1])
return out
"""


class RedisAccounts:
    """Integer balances in Redis, with the same interface as the in-memory ones."""

    def __init__(self, key: str, n: int, url: str | None = None) -> None:
        self.key, self.n, self._url = key, n, url

    @property
    def r(self) -> redis.Redis:
        return client(self._url)

    def _k(self, account: int) -> str:
        return f"{self.key}:{account}"

    def create(self, balances: list[int]) -> "RedisAccounts":
        self.r.mset({self._k(i): v for i, v in enumerate(balances)})
        self.r.set(f"{self.key}:ticket", 0)
        return self

    def read(self, account: int) -> int:
        return int(self.r.get(self._k(account)))

    def write(self, account: int, value: int) -> None:
        self.r.set(self._k(account), value)

    def snapshot(self) -> list[int]:
        return [int(v) for v in self.r.mget([self._k(i) for i in range(self.n)])]

    def apply_atomic(self, deltas, guard: bool):
        keys = [self._k(a) for a, _ in deltas] + [f"{self.key}:ticket"]
        out = self.r.eval(_ATOMIC, len(keys), *keys, int(guard), *[d for _, d in deltas])
        n = len(deltas)
        before = [int(v) for v in out[2:2 + n]]
        after = [int(v) for v in out[2 + n:2 + 2 * n]] if out[0] == 1 else None
        return before, after, int(out[1])

    def apply_optimistic(self, deltas, guard: bool, window_s: float, max_retries: int = 10_000):
        """Read under WATCH, think for ``window_s``, write in MULTI/EXEC; if another
        writer touched a watched key meanwhile, EXEC fails and we start over."""
        keys = [self._k(a) for a, _ in deltas]
        ticket = f"{self.key}:ticket"
        retries = 0
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(*keys)
                    before = [int(v) for v in pipe.mget(keys)]
                    if window_s:
                        time.sleep(window_s)
                    after = [b + d for b, (_, d) in zip(before, deltas)]
                    if guard and any(v < 0 for v in after):
                        pipe.multi()
                        pipe.incr(ticket)
                        return before, None, int(pipe.execute()[-1]), retries
                    pipe.multi()
                    for k, v in zip(keys, after):
                        pipe.set(k, v)
                    pipe.incr(ticket)
                    return before, after, int(pipe.execute()[-1]), retries
                except redis.WatchError:
                    retries += 1
                    if retries > max_retries:
                        raise RuntimeError(f"gave up after {retries} conflicting retries") from None


class RedisLock:
    """redis-py's Lock (SET NX PX with a token) as a context manager. The timeout frees
    the lock if its holder dies; ``blocking_timeout`` keeps a waiter from hanging."""

    def __init__(self, name: str, url: str | None = None, timeout: float = 60.0) -> None:
        self.name, self._url, self.timeout = name, url, timeout
        self._held = None

    def __enter__(self) -> "RedisLock":
        # sleep: how often a waiter retries; redis-py's 0.1 s default would dwarf the race.
        lock = client(self._url).lock(self.name, timeout=self.timeout, sleep=0.001,
                                      blocking_timeout=DEFAULT_DEADLINE_S)
        if not lock.acquire():
            raise TimeoutError(f"could not take lock {self.name} in {DEFAULT_DEADLINE_S:.0f} s")
        self._held = lock
        return self

    def __exit__(self, *exc: object) -> None:
        lock, self._held = self._held, None
        lock.release()


class RedisChannel:
    """A FIFO of JSON items in a Redis list. With ``maxsize``, a second list holds one
    token per free slot: ``put`` takes a token first (blocking when the channel is full,
    like ``queue.Queue(maxsize)``), ``get`` gives one back."""

    def __init__(self, key: str, maxsize: int = 0, url: str | None = None) -> None:
        self.key, self.maxsize, self._url = key, maxsize, url

    @property
    def r(self) -> redis.Redis:
        return client(self._url)

    def create(self) -> "RedisChannel":
        self.r.delete(f"{self.key}:items", f"{self.key}:free")
        if self.maxsize:
            self.r.rpush(f"{self.key}:free", *[1] * self.maxsize)
        return self

    def _blocking_pop(self, key: str, what: str):
        deadline = time.monotonic() + DEFAULT_DEADLINE_S
        while time.monotonic() < deadline:
            popped = self.r.blpop([key], timeout=POLL_S)
            if popped is not None:
                return popped[1]
        raise TimeoutError(f"channel {self.key}: nothing to {what} for {DEFAULT_DEADLINE_S:.0f} s")

    def put(self, item) -> None:
        if self.maxsize:
            self._blocking_pop(f"{self.key}:free", "put into (full)")
        self.r.rpush(f"{self.key}:items", json.dumps(item))

    def get(self):
        item = json.loads(self._blocking_pop(f"{self.key}:items", "get"))
        if self.maxsize:
            self.r.rpush(f"{self.key}:free", 1)
        return item

    def qsize(self) -> int:
        return self.r.llen(f"{self.key}:items")


# Teach kombu's JSON to carry the handles (key names only; see the module docstring).
register_type(RedisAccounts, "taskrace.accounts", lambda a: {"key": a.key, "n": a.n},
              lambda v: RedisAccounts(v["key"], v["n"]))
register_type(RedisLock, "taskrace.lock", lambda l: {"name": l.name, "timeout": l.timeout},
              lambda v: RedisLock(v["name"], timeout=v["timeout"]))
register_type(RedisChannel, "taskrace.channel", lambda c: {"key": c.key, "maxsize": c.maxsize},
              lambda v: RedisChannel(v["key"], v["maxsize"]))
