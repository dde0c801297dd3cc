"""A pipeline: one producer -> a bounded queue -> several consumers.

``run_pipeline(items, handle, capacity, consumers, Queue, Worker)`` sends every item of
``items`` through one queue to ``consumers`` workers; each worker calls ``handle(item)``
on every item it takes. It returns once every item has been handled and every worker has
stopped.

* ``Queue``: the queue class to use (``queue.Queue`` on threads, ``multiprocessing.Queue``
  on processes): ``Queue(maxsize)``, ``put``, ``get``, ``put_nowait``, ``get_nowait``.
* ``Worker``: the worker class (``threading.Thread`` or ``multiprocessing.Process``):
  ``Worker(target=..., args=(...))``, ``start()``, ``join()``.
* ``handle`` is slow, the producer is fast: the queue must never hold more than
  ``capacity`` items.
"""

STOP = None  # a value no item can have: "no more items, stop"


def consume(queue, handle) -> None:
    # TODO(student): stop when this consumer gets its stop signal (STOP), instead of
    # waiting for the next item forever.
    while True:
        item = queue.get()
        handle(item)


def run_pipeline(items, handle, capacity: int, consumers: int, Queue, Worker) -> None:
    # TODO(student): this queue has no bound: a fast producer fills it with every item
    # while the consumers are still on the first ones. Give it its capacity, so that a
    # full queue makes put() wait for a consumer to take an item.
    queue = Queue()
    workers = [Worker(target=consume, args=(queue, handle)) for _ in range(consumers)]
    for worker in workers:
        worker.start()
    for item in items:
        queue.put(item)
    # TODO(student): tell every consumer to stop (one signal reaches one consumer), then
    # wait for each of them to finish before returning.
