"""Tiny tasks on Celery, batched: one message per worker's share of the items."""


def power(x: int) -> int:
    """One item's work (leave it as it is): the seed's ``i ** y``, for one number."""
    return x ** 2


def power_batch(batch: list[int]) -> list[int]:
    """One Celery task for a whole batch: the power of every item, in order."""
    return [power(x) for x in batch]


def batches(items: list[int], workers: int) -> list[list[int]]:
    """As many contiguous batches as workers, sizes differing by one at most: every
    worker gets one message and an equal share (contiguous: concatenated, they are the
    items in order)."""
    count = max(1, min(workers, len(items)))
    size, extra = divmod(len(items), count)
    out, start = [], 0
    for k in range(count):
        end = start + size + (1 if k < extra else 0)
        out.append(items[start:end])
        start = end
    return out
