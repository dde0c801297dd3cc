"""Redis ACL users for a lab that workers join from other hosts.

In join mode Redis has three users::

    default   off: a connection that does not name a user gets nothing
    taskrace  the lab password, every right: the harness and the lab's own workers
    worker    what a Celery worker of this project does, and nothing else: the password
              handed to worker hosts (join/worker.env)

What a worker does was found by running real workers as an ACL user against Debian's
redis-server 7.0, with ``taskrace run`` of every scenario (every bank strategy and mode,
chunks, acks-late) on the celery tier with ``--external-workers``, recording each of
the worker user's commands (MONITOR) and then, with the rules below, reading ``ACL LOG``
until it stayed empty::

    keys      taskrace*             the queues (taskrace, taskrace.<run>, with kombu's
                                    priority suffixes) and shared state (taskrace:<run>:*)
              _kombu.binding*       kombu's exchange tables (SADD/SMEMBERS/SREM) and their
                                    deadlines (_kombu.binding_deadlines, Lua: TIME, ZADD,
                                    ZRANGEBYSCORE, EXISTS, DEL, ZREM)
              unacked*              unacked, unacked_index, unacked_mutex (kombu's
                                    ack emulation and visibility restore)
              celery-task-meta-*    results (SETEX, GET) ...
              celery-taskset-meta-* ... a chord's join (the Redis result backend's chord
                                    script, Lua: .j the header's results ZADD/ZCOUNT,
                                    .d done members SISMEMBER/SADD, .s size and .t diff
                                    GET, .c the body's dispatch claim SET NX/DEL, EXPIRE
                                    of each; then ZRANGE .j and DEL .s on a ChordError) ...
              *.celery.pidbox*      ... a node's own control queue (LLEN/DEL when it
                                    stops) and the replies to `celery control` (LPUSH
                                    <uuid>.reply.celery.pidbox)
    channels  celery-task-meta-*    PUBLISH of each result
              /0.celery.pidbox      PSUBSCRIBE: broadcast control (ping, add_consumer);
                                    an ACL compares a pattern subscription literally, so
                                    this is database 0 (the lab's)
              /0.celeryev/*         PUBLISH of Celery's events (the celeryev fanout,
                                    kombu's channel /<db>.celeryev/<routing key>):
                                    task.multi (worker_send_task_events, -E, and
                                    task_send_sent_event for a chord's body sent by a
                                    worker), worker.online/offline/heartbeat (a worker
                                    run with heartbeats). Pub/sub ignores the database
                                    number, so kombu puts it in the name: database 0
    commands  see WORKER_COMMANDS

Found the same way for a chord (``--reduce chord``) and for Celery's task events (a
listener on the harness, workers with ``-E``, ``TASKRACE_TASK_EVENTS=1`` and one with
heartbeats on). Not granted: what gossip needs (a ``celeryev.<uuid>`` queue and a
PSUBSCRIBE on the events): this project's workers run ``--without-gossip``.

Not granted, so refused (NOPERM): CONFIG, FLUSHALL, FLUSHDB, KEYS, SCAN, SHUTDOWN,
DEBUG, ACL, CLIENT (KILL, LIST), MONITOR, FUNCTION, SCRIPT FLUSH/KILL, and any key or
channel outside the patterns. Scripts (EVAL/EVALSHA) run with the caller's rights, so
they reach nothing more.

``python -m workers.infra.acl OUT_FILE`` writes such an aclfile (0640) from REDIS_PASSWORD (the
taskrace user's) and WORKER_PASSWORD; passwords are stored as SHA-256 (``#<hex>``), never
in clear. ``check_worker_rights(url)`` probes, as the URL's user, every right a worker
needs (harmless commands on throwaway keys) and names the first one missing.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import sys
from pathlib import Path

ADMIN_USER, WORKER_USER = "taskrace", "worker"
WORKER_KEYS = ("taskrace*", "_kombu.binding*", "unacked*", "celery-task-meta-*", "celery-taskset-meta-*",
               "*.celery.pidbox*")
WORKER_CHANNELS = ("celery-task-meta-*", "/0.celery.pidbox", "/0.celeryev/*")
WORKER_COMMANDS = (
    # connecting
    "hello", "auth", "ping", "select", "client|setname",
    # queues: take (BRPOP), put back / reply (LPUSH, RPUSH), size, remove, expiry
    "brpop", "blpop", "lpush", "rpush", "llen", "del", "exists", "pexpire",
    # exchange tables (sets) and their deadlines (sorted set)
    "sadd", "smembers", "srem", "zadd", "zrem", "zrange", "zrangebyscore",
    # unacked messages (hash), results and shared state (strings)
    "hset", "hget", "hdel", "get", "set", "setex", "mget", "incr", "incrby",
    # a chord's join (the result backend's chord script): done members, results counted, expiry
    "sismember", "zcount", "expire",
    # transactions (kombu's pipelines, WATCH/MULTI/EXEC of the optimistic bank)
    "multi", "exec", "discard", "watch", "unwatch",
    # scripts (the atomic bank, redis-py's lock, kombu's binding scripts) and their clock
    "eval", "evalsha", "script|load", "script|exists", "time",
    # results published, control broadcast received
    "publish", "psubscribe", "punsubscribe",
)


def worker_rules() -> str:
    """The worker user's rules, after ``user worker on >PASSWORD``."""
    return " ".join(["resetkeys", *(f"~{k}" for k in WORKER_KEYS),
                     "resetchannels", *(f"&{c}" for c in WORKER_CHANNELS),
                     "-@all", *(f"+{c}" for c in WORKER_COMMANDS)])


