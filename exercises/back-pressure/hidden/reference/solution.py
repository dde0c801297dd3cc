"""The bounded pipeline (the reference solution)."""

STOP = None  # a value no item can have: "no more items, stop"


def consume(queue, handle) -> None:
    while (item := queue.get()) is not STOP:
        handle(item)


def run_pipeline(items, handle, capacity: int, consumers: int, Queue, Worker) -> None:
    queue = Queue(capacity)  # full: put() waits for a consumer (back-pressure)
    workers = [Worker(target=consume, args=(queue, handle)) for _ in range(consumers)]
    for worker in workers:
        worker.start()
    for item in items:
        queue.put(item)
    # Each consumer stops at the first STOP it takes, so each needs one of its own. They
    # come after every item (one queue, first in first out): no item is left behind them.
    for _ in workers:
        queue.put(STOP)
    for worker in workers:
        worker.join()
