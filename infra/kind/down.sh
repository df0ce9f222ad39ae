#!/usr/bin/env bash
# Delete the local creed cluster (and everything in its MinIO store).
#
#   infra/kind/down.sh                   # CLUSTER=creed
set -euo pipefail

CLUSTER=${CLUSTER:-creed}
HERE=$(cd "$(dirname "$0")" && pwd)
command -v kind >/dev/null || { echo "error: kind not found on PATH" >&2; exit 2; }
if kind get clusters | grep -qx "$CLUSTER"; then
  kind delete cluster --name "$CLUSTER"
else
  echo "no kind cluster named $CLUSTER"
fi
rm -f "$HERE/.minio-password"
