"""A bank transfer as the body of a Celery task, delivered at least once: exactly once
by an idempotency key set in the same atomic step as the effect."""
from functools import lru_cache

import redis

# Redis runs a Lua script whole, with no other client's command in between, and a crash
# cannot stop it half way: the key and both balance changes land together or not at all.
TRANSFER = """
if redis.call('SET', KEYS[3], 1, 'NX', 'EX', ARGV[2]) then
  redis.call('DECRBY', KEYS[1], ARGV[1])
  redis.call('INCRBY', KEYS[2], ARGV[1])
  return 1
end
return 0
"""
KEEP_KEYS_S = 7 * 24 * 3600  # longer than any redelivery can come (kombu: visibility timeout)


@lru_cache(maxsize=None)
def _client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def transfer(redis_url: str, transfer_id: str, src: str, dst: str, amount: int) -> bool:
    """Move ``amount`` from ``src`` to ``dst`` once per ``transfer_id``; True when this
    call moved it, False when an earlier delivery had."""
    done_key = f"transfer:done:{transfer_id}"
    return _client(redis_url).eval(TRANSFER, 3, src, dst, done_key, amount, KEEP_KEYS_S) == 1
