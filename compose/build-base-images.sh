#!/usr/bin/env bash
# Build the lab's base images from Debian packages, with no container registry.
#
#   compose/build-base-images.sh [--force] [--no-upgrade] [--python314]
#
# Makes two local images from one debootstrap root filesystem (Debian bookworm, minbase,
# with python3, python3-venv and redis-server):
#   taskrace/python-base:bookworm   stands in for python:3.11-slim   (PYTHON_IMAGE)
#   taskrace/redis-base:bookworm    stands in for redis:7            (REDIS_IMAGE)
# The packages come from the Debian mirror that this host's apt already uses (read from
# /etc/apt/sources.list*, or $DEBIAN_MIRROR), so the script needs what apt needs and
# nothing more. The root filesystem is cached as a tarball in compose/.cache/; an image
# that exists is kept unless --force. Needs root (debootstrap, chroot) and a Docker engine.
#
# --python314 makes one image more, and only it: taskrace/python-base:sid-py314 (Debian
# sid, minbase, with python3.14, python3.14-venv and redis-server; `python3` is 3.14),
# the base of the opt-in Python 3.14 lab image (compose/build-py314-image.sh), where the
# interpreters tier runs. Same mirror (sid is served by every Debian mirror), same cache.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SUITE="${DEBIAN_SUITE:-bookworm}"
PYTHON_BASE="${PYTHON_BASE_IMAGE:-taskrace/python-base:$SUITE}"
REDIS_BASE="${REDIS_BASE_IMAGE:-taskrace/redis-base:$SUITE}"
PACKAGES="python3,python3-venv,redis-server,ca-certificates"
CACHE="$HERE/.cache/base-$SUITE"
TARBALL="$CACHE/rootfs.tar"
FORCE=0
UPGRADE=1
PY314=0

say() { printf '[build-base-images] %s\n' "$*" >&2; }
die() { printf '[build-base-images] ERROR: %s\n' "$*" >&2; exit 1; }

for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    --no-upgrade) UPGRADE=0 ;;
    --python314) PY314=1 ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $arg (use --force, --no-upgrade, --python314)" ;;
  esac
done

if [ "$PY314" = 1 ]; then
  # Only the 3.14 base: sid has no -updates or -security suite, and no redis image here.
  HOST_SUITE="$SUITE"
  SUITE="${DEBIAN_PY314_SUITE:-sid}"
  PYTHON_BASE="${PY314_BASE_IMAGE:-taskrace/python-base:sid-py314}"
  REDIS_BASE=""
  PACKAGES="python3.14,python3.14-venv,redis-server,ca-certificates"
  CACHE="$HERE/.cache/base-$SUITE-py314"
  TARBALL="$CACHE/rootfs.tar"
  UPGRADE=0
fi

command -v docker >/dev/null || die "docker CLI not found"
docker info >/dev/null 2>&1 || die "no Docker engine answers (is dockerd running, may you use its socket?)"

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
if [ "$FORCE" = 0 ] && have_image "$PYTHON_BASE" && { [ -z "$REDIS_BASE" ] || have_image "$REDIS_BASE"; }; then
  say "$PYTHON_BASE${REDIS_BASE:+ and $REDIS_BASE} exist; nothing to do (--force rebuilds)"
  exit 0
fi

# --- which mirror: the one apt on this host uses for $SUITE ----------------------------
# Prints "URI KEYRING" for the first source that serves SUITE (or SUITE-security with
# $2=security) with the main component, from one-line .list and deb822 .sources files.
apt_source() {
  local want="$1"
  {
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [ -f "$f" ] || continue
      # deb [signed-by=K] URI SUITE COMPONENTS...
      awk -v want="$want" '
        $1 == "deb" {
          key = ""; i = 2
          if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) { if ($i ~ /signed-by=/) key = $i; i++ }
                            if ($i ~ /signed-by=/) key = $i; i++ }
          gsub(/.*signed-by=|\]/, "", key)
          uri = $i; suite = $(i + 1)
          if (suite != want) next
          for (j = i + 2; j <= NF; j++) if ($j == "main") { print uri, key; exit }
        }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -f "$f" ] || continue
      # deb822 stanzas separated by blank lines
      awk -v want="$want" '
        function flush() {
          if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " want " ") && (" " comps " ") ~ / main /) {
            split(uris, u, " "); print u[1], key; found = 1
          }
          types = uris = suites = comps = key = ""
        }
        /^[[:space:]]*#/ { next }
        /^[[:space:]]*$/ { flush(); if (found) exit; next }
        { line = $0; sub(/^[^:]*:[[:space:]]*/, "", line); field = tolower($1) }
        field == "types:" { types = line }
        field == "uris:" { uris = line }
        field == "suites:" { suites = line }
        field == "components:" { comps = line }
        field == "signed-by:" { key = line }
        END { if (!found) flush() }' "$f"
    done
  } | head -n 1
}

read -r MIRROR KEYRING <<<"$(apt_source "$SUITE")" || true
if [ "$PY314" = 1 ] && [ -z "${MIRROR:-}" ]; then
  # The host's apt knows its own suite only; the same mirror serves sid.
  read -r MIRROR KEYRING <<<"$(apt_source "$HOST_SUITE")" || true
