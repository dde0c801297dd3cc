"""The live view: watch a race while it runs, in a browser.

One more subscriber of the event stream (``taskrace.events``)::

    a command (--live)  --events-->  LiveState  <--  taskrace live FILE    (a replay)
                                        |        <--  taskrace live redis://...  (the lab's
                                        |             run, relayed through a Redis stream)
                                  LiveServer (uvicorn, a thread)
                                        |  Server-Sent Events, batched, 5 a second at most
                                  the page (static/: lanes of task bars, queue, money, CPU,
                                            the fault window, the final table)

``state``: what the pages replay and follow; ``server``: the page and the stream;
``cpu``: the CPU sampler; ``relay``: the event stream through Redis (the lab's ``live``
service); ``cli``: ``--live`` on run, compare and faults, and ``taskrace live``.
"""
from __future__ import annotations

import contextlib
import sys

from workers import MissingDependency

REQUIRES = ("starlette", "uvicorn", "sse_starlette")


def check_installed() -> None:
    """The live view's packages, or one line saying what to install."""
    import importlib.util

    missing = [m for m in REQUIRES if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependency(f"the live view needs {', '.join(missing)}: pip install starlette uvicorn "
                                f"sse-starlette (or pip install -e .)")


@contextlib.contextmanager
def watching(port: int = 0, host: str = "127.0.0.1", title: str = "taskrace live", say=None, cpu: bool = True):
    """Serve a page that follows every event emitted inside the block; yields the server
    (``.url``). At the end the pages get the last events and the port is free again."""
    from taskrace import events
    from taskrace.live.cpu import CpuSampler
    from taskrace.live.server import LiveServer
    from taskrace.live.state import LiveState

    check_installed()
    state = LiveState()
    server = LiveServer(state, host, port, title)
    server.start()
    (say or _stderr)(f"live view: {server.url}  (read-only; Ctrl-C stops the run and the page's server)")
    sub = events.subscribe(state.add, tasks=True)
    sampler = CpuSampler().start() if cpu else None
    ok = False
    try:
        yield server
        ok = True
    finally:
        if sampler is not None:
            sampler.stop()
        sub.close()
        if ok:
            server.stop()
        else:  # Ctrl-C or a failure: no waiting on pages
            server.stop(drain=0.5)


def _stderr(text: str) -> None:
    print(f"taskrace: {text}", file=sys.stderr, flush=True)