def password_hash(password: str) -> str:
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def _check_password(name: str, password: str | None) -> str:
    if not password:
        raise ValueError(f"{name} is empty: set it in the environment")
    if any(c.isspace() for c in password):
        raise ValueError(f"{name} contains whitespace, which an aclfile cannot hold")
    return password


def aclfile_text(admin_password: str, worker_password: str) -> str:
    """The three users: default off, taskrace (everything), worker (what a worker needs)."""
    admin = password_hash(_check_password("REDIS_PASSWORD", admin_password))
    worker = password_hash(_check_password("WORKER_PASSWORD", worker_password))
    return (f"user default off resetpass -@all\n"
            f"user {ADMIN_USER} on {admin} ~* &* +@all\n"
            f"user {WORKER_USER} on {worker} {worker_rules()}\n")


def write_aclfile(path, admin_password: str, worker_password: str, mode: int = 0o640) -> Path:
    """Write the aclfile atomically, created with ``mode`` whatever the umask."""
    from workers.infra.tls import write_private

    path = Path(path)
    write_private(path, aclfile_text(admin_password, worker_password).encode(), mode)
    return path


# checking a user's rights ------------------------------------------------------------------
def _probes(db: int):
    """(command, where, why a worker needs it, call(r, t)) in the order a worker meets
    them; ``t`` is a random token, so every key written is a throwaway one, and keys a
    worker shares with others (unacked, unacked_index, unacked_mutex) are only read or
    written with a random member and removed again."""
    q = "taskrace.rightscheck.{t}"
    state = "taskrace:rightscheck:{t}"
    binding = "_kombu.binding.taskrace.rightscheck.{t}"
    meta = "celery-task-meta-rightscheck-{t}"
    reply = "{t}.reply.celery.pidbox"
    pidbox = f"/{db}.celery.pidbox"
    chord = "celery-taskset-meta-rightscheck-{t}"
    # an empty message: kombu's receivers skip it (Flower, the harness's task events)
    event = f"/{db}.celeryev/rightscheck.{{t}}"

    def k(pattern, t):
        return pattern.format(t=t)

    return [
        ("PING", "the server", "answer the connection check", lambda r, t: r.ping()),
        ("SADD", "_kombu.binding*", "declare its queues", lambda r, t: r.sadd(k(binding, t), "x")),
        ("SMEMBERS", "_kombu.binding*", "route replies", lambda r, t: r.smembers(k(binding, t))),
        ("SREM", "_kombu.binding*", "unbind its control queue", lambda r, t: r.srem(k(binding, t), "x")),
        ("EXISTS", "_kombu.binding*", "sweep expired bindings", lambda r, t: r.exists(k(binding, t))),
        ("ZRANGEBYSCORE", "_kombu.binding*", "sweep expired bindings",
         lambda r, t: r.zrangebyscore("_kombu.binding_deadlines", "-inf", "-inf")),
        ("LPUSH", "taskrace*", "put a message back on a queue", lambda r, t: r.lpush(k(q, t), "x")),
        ("RPUSH", "taskrace*", "put a message back on a queue", lambda r, t: r.rpush(k(q, t), "x")),
        ("LLEN", "taskrace*", "size its queues", lambda r, t: r.llen(k(q, t))),
        ("BRPOP", "taskrace*", "take tasks from the queues", lambda r, t: r.brpop([k(q, t)], timeout=0.01)),
        ("PEXPIRE", "taskrace*", "expire queues", lambda r, t: r.pexpire(k(q, t), 60_000)),
        ("DEL", "taskrace*", "delete a queue", lambda r, t: r.delete(k(q, t))),
        ("HSET", "unacked*", "hold a message until it is acknowledged",
         lambda r, t: r.hset("unacked", f"rightscheck-{t}", "x")),
        ("HGET", "unacked*", "restore an unacknowledged message",
         lambda r, t: r.hget("unacked", f"rightscheck-{t}")),
        ("HDEL", "unacked*", "acknowledge a message", lambda r, t: r.hdel("unacked", f"rightscheck-{t}")),
        ("ZADD", "unacked*", "index unacknowledged messages",
         lambda r, t: r.zadd("unacked_index", {f"rightscheck-{t}": 0})),
        ("ZRANGE", "unacked*", "find messages to restore",
         lambda r, t: r.zrange("unacked_index", 0, 0)),
        ("ZREM", "unacked*", "acknowledge a message", lambda r, t: r.zrem("unacked_index", f"rightscheck-{t}")),
        ("SET", "unacked*", "take the restore mutex",
         lambda r, t: r.set("unacked_mutex", f"rightscheck-{t}", nx=True, px=1)),
        ("SETEX", "celery-task-meta-*", "store a result", lambda r, t: r.execute_command("SETEX", k(meta, t), 5, "{}")),
        ("GET", "celery-task-meta-*", "read a result", lambda r, t: r.get(k(meta, t))),
        ("PUBLISH", "celery-task-meta-*", "announce a result", lambda r, t: r.publish(k(meta, t), "{}")),
        ("SISMEMBER", "celery-taskset-meta-*", "join a chord's results (the result backend's chord script)",
         lambda r, t: r.sismember(k(chord, t) + ".d", "x")),
        ("ZCOUNT", "celery-taskset-meta-*", "count a chord's results",
         lambda r, t: r.zcount(k(chord, t) + ".j", "-inf", "+inf")),
        ("EXPIRE", "celery-taskset-meta-*", "expire a chord's keys", lambda r, t: r.expire(k(chord, t) + ".j", 60)),
        ("LPUSH", "*.reply.celery.pidbox", "answer `celery control` (ping, add_consumer)",
         lambda r, t: (r.lpush(k(reply, t), "x"), r.delete(k(reply, t)))),
        ("PSUBSCRIBE", pidbox, "hear `celery control` broadcasts", _psubscribe(pidbox)),
        ("PUBLISH", f"/{db}.celeryev/*", "send Celery's task events and heartbeats",
         lambda r, t: r.publish(k(event, t), "")),
        ("SET", "taskrace:*", "write shared state", lambda r, t: r.set(k(state, t), 0, px=60_000)),
        ("MGET", "taskrace:*", "read shared state", lambda r, t: r.mget([k(state, t)])),
        ("INCRBY", "taskrace:*", "count in shared state", lambda r, t: r.incrby(k(state, t), 1)),
        ("INCR", "taskrace:*", "count in shared state", lambda r, t: r.incr(k(state, t))),
        ("WATCH", "taskrace:*", "update shared state optimistically", _transaction(state)),
        ("EVAL", "taskrace:*", "update shared state atomically (Lua)",
         lambda r, t: r.eval("return redis.call('GET', KEYS[1])", 1, k(state, t))),
        ("EVALSHA", "taskrace:*", "run a cached script (locks, kombu's bindings)", _evalsha(state)),
        ("TIME", "Lua scripts", "timestamp binding deadlines (Lua)",
         lambda r, t: r.eval("return redis.call('TIME')", 0)),
        ("BLPOP", "taskrace:*", "wait on a shared channel",
         lambda r, t: (r.blpop([k(state, t) + ":chan"], timeout=0.01), r.delete(k(state, t)))),
    ]


