"""Wrong: the transfer is atomic and the key is checked, but the key is set AFTER the
effect, in a separate command: a crash between the two leaves the transfer applied and
its key missing, so the redelivery applies it again."""
import redis


def transfer(redis_url: str, transfer_id: str, src: str, dst: str, amount: int) -> bool:
    done_key = f"transfer:done:{transfer_id}"
    with redis.Redis.from_url(redis_url) as r:
        if r.exists(done_key):
            return False
        with r.pipeline(transaction=True) as pipe:
            pipe.decrby(src, amount)
            pipe.incrby(dst, amount)
            pipe.execute()
        r.set(done_key, 1)
        return True
