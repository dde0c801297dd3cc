"""Tiny tasks on Celery: one message per item drowns the work in the broker's overhead.

Each item's work is ``power(x)``: about a microsecond. A Celery task costs a message
into Redis, a worker taking it, a result back, and the harness reading it: a few
milliseconds. Send many items per message instead.
"""


def power(x: int) -> int:
    """One item's work (leave it as it is): the seed's ``i ** y``, for one number."""
    return x ** 2


def power_batch(batch: list[int]) -> list[int]:
    """One Celery task for a whole batch: the power of every item of ``batch``, in order."""
    # TODO(student): this handles a batch of one item only; do every item of the batch.
    return [power(batch[0])]


def batches(items: list[int], workers: int) -> list[list[int]]:
    """Split ``items`` into the batches sent as one message each (``workers`` Celery
    workers take them). Concatenated, the batches must be ``items``, in order."""
    # TODO(student): one item per message is 1 message (and 1 round trip through Redis)
    # per microsecond of work. Choose batches: few enough that the overhead is paid
    # rarely, enough that every worker gets its share.
    return [[x] for x in items]
