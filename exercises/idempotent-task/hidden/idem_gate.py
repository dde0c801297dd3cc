"""A gate between a delivery of the student's transfer and Redis: it stops the delivery
right after one of its commands, so a check can crash it there, or pause it there while
a second delivery runs. Every point between two commands is tried, one per run: what a
SIGKILL or a paused worker could do at that moment, done on purpose.

    delivery (a forked child) --> gate (threads of the check) --> Redis
                                     forwards one command at a time and waits for its
                                     reply; at command k the reply is held:
                                       crash: the child is SIGKILLed (it never learns
                                              that Redis ran command k)
                                       pause: another delivery runs meanwhile, then the
                                              reply goes on and the child continues

It speaks RESP (Redis's protocol), so any client goes through it; it only counts and
holds, it never changes a byte.
"""
from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit, urlunsplit


class Gate:
    """Forward Redis commands one at a time; hold the reply of the ``stop_at``-th."""

    def __init__(self, redis_url: str, stop_at: int) -> None:
        parts = urlsplit(redis_url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.stop_at = stop_at
        self.commands: list[str] = []  # the names, in the order they reached Redis
        self.reached = threading.Event()  # command stop_at ran; its reply is held
        self.release = threading.Event()  # let the held reply go on
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        port = self._listener.getsockname()[1]
        netloc = parts.netloc.rsplit("@", 1)
        netloc[-1] = f"127.0.0.1:{port}"
        self.url = urlunsplit(parts._replace(netloc="@".join(netloc)))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def stopped_at(self) -> str:
        """The command the delivery was stopped after, e.g. "#3 EXEC"."""
        name = self.commands[self.stop_at - 1] if len(self.commands) >= self.stop_at else "?"
        return f"#{self.stop_at} {name}"

    def close(self) -> None:
        """Drop every connection (a dead process's sockets close, and Redis discards a
        MULTI it never got the EXEC of) and stop listening."""
        self.release.set()
        with self._lock:
            sockets, self._sockets = self._sockets + [self._listener], []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._relay, args=(client, upstream), daemon=True).start()

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        asked, answered = _Stream(client), _Stream(upstream)
        try:
            while True:
                command = asked.take(_command_end)
                if command is None:
                    return
                with self._lock:
                    self.commands.append(_name(command))
                    number = len(self.commands)
                upstream.sendall(command)
                reply = answered.take(_reply_end)
                if reply is None:
                    return
                if number == self.stop_at:
                    self.reached.set()
                    self.release.wait()
                client.sendall(reply)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()


class _Stream:
    """Bytes from a socket, taken one complete RESP message at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, b""

    def take(self, end_of) -> bytes | None:
        while True:
            end = end_of(self.buf, 0)
            if end is not None:
                message, self.buf = self.buf[:end], self.buf[end:]
                return message
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk


def _line(buf: bytes, pos: int) -> tuple[bytes, int] | None:
    end = buf.find(b"\r\n", pos)
    return None if end < 0 else (buf[pos:end], end + 2)


def _command_end(buf: bytes, pos: int) -> int | None:
    """Where the command starting at ``pos`` ends: an array of bulk strings (what
    clients send), or an inline command (one line)."""
    if buf[pos:pos + 1] != b"*":
        line = _line(buf, pos)
        return None if line is None else line[1]
    return _reply_end(buf, pos)


AGGREGATES = {b"*": 1, b"~": 1, b">": 1, b"%": 2, b"|": 2}  # RESP2/3: elements per count
BULKS = (b"$", b"!", b"=")


def _reply_end(buf: bytes, pos: int) -> int | None:
    """Where the RESP message starting at ``pos`` ends (None: not all here yet)."""
    line = _line(buf, pos)
    if line is None:
        return None
    head, after = line
    kind, rest = head[:1], head[1:]
    if kind in BULKS:
        size = int(rest)
        if size < 0:
            return after
        return after + size + 2 if len(buf) >= after + size + 2 else None
    if kind in AGGREGATES:
        count = int(rest)
        for _ in range(max(count, 0) * AGGREGATES[kind]):
            after = _reply_end(buf, after)
            if after is None:
                return None
        if kind == b"|":  # attributes come before the reply they describe
            return _reply_end(buf, after)
        return after
    return after  # + - : _ , # ( : one line


def _name(command: bytes) -> str:
    """A command's name: the first bulk string of the array (or the inline word)."""
    if command[:1] != b"*":
        return command.split()[0].decode(errors="replace").upper() if command.split() else "?"
    first = _line(command, 0)
    size = _line(command, first[1]) if first else None
    if not size:
        return "?"
    start = size[1]
    length = int(size[0][1:])
    return command[start:start + length].decode(errors="replace").upper()
