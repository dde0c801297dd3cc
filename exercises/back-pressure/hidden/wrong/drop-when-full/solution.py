"""Bounded and never blocking: when the queue is full the item is skipped, so the queue
holds its bound by losing what does not fit."""
import queue as queues

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
        try:
            queue.put_nowait(item)
        except queues.Full:
            pass  # the consumers are busy; move on
    for _ in workers:
        queue.put(STOP)
    for worker in workers:
        worker.join()
