"""``taskrace worker``: a Celery worker on another host joins a running lab.

    other host                                     the lab's host
    ----------                                     --------------
    join/worker.env  (handed out by the lab: join-init, ``init_lab`` below)
      TASKRACE_BROKER_URL=rediss://worker:PW@HOST:PORT/0
      TASKRACE_CA_FILE=ca.crt   (beside the env file)
      TASKRACE_QUEUE=taskrace
      TASKRACE_DELIVERY=at-most-once   (the lab's mode: the worker runs it)
          |
    taskrace worker --env-file join/worker.env
      1. read the file, refuse what cannot work (one line, exit 2):
         no file, no CA, redis:// to a non-loopback host, no user / `default`
      2. PING over TLS, verified with the lab's CA   ---TLS--->  Redis TLS port (ACL user
         (WRONGPASS, wrong CA or name, plaintext                 `worker`, default off)
         to a TLS port: one line each)
      3. every right a worker needs (workers.infra.acl.check_worker_rights)
      4. exec `celery worker -n NAME@<hostname> -Q taskrace`  <--- the harness pings the
         (workers.celery_workers.worker_argv: the lab's flags)    shared queue, tells -n
         with TASKRACE_BROKER_URL in its environment only         nodes to add_consumer
         (URL + ?ssl_cert_reqs=required&ssl_ca_certs=<CA>)        its run's queue; the
                                                                  record's `nodes` name
                                                                  this one
    --latency 5ms: the worker reaches Redis through a workers.infra.latency_proxy on
    127.0.0.1 in this process (then the worker is a child, not exec'd): the link this
    host pays. TLS passes through the proxy untouched; the certificate is then checked
    for 127.0.0.1, which the lab's certificates name.

No password is ever taken from the command line (``ps`` shows it to every user): a
``--redis-url`` carrying one is refused; give the URL without it and the password in
TASKRACE_REDIS_PASSWORD. Ctrl-C or SIGTERM stops the worker with Celery's warm shutdown.

``python -m taskrace.lab.join init STATE_DIR JOIN_DIR`` is compose/join.yml's join-init:
what the lab hands out (``init_lab``). Once handed out, ``join/worker.env`` and Redis's
certificate stay as they are while they cover what is asked (a later command without
JOIN_BIND exported asks for 127.0.0.1, which every certificate names): a new address
is refused in one line, and moved to only with JOIN_REISSUE=1, announced.
"""
from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from taskrace.options import UsageError
from workers.celery_workers import POOLS
from workers.delivery import ENV as DELIVERY_ENV, MODES
from workers.infra.redact import redact_url

PASSWORD_ENV = "TASKRACE_REDIS_PASSWORD"
DEFAULT_NAME = "remote"
DEFAULT_QUEUE = "taskrace"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_LOOPBACK = re.compile(r"^(127\.\d+\.\d+\.\d+|::1|localhost)$")


def add_worker_parser(sub) -> None:
    """``taskrace worker ...``, registered by taskrace.cli.build_parser."""
    p = sub.add_parser("worker", help="a worker on this host that joins a running lab (TLS, ACL user)")
    p.add_argument("--env-file", metavar="FILE",
                   help="KEY=VALUE lines the lab hands out: TASKRACE_BROKER_URL (rediss://worker:PW@...), "
                        "TASKRACE_CA_FILE (relative to the file), TASKRACE_QUEUE")
    p.add_argument("--redis-url", metavar="URL",
                   help=f"the broker without a password (it comes from ${PASSWORD_ENV}); "
                        f"overrides the env file's")
    p.add_argument("--ca-file", metavar="FILE", help="the lab's ca.crt (overrides TASKRACE_CA_FILE)")
    p.add_argument("--name", default=DEFAULT_NAME,
                   help=f"node name NAME@<hostname> (default {DEFAULT_NAME})")
    p.add_argument("--concurrency", type=int, default=1, metavar="N", help="pool slots (default 1)")
    p.add_argument("--pool", choices=POOLS, default="prefork", help="worker pool (default prefork)")
    p.add_argument("--latency", metavar="DELAY",
                   help="one-way delay added between this worker and Redis (5ms, 2ms+-1ms)")
    p.add_argument("--loglevel", default="INFO", help="celery's log level (default INFO)")


