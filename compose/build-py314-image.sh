#!/usr/bin/env bash
# Build the opt-in Python 3.14 lab image, offline: taskrace/lab-py314:${TASKRACE_TAG:-latest}
# (or $LAB314_IMAGE), the image compose/py314.yml runs and the interpreters tier needs.
#
#   compose/build-py314-image.sh [--force]
#
#   1. compose/build-base-images.sh --python314   Debian sid minbase + python3.14 via
#      debootstrap -> taskrace/python-base:sid-py314 (skipped when the image exists)
#   2. compose/build-wheels.sh --python314        cp314 wheels -> compose/.cache/wheels-py314
#      (skipped when up to date with pyproject.toml)
#   3. docker build -f compose/Dockerfile.py314 from a context of exactly the project's code
#      and those wheels, streamed as a tar (the repository's .dockerignore shapes the
#      default image's context, which must not carry them). Docker's layer cache makes a
#      rebuild after a code change take seconds.
# --force rebuilds the base image and the wheels too. Needs root (debootstrap) the first
# time, a Docker engine always; no registry, and no index but the one pip downloads from.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
IMAGE="${LAB314_IMAGE:-taskrace/lab-py314:${TASKRACE_TAG:-latest}}"
BASE="${PY314_BASE_IMAGE:-taskrace/python-base:sid-py314}"
WHEELS="$HERE/.cache/wheels-py314"
FORCE=()
say() { printf '[build-py314-image] %s\n' "$*" >&2; }
die() { printf '[build-py314-image] ERROR: %s\n' "$*" >&2; exit 1; }
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=(--force) ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $arg (use --force)" ;;
  esac
done

t0=$SECONDS
PY314_BASE_IMAGE="$BASE" bash "$HERE/build-base-images.sh" --python314 "${FORCE[@]}"
PY314_BASE_IMAGE="$BASE" bash "$HERE/build-wheels.sh" --python314 "${FORCE[@]}"

say "docker build $IMAGE (FROM $BASE, $(ls "$WHEELS"/*.whl | wc -l) wheels)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# The context: pyproject.toml, README.md, the three packages, the Dockerfile, and the
# wheels under wheels/ (with their requirements.txt). No __pycache__, and not the wheels'
# build stamp (it changes with build-wheels.sh, and would void the dependency layer's cache).
if ! tar -C "$ROOT" -cf - --exclude=__pycache__ --exclude='*.pyc' --exclude=.stamp \
      --transform 's,^compose/\.cache/wheels-py314,wheels,' \
      pyproject.toml README.md taskrace scenarios workers compose/Dockerfile.py314 \
      compose/.cache/wheels-py314 \
    | DOCKER_BUILDKIT=0 docker build --quiet --build-arg "PY314_IMAGE=$BASE" \
        -f compose/Dockerfile.py314 -t "$IMAGE" - >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  die "docker build $IMAGE failed"
fi
# The replaced image of the same tag, if any, is left untagged: remove ours, no one else's.
docker image prune --force --filter dangling=true --filter label=io.taskrace.image=lab-py314 >/dev/null
docker run --rm --network none "$IMAGE" python -c \
  'import sys; from workers import get_tier; get_tier("interpreters"); print("python", sys.version.split()[0], "+ the interpreters tier")' \
  | sed 's/^/[build-py314-image] check: /' >&2 || die "$IMAGE has no working interpreters tier"
say "done: $IMAGE in $((SECONDS - t0)) s"
