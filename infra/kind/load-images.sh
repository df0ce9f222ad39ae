#!/usr/bin/env bash
# Load the creed stage images (built by `make images`) into the kind cluster, so pods never pull.
#
#   infra/kind/load-images.sh            # CLUSTER=creed, REPO=ghcr.io/creed, TAG=the commit (as images/build.sh)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CLUSTER=${CLUSTER:-creed}
REPO=${REPO:-ghcr.io/creed}
# The tag images/build.sh gives by default: the first 12 hex digits of the commit (else the version).
COMMIT=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
if [ "$COMMIT" = unknown ]; then
  DEFAULT_TAG=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -n 1)
else
  DEFAULT_TAG=${COMMIT:0:12}
fi
TAG=${TAG:-$DEFAULT_TAG}

command -v kind >/dev/null || { echo "error: kind not found on PATH" >&2; exit 2; }
for stage in generate filter mix analyze train eval; do
  image="$REPO/creed-$stage:$TAG"
  if ! docker image inspect "$image" >/dev/null 2>&1; then
    echo "error: $image is not built; run \`make images\` first" >&2
    exit 2
  fi
  kind load docker-image "$image" --name "$CLUSTER"
done
echo "loaded $REPO/creed-*:$TAG into kind cluster $CLUSTER"
