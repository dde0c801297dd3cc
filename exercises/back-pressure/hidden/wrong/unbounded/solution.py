"""Every item once, a clean stop, but a queue with no bound: the fast producer piles up
every item while the slow consumers work through the first few."""

STOP = None


def consume(queue, handle) -> None:
    while (item := queue.get()) is not STOP:
        handle(item)


def run_pipeline(items, handle, capacity: int, consumers: int, Queue, Worker) -> None:
    queue = Queue()
    workers = [Worker(target=consume, args=(queue, handle)) for _ in range(consumers)]
    for worker in workers:
        worker.start()
    for item in items:
        queue.put(item)
    for _ in workers:
        queue.put(STOP)
    for worker in workers:
        worker.join()
