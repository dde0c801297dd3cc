#!/bin/sh
# Start redis-server with compose/redis.conf plus the password from the environment.
# The password goes into a file only the redis user can read (tmpfs /run/redis), not
# onto the command line, so it never shows in `ps` or `docker top`.
#
# Join mode (compose/join.yml sets REDIS_JOIN_DIR): no requirepass; users come from the
# ACL file there (default off, taskrace, worker), and Redis also listens with TLS on 6380
# with the certificate join-init made. The plain port stays on the compose network.
set -eu
if [ -z "${REDIS_PASSWORD:-}" ]; then
    echo "redis-entrypoint: REDIS_PASSWORD is empty; set it in .env" >&2
    exit 2
fi
umask 077
conf="${REDIS_RUN_DIR:-/run/redis}/redis.conf"
mkdir -p "$(dirname "$conf")"
join="${REDIS_JOIN_DIR:-}"
if [ -n "$join" ]; then
    for f in users.acl ca.crt redis.crt redis.key; do
        if ! [ -r "$join/$f" ]; then
            echo "redis-entrypoint: $join/$f is missing or unreadable (join-init makes it)" >&2
            exit 2
        fi
    done
fi
{
    cat /etc/taskrace/redis.conf
    if [ -n "$join" ]; then
        printf 'aclfile %s\n' "$join/users.acl"
        printf 'tls-port 6380\n'
        printf 'tls-cert-file %s\ntls-key-file %s\ntls-ca-cert-file %s\n' \
            "$join/redis.crt" "$join/redis.key" "$join/ca.crt"
        # Workers authenticate with the ACL password; TLS authenticates the server to
        # them and keeps the password and the tasks off the wire.
        printf 'tls-auth-clients no\n'
    else
        printf 'requirepass "%s"\n' "$REDIS_PASSWORD"
    fi
    printf 'maxmemory %s\n' "${REDIS_MAXMEMORY:-256mb}"
} >"$conf"
exec redis-server "$conf" "$@"
