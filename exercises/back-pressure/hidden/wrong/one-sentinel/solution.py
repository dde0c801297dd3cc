"""Bounded, every item handled, but one stop signal for all the consumers: one of them
stops, the others wait on an empty queue forever, and join() waits for them."""

STOP = None


def consume(queue, handle) -> None:
    while (item := queue.get()) is not STOP:
        handle(item)


def run_pipeline(items, handle, capacity: int, consumers: int, Queue, Worker) -> None:
    queue = Queue(capacity)
    workers = [Worker(target=consume, args=(queue, handle)) for _ in range(consumers)]
    for worker in workers:
        worker.start()
    for item in items:
        queue.put(item)
    queue.put(STOP)  # "the end"
    for worker in workers:
        worker.join()