@dataclass
class Join:
    url: str          # as given, with the password: never printed (shown is redacted)
    ca_file: str | None
    queue: str
    name: str
    delivery: str | None = None  # the lab's mode (TASKRACE_DELIVERY): the worker runs it

    @property
    def shown(self) -> str:
        return redact_url(self.url)


def read_env_file(path: str) -> dict[str, str]:
    """KEY=VALUE lines (blank lines and # comments skipped, one pair of quotes taken off)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise UsageError(f"env file {path} does not exist (the lab writes join/worker.env)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read env file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    values = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        key = key.strip()
        if key.startswith("export "):
            key = key[len("export "):].strip()
        if not eq or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise UsageError(f"env file {path} line {number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def resolve(args, environ=os.environ) -> Join:
    """Where to join, from argv, then the env file, then the environment; one line and
    exit 2 for anything that cannot work, before any connection."""
    if not _NAME.match(args.name or ""):
        raise UsageError(f"bad --name {args.name!r}: letters, digits, '.', '-', '_' (the node is NAME@<hostname>)")
    if args.concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, got {args.concurrency}")
    env_file, base = {}, Path.cwd()
    if args.env_file:
        env_file = read_env_file(args.env_file)
        base = Path(args.env_file).resolve().parent

    def value(key):
        return env_file.get(key) or environ.get(key) or None

    if args.redis_url:
        url = args.redis_url
        try:
            parts = urlsplit(url)
            has_password = parts.password is not None or "password=" in parts.query
        except ValueError:
            raise UsageError(f"bad --redis-url {redact_url(url)!r}") from None
        if has_password:
            raise UsageError("--redis-url carries a password, and a command line is visible to every "
                             f"user (ps): give the URL without it and the password in ${PASSWORD_ENV}")
        password = value(PASSWORD_ENV)
        if not password:
            raise UsageError(f"--redis-url has no password: set ${PASSWORD_ENV} (the worker user's)")
        user = parts.username or ""
        netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.netloc}"
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    else:
        url = value("TASKRACE_BROKER_URL")
        if not url:
            raise UsageError("no broker: give --env-file (the lab's join/worker.env) or --redis-url")
    if args.ca_file:
        ca = Path(args.ca_file)
    elif env_file.get("TASKRACE_CA_FILE"):
        ca = base / env_file["TASKRACE_CA_FILE"]
    elif environ.get("TASKRACE_CA_FILE"):
        ca = Path(environ["TASKRACE_CA_FILE"])
    else:
        ca = None
    delivery = value(DELIVERY_ENV)
    if delivery is not None and delivery not in MODES:
        raise UsageError(f"{DELIVERY_ENV}={delivery} is not a delivery mode; choose from: {', '.join(MODES)}")
    join = Join(url, str(ca) if ca else None, value("TASKRACE_QUEUE") or DEFAULT_QUEUE, args.name, delivery)
    check_url(join)
    return join


def check_url(join: Join) -> None:
    """What the URL alone says: scheme, user, TLS for a non-loopback host, the CA file."""
    try:
        parts = urlsplit(join.url)
        host, _ = parts.hostname, parts.port  # .port: ValueError for a bad one
    except ValueError:
        raise UsageError(f"bad broker URL {join.shown!r}") from None
    if parts.scheme not in ("redis", "rediss") or not host:
        raise UsageError(f"bad broker URL {join.shown!r}: expected rediss://worker:PASSWORD@HOST:PORT/0")
    if parts.username in (None, "", "default"):
        raise UsageError(f"join as the worker user: {join.shown} names {'no user' if not parts.username else 'default'} "
                         f"(Redis's default user, off in join mode); use rediss://worker:PASSWORD@...")
    if parts.scheme == "redis" and not _LOOPBACK.match(host):
        raise UsageError(f"joining over the network needs rediss:// (TLS): {join.shown} would send the "
                         f"password and every task in clear to {host}")
    if parts.scheme == "rediss":
        if not join.ca_file:
            raise UsageError("rediss:// needs the lab's CA: TASKRACE_CA_FILE in the env file, or --ca-file")
        if not os.path.isfile(join.ca_file):
            raise UsageError(f"CA file {join.ca_file} does not exist (the lab hands out ca.crt with the env file)")
        if not os.access(join.ca_file, os.R_OK):
            raise UsageError(f"CA file {join.ca_file} is not readable")


def celery_url(join: Join) -> str:
    """The URL the worker and its checks use: for rediss://, certificates required and
    verified against the lab's CA (kombu, Celery's backend and redis-py all read these)."""
    parts = urlsplit(join.url)
    if parts.scheme != "rediss":
        return join.url
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k not in ("ssl_cert_reqs", "ssl_ca_certs", "ssl_check_hostname")]
    query += [("ssl_cert_reqs", "required"), ("ssl_ca_certs", str(Path(join.ca_file).resolve()))]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query, safe="/"), parts.fragment))


def preflight(url: str, join: Join, timeout: float = 5.0) -> None:
    """PING as the worker user, then every right a worker needs: one line for each way
    it can go wrong."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from workers.infra.acl import check_worker_rights

    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or 6379}"
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                  retry=Retry(NoBackoff(), 0))
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        if "WRONGPASS" in str(exc) or "invalid username-password" in str(exc):
            raise UsageError(f"wrong password (or user disabled) for {join.shown}: is the env file "
                             f"the lab's current one?") from None
        raise UsageError(f"Redis at {where} refused the login: {_one_line(exc, url)}") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        cause = exc.__cause__ or exc.__context__ or exc
        text = f"{exc} {cause}"
        if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
            reason = getattr(cause, "verify_message", None) or "certificate verify failed"
            raise UsageError(f"TLS: {where} presented a certificate that does not verify ({reason}): "
                             f"is {join.ca_file} the lab's ca.crt, and {parts.hostname} among the "
                             f"certificate's names?") from None
        if parts.scheme == "redis" and _speaks_tls(parts.hostname, parts.port or 6379, timeout):
            raise UsageError(f"{where} accepts TLS only and closed the plaintext connection: use "
                             f"rediss:// with the lab's CA") from None
        raise UsageError(f"cannot reach Redis at {where}: {_one_line(exc, url)}") from None
    except redis.ResponseError as exc:
        raise UsageError(f"Redis at {where} refused: {_one_line(exc, url)}") from None
    finally:
        client.close()
    try:
        check_worker_rights(url, timeout)
    except ValueError as exc:
        raise UsageError(f"join refused: {exc}") from None


