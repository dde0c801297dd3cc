"""WATCH, read, MULTI, write, EXEC: right, once. When another client changed a watched
key, EXEC fails (redis-py raises WatchError) and nothing was written; this solution
shrugs and reports the transfer as done."""
import redis


def transfer(r, src: str, dst: str, amount: int) -> bool:
    with r.pipeline() as pipe:
        try:
            pipe.watch(src, dst)
            balance, target = int(pipe.get(src)), int(pipe.get(dst))
            if balance < amount:
                return False
            pipe.multi()
            pipe.set(src, balance - amount)
            pipe.set(dst, target + amount)
            pipe.execute()
        except redis.WatchError:
            pass  # someone else was writing; ours went through anyway, surely
    return True
