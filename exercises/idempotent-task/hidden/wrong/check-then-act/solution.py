"""Wrong: the key and the effect are set together in one MULTI/EXEC, but the check (GET)
is a separate step before it: two deliveries at once both read "not applied" and both
apply the transfer."""
import redis


def transfer(redis_url: str, transfer_id: str, src: str, dst: str, amount: int) -> bool:
    done_key = f"transfer:done:{transfer_id}"
    with redis.Redis.from_url(redis_url) as r:
        if r.get(done_key) is not None:
            return False
        with r.pipeline(transaction=True) as pipe:
            pipe.decrby(src, amount)
            pipe.incrby(dst, amount)
            pipe.set(done_key, 1)
            pipe.execute()
        return True
