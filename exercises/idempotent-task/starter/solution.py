"""A bank transfer as the body of a Celery task, delivered at least once.

Under at-least-once delivery (late acks: the broker forgets a task only once a worker
finished it) a worker that dies or stalls half way has its task run again, so the same
transfer can arrive twice. Make it land exactly once.
"""
import redis


def transfer(redis_url: str, transfer_id: str, src: str, dst: str, amount: int) -> bool:
    """Move ``amount`` from account ``src`` to account ``dst`` (Redis keys holding
    integers), at most once per ``transfer_id``.

    Return True when this call moved the money, False when transfer ``transfer_id`` had
    been applied already (by an earlier delivery of the same task).
    """
    with redis.Redis.from_url(redis_url) as r:
        # TODO(student): a second delivery with the same transfer_id must change nothing
        # and return False. Record the ids you applied (an idempotency key), and make
        # "is the key there?", "set it" and the two balance changes ONE atomic step: a
        # crash, or a second delivery, may come between any two separate commands.
        with r.pipeline(transaction=True) as pipe:
            pipe.decrby(src, amount)
            pipe.incrby(dst, amount)
            pipe.execute()
        return True
