"""Wrong: the fewest messages possible, one, so one worker does everything."""


def power(x: int) -> int:
    return x ** 2


def power_batch(batch: list[int]) -> list[int]:
    return [power(x) for x in batch]


def batches(items: list[int], workers: int) -> list[list[int]]:
    return [list(items)]