def _speaks_tls(host: str, port: int, timeout: float) -> bool:
    """Does host:port complete a TLS handshake (any certificate)?"""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            with context.wrap_socket(sock, server_hostname=host):
                return True
    except (OSError, ssl.SSLError):
        return False


def _one_line(exc: BaseException, url: str) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    password = urlsplit(url).password
    return text.replace(password, "***") if password else text


def cmd_worker(args, console) -> int:
    """Check everything, then become the Celery worker (or run it beside a proxy)."""
    from workers.celery_workers import CELERY_ENV_OVERRIDES, worker_argv, worker_env

    join = resolve(args)
    latency = None
    if args.latency is not None:
        from workers.infra.latency_proxy import parse_latency

        try:
            latency = parse_latency(args.latency)
        except ValueError as exc:
            raise UsageError(f"--latency: {exc}") from None
    url = celery_url(join)
    proxy = None
    try:
        if latency is not None:
            from workers.infra.latency_proxy import LatencyProxy, redis_target, through

            proxy = LatencyProxy(redis_target(url), latency).start()
            url = through(url, *proxy.address)
        preflight(url, join)
        node = f"{join.name}@{socket.gethostname()}"
        argv = worker_argv(join.name, join.queue, concurrency=args.concurrency, pool=args.pool,
                           loglevel=args.loglevel)
        env = worker_env(url, {"TASKRACE_QUEUE": join.queue, **({DELIVERY_ENV: join.delivery} if join.delivery
                                                               else {})})
        for key in (PASSWORD_ENV, "REDIS_URL", *CELERY_ENV_OVERRIDES):
            env.pop(key, None)
        via = f" through a {latency.to_dict()['spec']} proxy" if latency is not None else ""
        tls = f", TLS verified with {join.ca_file}" if urlsplit(url).scheme == "rediss" else ""
        mode = f", delivery {join.delivery}" if join.delivery else ""
        print(f"taskrace worker: {node} joins {join.shown}{via}{tls}, queue {join.queue}{mode}; "
              f"worker rights checked", file=sys.stderr, flush=True)
        sys.stdout.flush()
        if proxy is None:
            os.execve(argv[0], argv, env)  # the worker is this process now: signals reach it
        return _run_beside(argv, env)
    finally:
        if proxy is not None:
            proxy.stop()


