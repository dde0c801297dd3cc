"""The live view's web server: one page, its static files, and one Server-Sent Events
stream, served by uvicorn in a thread of the command that runs::

    run's threads --emit--> LiveState.add        (append, under a lock: never waits)
                                 |
    uvicorn thread:  GET /stream  every 0.2 s: the lines past this page's cursor, as one
                                  "batch" event (the whole run so far on connect)
                     GET /        the page; GET /static/*: its script, style, Chart.js
                     GET /state   a summary (JSON)

Read-only: every route is a GET and none changes anything. Bound to 127.0.0.1 unless
told otherwise. Nothing loads from the network: Chart.js is vendored under ``static/``,
and the page's Content-Security-Policy allows this origin only.

A page that stops reading blocks only its own stream (uvicorn's flow control waits on
that connection; ``send_timeout`` then drops it); the run never waits on a page.
"""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path

from taskrace.options import UsageError

STATIC = Path(__file__).with_name("static")
BATCH_S = 0.2           # a page gets at most this many updates a second: 1 / BATCH_S
BATCH_LINES = 5000      # one SSE message carries at most this many events
SEND_TIMEOUT_S = 10.0   # a page that reads nothing this long is dropped
DRAIN_S = 3.0           # at the end, pages get this long to receive the last events
HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'",
           "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


class LiveError(UsageError):
    """The live view cannot start (the port is taken, the address is not ours): one line,
    exit 2, like any bad input."""


def make_app(state, title: str = "taskrace live"):
    from sse_starlette.sse import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    page = (STATIC / "index.html").read_text(encoding="utf-8").replace("{{title}}", title)
    streams = {"open": 0}

    async def index(request):
        return HTMLResponse(page, headers=HEADERS)

    async def summary(request):
        return JSONResponse({**state.snapshot(), "pages": streams["open"]}, headers=HEADERS)

    async def stream(request):
        generation, cursor = _resume_from(request.headers.get("last-event-id"))

        async def batches():
            nonlocal generation, cursor
            streams["open"] += 1
            try:
                while True:
                    lines, end, gen = state.since(cursor, generation)
                    if gen != generation:  # a new run began: the page starts over
                        generation, cursor = gen, 0
                        yield {"event": "reset", "data": json.dumps({"generation": gen})}
                        continue
                    for i in range(0, len(lines), BATCH_LINES):
                        chunk = lines[i:i + BATCH_LINES]
                        cursor += len(chunk)
                        yield {"event": "batch", "id": f"{generation}:{cursor}", "data": "[" + ",".join(chunk) + "]"}
                    if state.closed and cursor >= end:
                        yield {"event": "end", "data": json.dumps(state.snapshot())}
                        return
                    if await request.is_disconnected():
                        return
                    await asyncio.sleep(BATCH_S)
            finally:
                streams["open"] -= 1

        return EventSourceResponse(batches(), ping=5, send_timeout=SEND_TIMEOUT_S, headers=HEADERS)

    async def no_icon(request):
        return Response(status_code=204)

    app = Starlette(routes=[Route("/", index), Route("/state", summary), Route("/stream", stream),
                            Route("/favicon.ico", no_icon),
                            Mount("/static", StaticFiles(directory=STATIC), name="static")])
    app.state.streams = streams
    return app


def _resume_from(last_id: str | None) -> tuple[int, int]:
    """A page that reconnects (EventSource does, by itself) says where it was."""
    try:
        gen, cur = (last_id or "").split(":")
        return int(gen), int(cur)
    except ValueError:
        return -1, 0  # a new page: everything from the start


class LiveServer:
    """The server of one ``LiveState``, in a thread: ``start()`` returns the URL;
    ``stop()`` tells pages the run is over, lets them drain, and frees the port."""

    def __init__(self, state, host: str = "127.0.0.1", port: int = 0, title: str = "taskrace live") -> None:
        self.state, self.host, self.port, self.title = state, host, port, title
        self._server = self._thread = self._sock = self._app = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> str:
        import uvicorn

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
            sock.listen(64)
        except OSError as exc:
            sock.close()
            raise LiveError(f"the live view cannot listen on {self.host}:{self.port}: "
                            f"{exc.strerror or exc}") from None
        self._sock, self.port = sock, sock.getsockname()[1]
        self._app = make_app(self.state, self.title)
        config = uvicorn.Config(self._app, log_level="error", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # the command handles Ctrl-C
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="taskrace-live", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            self.stop(drain=0)
            raise LiveError(f"the live view did not start on {self.host}:{self.port}")
        return self.url

    def stop(self, drain: float = DRAIN_S) -> None:
        self.state.close()
        if self._server is None:
            return
        deadline = time.monotonic() + drain
        while self._app is not None and self._app.state.streams["open"] and time.monotonic() < deadline:
            time.sleep(0.05)
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._sock is not None:
            self._sock.close()
        self._server = None

    def __enter__(self) -> "LiveServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop(drain=DRAIN_S if exc[0] is None else 0.5)
