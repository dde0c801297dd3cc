"""``--live [PORT]`` on run, compare and faults, and ``taskrace live SOURCE``: a replay of
an event log written by ``--events FILE`` (at real speed or faster), or the lab's run
followed through Redis (``taskrace live redis://redis:6379/0``)."""
from __future__ import annotations

import argparse
import threading
import time

from rich.console import Console

from taskrace.options import UsageError, from_env, port_number
from workers.infra.redact import redact_url


def speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"a speed is 0 (all at once) or more, got {text}")
    return value


def add_live_parser(sub) -> None:
    p = sub.add_parser("live", help="the live view of a recorded run (--events FILE) or of the lab's run",
                       description="Serve the live view of an event log written by --events FILE, replayed "
                                   "at --speed, or of a run that relays its events through Redis "
                                   "(--events redis://HOST:PORT/DB; the lab's live profile does this).")
    p.add_argument("source", metavar="FILE|redis://HOST:PORT/DB", type=from_env,
                   help="an event log, a Redis URL, or env:NAME: the URL in the environment variable NAME "
                        "(a password stays out of ps; the lab's live service reads env:TASKRACE_BROKER_URL)")
    p.add_argument("--speed", type=speed, default=1.0,
                   help="replay speed: 1 real time (default), 10 ten times faster, 0 all at once")
    p.add_argument("--port", type=port_number, default=0, help="port (default: any free one, printed)")
    p.add_argument("--bind", default="127.0.0.1", metavar="ADDR",
                   help="the address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--once", action="store_true",
                   help="stop when the replay has ended and the pages have it (default: serve until Ctrl-C)")


def cmd_live(args, console: Console) -> int:
    from taskrace import live
    from taskrace.eventlog import BadEventLog, read_log
    from taskrace.live.relay import follow, is_redis_url
    from taskrace.live.server import LiveServer
    from taskrace.live.state import LiveState

    live.check_installed()
    following = is_redis_url(args.source)
    if following and args.speed != 1.0:
        raise UsageError("--speed replays a file; a run followed through Redis goes at its own speed")
    if following:
        from taskrace.live.relay import _connect

        try:
            _connect(args.source).close()
        except ConnectionError as exc:
            raise UsageError(str(exc)) from None
    else:
        try:
            recorded = read_log(args.source)
        except BadEventLog as exc:
            raise UsageError(str(exc)) from None
        if not recorded:
            raise UsageError(f"{args.source} holds no events (write one with --events FILE)")
    state = LiveState()
    source = redact_url(args.source) if following else args.source  # never a password on screen or page
    server = LiveServer(state, args.bind, args.port, title=f"taskrace live: {source}")
    server.start()
    stop = threading.Event()
    if following:
        feed = threading.Thread(target=_follow, args=(follow, args.source, state, stop, console), daemon=True)
        what = f"following {source}"
    else:
        feed = threading.Thread(target=replay, args=(recorded, state.add, args.speed, stop), daemon=True)
        what = f"replaying {len(recorded)} events" + (f" at {args.speed:g}x" if args.speed else " at once")
    console.print(f"live view: {server.url}  ({what}; read-only; Ctrl-C stops it)", markup=False, highlight=False,
                  soft_wrap=True)
    feed.start()
    try:
        while feed.is_alive() and not (args.once and state.finished):
            feed.join(0.2)
        if args.once:
            stop.set()
            server.stop()
            return 0
        while True:  # the replay is over: the page stays until Ctrl-C
            time.sleep(1)
    except KeyboardInterrupt:  # Ctrl-C (or docker stop's SIGTERM) is how a live view ends
        console.print("live view stopped", markup=False, highlight=False)
        return 0
    finally:
        stop.set()
        server.stop(drain=0.5)


def _follow(follow, url, state, stop, console) -> None:
    try:
        follow(url, state.add, stop)
    except ConnectionError as exc:
        console.print(f"taskrace live: {exc}", markup=False, highlight=False)


def replay(recorded: list, add, speed: float, stop: threading.Event) -> None:
    """Hand the events to ``add`` spaced as they happened, ``speed`` times faster."""
    start, first = time.monotonic(), recorded[0].t
    for event in recorded:
        if speed:
            due = start + (event.t - first) / speed
            while not stop.is_set() and time.monotonic() < due:
                stop.wait(min(0.2, due - time.monotonic()))
        if stop.is_set():
            return
        add(event)
