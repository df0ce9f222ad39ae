#!/usr/bin/env bash
# Load the creed stage images (built by `make images`) into the kind cluster, so pods never pull.
#
#   infra/kind/load-images.sh            # CLUSTER=creed, REPO=ghcr.io/creed, TAG=the creed version
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CLUSTER=${CLUSTER:-creed}
REPO=${REPO:-ghcr.io/creed}
TAG=${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -n 1)}

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
