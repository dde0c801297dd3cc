"""A TCP proxy that puts a network between two endpoints: delay, jitter, partitions.

Why: this kernel has no ``netem`` (``tc qdisc add ... netem`` says "unknown qdisc") and
there is no toxiproxy here, yet the reason to move from processes to a broker is that
workers can live on other machines, and the price is the network, paid per message. So
the workers reach Redis through this proxy::

    worker --> 127.0.0.1:<proxy port> --[delay +- jitter]--> Redis host:port
    worker <-----------------------------[delay +- jitter]-- Redis

Each direction of each connection is a queue of (release time, chunk): the reading side
stamps a chunk ``now + delay + uniform(-jitter, +jitter)`` when it arrives, the writing
side sends it at that time. A chunk is never released before the one read before it (TCP
does not reorder bytes), and the delay is not paid again per chunk: a stream of chunks
arrives late by ``delay``, not slowed down by ``delay`` per chunk. So with a delay D
applied per direction a request/response round trip takes at least 2 D.

``blackhole()`` is a partition: nothing crosses any more, in either direction (or one),
yet nothing is reset: bytes already read are held, and connections simply hang, as they
do when packets are dropped and TCP keeps retransmitting. New connections are accepted
(the listening socket is local) but not connected onward until the link heals.
``heal()`` releases what was held, in order. ``set_delay()`` changes delay and jitter at
run time, for chunks read from then on.

The proxy runs its own asyncio loop in a thread of its own, so sync code uses it::

    with LatencyProxy(("127.0.0.1", 6379), delay="5ms") as proxy:
        r = redis.Redis(port=proxy.port)

or as a process of its own (a container in the lab), SIGUSR1 to blackhole, SIGUSR2 to
heal, SIGTERM/SIGINT to stop::

    python -m workers.infra.latency_proxy --target redis:6379 --latency 5ms --listen 0.0.0.0:6380

Durations (``parse_duration``): ``"5ms"``, ``"0.005s"``, ``"500us"``, or a bare number in
milliseconds (``"5"`` = 5 ms); in Python, an int or float is seconds. A latency spec
(``parse_latency``) is a duration with an optional jitter: ``"2ms+-1ms"`` (or ``±``).
"""
from __future__ import annotations

import argparse
import asyncio
import math
import random
import re
import selectors
import signal
import sys
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

HOST = "127.0.0.1"
CHUNK = 64 * 1024
QUEUE_CHUNKS = 256  # held per direction before the proxy stops reading (back-pressure)
DIRECTIONS = ("up", "down")  # up: client -> target; down: target -> client

FORMS = ('accepted forms: "5ms", "0.005s", "500us", "5" (milliseconds), '
         'with jitter "2ms+-1ms"; not negative')
_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "": 1e-3}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(us|µs|ms|s|)\s*$")


def parse_duration(value) -> float:
    """Seconds from ``"5ms"``, ``"0.005s"``, ``"500us"``, ``"5"`` (ms) or a number of
    seconds. ValueError (one line, naming the accepted forms) for anything else,
    negative or not finite values included."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r} ({FORMS})")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            shown = " ".join(value.split())  # one line, whatever was passed
            why = "negative" if shown.startswith("-") else "not a duration"
            raise ValueError(f"{why}: {shown!r} ({FORMS})")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"not a duration: {value!r} ({FORMS})")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{'negative' if seconds < 0 else 'not a duration'}: {value!r} ({FORMS})")
    return seconds


@dataclass(frozen=True)
class Latency:
    """A one-way delay and its jitter, in seconds: each chunk waits delay +- jitter."""

    delay: float
    jitter: float = 0.0
    spec: str = ""

    def to_dict(self) -> dict:
        return {"spec": self.spec or _fmt(self.delay) + (f"+-{_fmt(self.jitter)}" if self.jitter else ""),
                "delay_ms": round(self.delay * 1e3, 3), "jitter_ms": round(self.jitter * 1e3, 3)}


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e3:g}ms"


def parse_latency(value) -> Latency:
    """``"5ms"``, ``"2ms+-1ms"``, ``"2ms±1ms"``: one-way delay and jitter. The jitter may
    not exceed the delay (a chunk cannot leave before it arrived)."""
    if isinstance(value, Latency):
        return value
    text = value if isinstance(value, str) else None
    if text is not None and re.search(r"\+-|±", text):
        delay_text, jitter_text = re.split(r"\+-|±", text, maxsplit=1)
        delay, jitter = parse_duration(delay_text), parse_duration(jitter_text)
    else:
        delay, jitter = parse_duration(value), 0.0
    _check_jitter(delay, jitter)
    return Latency(delay, jitter, " ".join(text.split()) if text is not None else "")


def _check_jitter(delay: float, jitter: float) -> None:
    if jitter > delay:
        raise ValueError(f"jitter {_fmt(jitter)} exceeds the delay {_fmt(delay)}: a chunk cannot "
                         f"leave before it arrived ({FORMS})")


def redis_target(url: str) -> tuple[str, int]:
    """(host, port) of a ``redis://`` or ``rediss://`` URL; ValueError otherwise."""
    p = urlsplit(url)
    if p.scheme not in ("redis", "rediss") or not p.hostname:
        raise ValueError("latency needs a TCP broker: a redis:// or rediss:// URL with a host")
    return p.hostname, p.port or 6379