_THROWAWAY = ("taskrace.rightscheck.{t}", "taskrace:rightscheck:{t}", "_kombu.binding.taskrace.rightscheck.{t}",
              "celery-task-meta-rightscheck-{t}",
              "{t}.reply.celery.pidbox")


def _psubscribe(channel):
    def probe(r, t):
        pubsub = r.pubsub()
        try:
            pubsub.psubscribe(channel)
            # the answer (or the NOPERM) comes back on the subscription connection
            pubsub.get_message(timeout=1.0)
            pubsub.punsubscribe(channel)
        finally:
            pubsub.close()
    return probe


def _transaction(pattern):
    def probe(r, t):
        key = pattern.format(t=t)
        with r.pipeline() as pipe:
            pipe.watch(key)
            pipe.multi()
            pipe.incr(key)
            pipe.execute()
    return probe


def _evalsha(pattern):
    def probe(r, t):
        sha = r.script_load("return redis.call('GET', KEYS[1])")
        r.evalsha(sha, 1, pattern.format(t=t))
    return probe


def check_worker_rights(url: str, timeout: float = 5.0) -> None:
    """Connect as the URL's user and run every probe; ValueError (one line) naming the
    first right missing. Connection and authentication errors propagate (redis-py's)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    r = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                             retry=Retry(NoBackoff(), 0))
    user = r.connection_pool.connection_kwargs.get("username") or "default"
    db = int(r.connection_pool.connection_kwargs.get("db") or 0)
    token = secrets.token_hex(6)
    try:
        for command, where, why, call in _probes(db):
            try:
                call(r, token)
            except redis.exceptions.ResponseError as exc:  # NoPermissionError is one
                text = str(exc)
                if not (isinstance(exc, redis.exceptions.NoPermissionError) or text.startswith("NOPERM")
                        or "user executing the script can't" in text):  # a denial inside Lua
                    raise
                what = "key" if "key" in text else "channel" if "channel" in text else "command"
                raise ValueError(f"user {user!r} may not run {command} on {where!r} (no {what} "
                                 f"right): a worker needs it to {why}") from None
    finally:
        try:  # throwaway keys a failed probe may have left (the others expire on their own)
            r.delete(*(p.format(t=token) for p in _THROWAWAY))
        except redis.exceptions.RedisError:
            pass
        r.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m workers.infra.acl OUT_FILE   (env: REDIS_PASSWORD, WORKER_PASSWORD)",
              file=sys.stderr)
        return 2
    out = Path(args[0])
    try:
        write_aclfile(out, os.environ.get("REDIS_PASSWORD", ""), os.environ.get("WORKER_PASSWORD", ""))
    except ValueError as exc:
        print(f"workers.infra.acl: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"workers.infra.acl: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}: users default (off), {ADMIN_USER} (all rights), {WORKER_USER} (a worker's rights)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