fi
MIRROR="${DEBIAN_MIRROR:-${MIRROR:-}}"
[ -n "$MIRROR" ] || die "no apt source for '$SUITE main' in /etc/apt/sources.list*; set DEBIAN_MIRROR=<uri>"
read -r SECURITY SECURITY_KEYRING <<<"$(apt_source "$SUITE-security")" || true
SECURITY="${DEBIAN_SECURITY_MIRROR:-${SECURITY:-}}"
if [ "$PY314" = 1 ]; then SECURITY=""; fi
KEYRING="${KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}"
[ -f "$KEYRING" ] || die "keyring $KEYRING not found (apt-get install debian-archive-keyring)"
say "mirror: $MIRROR (suite $SUITE, keyring $KEYRING)"
[ -n "$SECURITY" ] && say "security mirror: $SECURITY"

# --- the root filesystem ---------------------------------------------------------------
if [ "$FORCE" = 1 ] || [ ! -s "$TARBALL" ]; then
  command -v debootstrap >/dev/null || {
    say "installing debootstrap (apt-get install -y debootstrap)"
    apt-get install -y -qq debootstrap >/dev/null 2>&1 \
      || { say "apt-get update, then install again"; apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; } \
      || die "apt-get install debootstrap failed"
  }
  [ "$(id -u)" = 0 ] || die "debootstrap needs root"
  mkdir -p "$CACHE"
  ROOT="$(mktemp -d "$CACHE/root.XXXXXX")"
  cleanup() {
    for m in proc; do mountpoint -q "$ROOT/$m" 2>/dev/null && umount "$ROOT/$m"; done
    rm -rf --one-file-system "$ROOT"
  }
  trap cleanup EXIT
  say "debootstrap --variant=minbase $SUITE with $PACKAGES into $ROOT"
  t0=$SECONDS
  debootstrap --variant=minbase --include="$PACKAGES" --keyring="$KEYRING" "$SUITE" "$ROOT" "$MIRROR" \
    >"$CACHE/debootstrap.log" 2>&1 || { tail -n 20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
  say "debootstrap done in $((SECONDS - t0)) s"

  # apt inside the image points at the same mirror; updates and security fixes go in now.
  {
    echo "deb $MIRROR $SUITE main"
    [ "$PY314" = 1 ] || echo "deb $MIRROR $SUITE-updates main"
    [ -n "$SECURITY" ] && echo "deb $SECURITY $SUITE-security main"
  } >"$ROOT/etc/apt/sources.list"
  if [ "$UPGRADE" = 1 ]; then
    say "apt-get upgrade inside the root (updates + security)"
    mount -t proc proc "$ROOT/proc"
    chroot "$ROOT" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -y -qq dist-upgrade' \
      >"$CACHE/upgrade.log" 2>&1 || { tail -n 20 "$CACHE/upgrade.log" >&2; die "upgrade inside the root failed"; }
    umount "$ROOT/proc"
  fi
  if [ "$PY314" = 1 ]; then
    # `python3` (and `python`) is 3.14 whatever sid's default python3 becomes: the lab's
    # Dockerfile runs `python3 -m venv`. /usr/local/bin comes first on PATH.
    ln -s /usr/bin/python3.14 "$ROOT/usr/local/bin/python3"
    ln -s /usr/bin/python3.14 "$ROOT/usr/local/bin/python"
  else
    # The redis data dir, owned by the redis user the package created (as in the official image).
    chroot "$ROOT" install -d -o redis -g redis -m 0750 /data
  fi
  chroot "$ROOT" apt-get clean
  rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/log/*.log "$ROOT"/tmp/*
  # Debian's redis-server unit config binds/daemonizes for systemd; the lab passes its own
  # config file, so the packaged one stays as it is.
  say "packing the root into $TARBALL"
  tar --numeric-owner -C "$ROOT" -cf "$TARBALL.tmp" . && mv "$TARBALL.tmp" "$TARBALL"
  cleanup; trap - EXIT
else
  say "using cached root filesystem $TARBALL (--force rebuilds it)"
fi
say "root filesystem: $(du -h "$TARBALL" | cut -f1)"

# --- import: one root filesystem, two images with their own defaults --------------------
say "docker import $PYTHON_BASE"
docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "taskrace: debootstrap $SUITE minbase + $PACKAGES" \
  "$TARBALL" "$PYTHON_BASE" >/dev/null || die "docker import $PYTHON_BASE failed"
if [ "$PY314" = 1 ]; then
  docker run --rm --network none "$PYTHON_BASE" python3 -c \
    'import sys, venv; from concurrent.futures import InterpreterPoolExecutor; print("python", sys.version.split()[0], "with InterpreterPoolExecutor")' \
    | sed 's/^/[build-base-images] check: /' >&2 || die "$PYTHON_BASE does not run python3.14 with InterpreterPoolExecutor"
  say "done: $PYTHON_BASE"
  exit 0
fi
say "docker import $REDIS_BASE"
docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'WORKDIR /data' \
  --change 'USER redis' \
  --change 'EXPOSE 6379' \
  --change 'CMD ["redis-server", "--protected-mode", "yes"]' \
  --message "taskrace: debootstrap $SUITE minbase + $PACKAGES" \
  "$TARBALL" "$REDIS_BASE" >/dev/null || die "docker import $REDIS_BASE failed"
docker run --rm --network none "$PYTHON_BASE" python3 -c 'import sys, venv; print("python", sys.version.split()[0])' \
  | sed 's/^/[build-base-images] check: /' >&2 || die "$PYTHON_BASE does not run python3"
docker run --rm --network none "$REDIS_BASE" redis-server --version \
  | sed 's/^/[build-base-images] check: /' >&2 || die "$REDIS_BASE does not run redis-server"
say "done: $PYTHON_BASE $REDIS_BASE"
