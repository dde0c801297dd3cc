"""Wrong: a batched task, but batches of one item: still one message per item."""


def power(x: int) -> int:
    return x ** 2


def power_batch(batch: list[int]) -> list[int]:
    return [power(x) for x in batch]


def batches(items: list[int], workers: int) -> list[list[int]]:
    chunk = 1
    return [items[i:i + chunk] for i in range(0, len(items), chunk)]