def through(url: str, host: str, port: int) -> str:
    """The same Redis URL (user, password, database, query kept) with its host:port
    replaced by the proxy's."""
    p = urlsplit(url)
    userinfo = p.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit((p.scheme, netloc, p.path, p.query, p.fragment))


class LatencyProxy:
    """Forward ``listen_host:<random port>`` to ``target`` with delay, jitter and
    partitions. ``start()``/``stop()`` from any thread; both idempotent."""

    def __init__(self, target: tuple[str, int], delay=0.0, jitter=0.0,
                 listen_host: str = HOST, seed: int | None = None, listen_port: int = 0) -> None:
        self.target = (target[0], int(target[1]))
        self.listen_host, self.listen_port = listen_host, int(listen_port)
        self._latency = self._latency_of(delay, jitter)
        self._random = random.Random(seed)
        self.port: int | None = None
        self.bytes = {d: 0 for d in DIRECTIONS}
        self.connections_total = 0
        self._conns: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._open: dict[str, asyncio.Event] = {}
        self._held: set[str] = set()

    @staticmethod
    def _latency_of(delay, jitter) -> Latency:
        if isinstance(delay, Latency):
            return delay
        if isinstance(delay, str) and jitter in (0, 0.0, None, ""):
            return parse_latency(delay)
        latency = Latency(parse_duration(delay), parse_duration(jitter or 0.0))
        _check_jitter(latency.delay, latency.jitter)
        return latency

    # -- public API, called from sync code ------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        return self.listen_host, self.port

    @property
    def latency(self) -> Latency:
        return self._latency

    @property
    def connections_open(self) -> int:
        return len(self._conns)

    def start(self, timeout: float = 10.0) -> "LatencyProxy":
        if self._thread is not None:
            return self
        # select(2), not epoll: epoll_wait counts its timeout in whole milliseconds and Python
        # rounds it up, so every release would come up to 1 ms late (a 5 ms round trip read
        # ~7 ms); select's timeout has microseconds. Its limit of 1024 descriptors is far above
        # the few connections of a broker's clients.
        loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
        ready = threading.Event()
        self._loop = loop
        self._thread = threading.Thread(target=self._run, args=(loop, ready), daemon=True,
                                        name=f"latency-proxy->{self.target[0]}:{self.target[1]}")
        self._thread.start()
        try:
            if not ready.wait(timeout):
                raise RuntimeError("latency proxy: event loop did not start")
            self._call(self._serve(), timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close the listening socket and every connection, end the loop and its thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if loop.is_running():
                self._call(self._shutdown(), timeout)
        except Exception:  # noqa: BLE001 - the loop is ended below whatever happened
            pass
        finally:
            if loop.is_running():
                loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            if not thread.is_alive():
                loop.close()
            self._loop = self._thread = None
            self._server = None

    def set_delay(self, delay, jitter=0.0) -> None:
        """New delay (and jitter) for every chunk read from now on: seconds, or strings
        as ``parse_duration``/``parse_latency`` take them."""
        self._latency = self._latency_of(delay, jitter)

    def blackhole(self, direction: str = "both") -> None:
        """Partition the link (``"both"``, ``"up"``: client -> target, ``"down"``): from
        the return of this call no byte crosses in that direction, none is dropped and
        no connection is reset; they hang until ``heal()``."""
        self._set(self._directions(direction), True)

    def heal(self, direction: str = "both") -> None:
        """End the partition: held bytes go on, in order, and new connections connect."""
        self._set(self._directions(direction), False)

    def _set(self, directions, held: bool) -> None:
        if self._loop is not None and self._loop.is_running():
            self._call(self._set_held(directions, held))
        else:  # not started: the state _serve() starts with
            (self._held.update if held else self._held.difference_update)(directions)

    @property
    def blackholed(self) -> tuple[str, ...]:
        return tuple(d for d in DIRECTIONS if d in self._held)

    def stats(self) -> dict:
        return {"listen": f"{self.listen_host}:{self.port}", **self._latency.to_dict(),
                "blackholed": list(self.blackholed), "connections_total": self.connections_total,
                "connections_open": self.connections_open,
                "bytes_up": self.bytes["up"], "bytes_down": self.bytes["down"]}

    def __enter__(self) -> "LatencyProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- internals: everything below runs in the proxy's loop ------------------------
    @staticmethod
    def _directions(direction: str) -> tuple[str, ...]:
        if direction == "both":
            return DIRECTIONS
        if direction in DIRECTIONS:
            return (direction,)
        raise ValueError(f"direction must be both, up or down, got {direction!r}")

    def _call(self, coro, timeout: float = 10.0):
        if self._loop is None or not self._loop.is_running():
            coro.close()
            raise RuntimeError("latency proxy is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    async def _serve(self) -> None:
        self._open = {d: asyncio.Event() for d in DIRECTIONS}
        for d in DIRECTIONS:
            if d not in self._held:
                self._open[d].set()
        self._server = await asyncio.start_server(self._handle, self.listen_host, self.listen_port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = list(self._conns)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _set_held(self, directions, held: bool) -> None:
        for d in directions:
            if held:
                self._held.add(d)
                self._open[d].clear()
            else:
                self._held.discard(d)
                self._open[d].set()

    def _release_time(self, last: float) -> float:
        lat = self._latency
        jitter = self._random.uniform(-lat.jitter, lat.jitter) if lat.jitter else 0.0
        return max(self._loop.time() + lat.delay + jitter, last)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._conns.add(task)
        self.connections_total += 1
        target_w = None
        pumps: list[asyncio.Future] = []
        try:
            # A partitioned link lets no SYN through: connect onward once it heals.
            for d in DIRECTIONS:
                await self._open[d].wait()
            try:
                target_r, target_w = await asyncio.open_connection(*self.target)
            except OSError:
                return  # the target refuses: the client sees the connection close
            for reader, writer, direction in ((client_r, target_w, "up"), (target_r, client_w, "down")):
                queue: asyncio.Queue = asyncio.Queue(QUEUE_CHUNKS)
                pumps += [asyncio.ensure_future(self._read(reader, queue)),
                          asyncio.ensure_future(self._deliver(queue, writer, direction))]
            # Over when both directions delivered their end of stream, or at the first
            # error (a reset, a write to a closed socket): then the rest has no one to reach.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            # stop() cancels us; ending normally instead spares 3.11's start_server
            # callback, which calls exception() on the finished task and would log a
            # CancelledError traceback for each connection open at shutdown.
            pass
        finally:
            for p in pumps:
                p.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for w in (client_w, target_w):
                if w is not None:
                    w.close()
            self._conns.discard(task)

    async def _read(self, reader: asyncio.StreamReader, queue: asyncio.Queue) -> None:
        """Read one direction and stamp each chunk with its release time. A full queue
        (a slow reader, a partition) stops the reading: TCP's back-pressure."""
        last = 0.0
        while True:
            data = await reader.read(CHUNK)
            last = self._release_time(last)
            await queue.put((last, data))  # b"": the end of the stream, delayed like data
            if not data:
                return

    async def _deliver(self, queue: asyncio.Queue, writer: asyncio.StreamWriter, direction: str) -> None:
        """Write each chunk at its release time, unless the direction is blackholed:
        then hold it (and everything after it) until it heals."""
        loop = asyncio.get_running_loop()
        gate = self._open[direction]
        while True:
            release, data = await queue.get()
            while True:
                wait = release - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if gate.is_set():
                    break  # no await between this check and the write below
                await gate.wait()
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                else:
                    writer.close()
                return
            writer.write(data)
            self.bytes[direction] += len(data)
            await writer.drain()


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 2, no usage block
        self.exit(2, f"latency_proxy: {message}\n")


def main(argv: list[str] | None = None) -> int:
    ap = _OneLineParser(prog="python -m workers.infra.latency_proxy",
                                 description="TCP proxy with delay, jitter and partitions "
                                             "(SIGUSR1: blackhole, SIGUSR2: heal, SIGTERM: stop)")
    ap.add_argument("--target", type=_hostport, required=True, help="HOST:PORT to forward to")
    ap.add_argument("--latency", default="0", help='one-way delay per direction, e.g. 5ms, 0.005s, '
                                                  '5 (ms), 2ms+-1ms (jitter); default 0')
    ap.add_argument("--listen", type=_hostport, default=(HOST, 0),
                    help="HOST:PORT to listen on (default 127.0.0.1 and a free port)")
    args = ap.parse_args(argv)
    try:
        latency = parse_latency(args.latency)
    except ValueError as exc:
        ap.exit(2, f"latency_proxy: --latency: {exc}\n")
    proxy = LatencyProxy(args.target, latency, listen_host=args.listen[0], listen_port=args.listen[1])
    try:
        proxy.start()
    except OSError as exc:
        ap.exit(1, f"latency_proxy: cannot listen on {args.listen[0]}:{args.listen[1]}: {exc.strerror or exc}\n")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGUSR1, lambda *_: proxy.blackhole())
    signal.signal(signal.SIGUSR2, lambda *_: proxy.heal())
    try:
        print(f"listening {proxy.listen_host}:{proxy.port} -> {args.target[0]}:{args.target[1]} "
              f"latency {latency.to_dict()['spec']}", flush=True)
        while not done.wait(0.5):
            pass
    finally:
        proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