def _run_beside(argv: list[str], env: dict) -> int:
    """The worker as a child while this process keeps the proxy: Ctrl-C reaches both
    (one process group), SIGTERM is passed on; either way Celery's warm shutdown."""
    from workers.celery_workers import die_with_parent, kill_trees

    proc = subprocess.Popen(argv, env=env, preexec_fn=die_with_parent)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (taskrace.cli turns it into this)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            kill_trees([proc.pid], timeout=5)
            proc.wait(5)
        return 0


# --- join-init: what the lab hands out (compose/join.yml) ---------------------------------
REISSUE_ENV = "JOIN_REISSUE"
ENV_FILE = "worker.env"
_COMPOSE = "docker compose -f docker-compose.yml -f compose/join.yml"


class JoinInitError(ValueError):
    """join-init cannot keep what it handed out and do what is asked: one line, exit 2."""


def worker_env_text(host: str, port: int, password: str, delivery: str) -> str:
    return (f"# taskrace: join the lab at {host}:{port} (TLS, ACL user worker)\n"
            f"TASKRACE_BROKER_URL=rediss://worker:{password}@{host}:{port}/0\n"
            f"TASKRACE_CA_FILE=ca.crt\nTASKRACE_QUEUE={DEFAULT_QUEUE}\n{DELIVERY_ENV}={delivery}\n")


def _handed_out(env_path: Path, ca_path: Path, state_ca: Path, password: str) -> tuple[str, str, str] | None:
    """(host, port, delivery) of the worker.env this lab handed out, or None: no file, or
    one that is not this lab's (another password or CA: a new join-state volume)."""
    try:
        values = read_env_file(str(env_path))
        parts = urlsplit(values.get("TASKRACE_BROKER_URL", ""))
        same = (parts.password == password and ca_path.read_bytes() == state_ca.read_bytes())
        return (parts.hostname, str(parts.port), values.get(DELIVERY_ENV) or "") if same else None
    except (UsageError, OSError, ValueError):
        return None


