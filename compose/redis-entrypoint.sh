#!/bin/sh
# Start redis-server with compose/redis.conf plus the password from the environment.
# The password goes into a file only the redis user can read (tmpfs /run/redis), not
# onto the command line, so it never shows in `ps` or `docker top`.
set -eu
if [ -z "${REDIS_PASSWORD:-}" ]; then
    echo "redis-entrypoint: REDIS_PASSWORD is empty; set it in .env" >&2
    exit 2
fi
umask 077
conf="${REDIS_RUN_DIR:-/run/redis}/redis.conf"
mkdir -p "$(dirname "$conf")"
{
    cat /etc/taskrace/redis.conf
    printf 'requirepass "%s"\n' "$REDIS_PASSWORD"
    printf 'maxmemory %s\n' "${REDIS_MAXMEMORY:-256mb}"
} >"$conf"
exec redis-server "$conf" "$@"