def init_lab(state_dir, join_dir, bind: str = "127.0.0.1", host: str | None = None, port: int = 6380,
             delivery: str | None = None, reissue: bool = False, owner: tuple[int, int] | None = None) -> list[str]:
    """The lab's side of a join: the worker user's password, the CA and Redis's certificate
    in ``state_dir`` (join-state: Redis reads them), ``worker.env`` and ``ca.crt`` in
    ``join_dir`` (what worker hosts get, ``owner``'s). Returns what to announce.

    Nothing handed out changes silently: an existing ``worker.env`` of this lab and the
    certificate are kept whenever the certificate names every host asked for (JOIN_BIND,
    JOIN_HOST, and redis, localhost, 127.0.0.1), whatever else changed (said in a line);
    a host it does not name: JoinInitError, one line saying how to re-issue. ``reissue``
    (JOIN_REISSUE=1): the certificate for exactly these hosts and ``worker.env`` for
    them, announced. The env file carries the lab's delivery mode (TASKRACE_DELIVERY;
    empty: Celery's defaults, at-most-once), which ``taskrace worker`` then runs."""
    from workers.delivery import resolve
    from workers.infra import tls

    state, out = Path(state_dir), Path(join_dir)
    host = host or bind
    try:
        mode = resolve(delivery or None).name
    except ValueError as exc:
        raise JoinInitError(f"join-init: {DELIVERY_ENV}: {exc}") from None
    try:
        hosts = tls.parse_hosts(",".join(["redis", "localhost", "127.0.0.1", bind, host]))
    except tls.TLSError as exc:
        raise JoinInitError(f"join-init: JOIN_BIND/JOIN_HOST: {exc}") from None
    if not 0 < int(port) < 65536:
        raise JoinInitError(f"join-init: JOIN_PORT={port} is not a port")
    secret = state / "worker.password"
    if not secret.is_file() or not secret.read_text().strip():
        tls.write_private(secret, (secrets.token_hex(24) + "\n").encode(), 0o600)
    password = secret.read_text().strip()
    env_path, ca_path = out / ENV_FILE, out / tls.CA_CERT
    handed = _handed_out(env_path, ca_path, state / tls.CA_CERT, password)
    names = tls.server_names(state)
    missing = tls.wanted_sans(hosts) - names if names is not None else set()
    if missing and not reissue:
        sent = f"join/worker.env sends workers to {handed[0]}:{handed[1]}, and " if handed else ""
        raise JoinInitError(
            f"join-init: {sent}Redis's certificate names {', '.join(tls.hosts_of(names))}, not "
            f"{', '.join(tls.hosts_of(missing))} (JOIN_BIND/JOIN_HOST); both kept. Set JOIN_BIND and JOIN_HOST as "
            f"before (export them once), or move the lab to the new address: {REISSUE_ENV}=1 {_COMPOSE} up -d, "
            f"then {_COMPOSE} restart redis, and hand out the new join/worker.env")
    had_cert = (state / tls.SERVER_CERT).exists()
    if handed is not None and not reissue:  # a certificate made anew still names what is handed out
        hosts = list(dict.fromkeys([*hosts, handed[0]]))
    try:
        written = tls.ensure(state, hosts, keep_covering=not reissue)
    except tls.TLSError as exc:
        raise JoinInitError(f"join-init: {exc}") from None
    said = [f"join-init: wrote {path.name}: {what}" for path, what in written]
    if had_cert and any(path.name == tls.SERVER_CERT for path, _ in written):
        said.append(f"join-init: Redis serves the new certificate once restarted: {_COMPOSE} restart redis")
    try:
        out.mkdir(exist_ok=True)
        if not ca_path.exists() or ca_path.read_bytes() != (state / tls.CA_CERT).read_bytes():
            tls.write_private(ca_path, (state / tls.CA_CERT).read_bytes(), 0o644)
            _own(ca_path, owner)
        if handed is not None and not reissue:
            at = f"{handed[0]}:{handed[1]}"
            if handed != (host, str(port), mode):
                said.append(f"join-init: kept ./join/{ENV_FILE} as handed out: workers join at {at}, delivery "
                            f"{handed[2] or '(none)'}; asked now: {host}:{port}, delivery {mode} ({REISSUE_ENV}=1 "
                            f"rewrites it for that)")
        else:
            text, at = worker_env_text(host, port, password, mode), f"{host}:{port}"
            old = env_path.read_text() if env_path.is_file() else None
            if old != text:
                tls.write_private(env_path, text.encode(), 0o600)
                _own(env_path, owner)
                why = ("re-issued" if handed is not None else "the one there was not this lab's (another "
                       "password or CA): hand the new one out" if old is not None else "new")
                said.append(f"join-init: wrote ./join/{ENV_FILE} ({why}): workers join at {at}, delivery {mode}")
    except OSError as exc:
        raise JoinInitError(f"join-init: cannot write {out}: {exc.strerror or exc}") from None
    said.append(f"join-init: ./join/{ENV_FILE} and ./join/{tls.CA_CERT} ready for worker hosts at {at}")
    return said


def _own(path: Path, owner: tuple[int, int] | None) -> None:
    if owner is not None:
        os.chown(path, *owner)


def main(argv: list[str] | None = None, environ=os.environ) -> int:
    """``python -m taskrace.lab.join init STATE_DIR JOIN_DIR``, the settings from the
    environment as compose/join.yml passes them."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] != "init":
        print("usage: python -m taskrace.lab.join init STATE_DIR JOIN_DIR   (env: JOIN_BIND, JOIN_HOST, "
              f"JOIN_PORT, {DELIVERY_ENV}, {REISSUE_ENV}, TASKRACE_UID, TASKRACE_GID)", file=sys.stderr)
        return 2
    numbers = {}
    for name, default in (("JOIN_PORT", "6380"), ("TASKRACE_UID", ""), ("TASKRACE_GID", "")):
        text = (environ.get(name) or default).strip()
        if text and not text.isdigit():
            print(f"join-init: {name}={text} is not a number", file=sys.stderr)
            return 2
        numbers[name] = int(text) if text else None
    owner = (numbers["TASKRACE_UID"], numbers["TASKRACE_GID"]) if None not in (
        numbers["TASKRACE_UID"], numbers["TASKRACE_GID"]) else None
    try:
        said = init_lab(args[1], args[2], environ.get("JOIN_BIND") or "127.0.0.1", environ.get("JOIN_HOST") or None,
                        numbers["JOIN_PORT"], environ.get(DELIVERY_ENV) or None,
                        (environ.get(REISSUE_ENV) or "").strip().lower() in ("1", "true", "yes", "on"), owner)
    except JoinInitError as exc:
        print(exc, file=sys.stderr)
        return 2
    print("\n".join(said), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
