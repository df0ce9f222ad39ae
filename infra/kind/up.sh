#!/usr/bin/env bash
# A local creed cluster: kind + Argo Workflows + the creed chart with an in-cluster MinIO store.
#
#   infra/kind/up.sh                 # create (idempotent: re-running upgrades in place)
#   infra/kind/up.sh --load-images   # also build the stage images (make images) and load them into kind
#   infra/kind/down.sh               # tear down
#
# Needs: docker, kind, kubectl, helm (v3.14+ or v4). Prints the environment for `creed submit` at the end.
set -euo pipefail

CLUSTER=${CLUSTER:-creed}
NAMESPACE=${NAMESPACE:-creed}
ARGO_VERSION=${ARGO_VERSION:-v3.7.18}   # the line tests/schemas validates against
BUCKET=${BUCKET:-creed}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found on PATH" >&2; exit 2; }
done

if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --config "$HERE/kind-config.yaml"
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

echo "--- Argo Workflows $ARGO_VERSION"
kubectl create namespace argo --dry-run=client -o yaml | kubectl apply -f -
kubectl apply --server-side -n argo \
  -f "https://github.com/argoproj/argo-workflows/releases/download/${ARGO_VERSION}/install.yaml"
kubectl -n argo rollout status deploy/workflow-controller --timeout=300s
kubectl -n argo rollout status deploy/argo-server --timeout=300s

echo "--- creed chart in namespace $NAMESPACE (with MinIO)"
PASSWORD_FILE="$HERE/.minio-password"   # kept locally so re-runs keep the same credentials
[ -s "$PASSWORD_FILE" ] || { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$PASSWORD_FILE"; chmod 600 "$PASSWORD_FILE"; }
helm upgrade --install creed "$ROOT/helm/creed" \
  --namespace "$NAMESPACE" --create-namespace \
  --set minio.enabled=true \
  --set-file minio.rootPassword="$PASSWORD_FILE" \
  --set store.bucket="$BUCKET" \
  --set images.pullPolicy=Never \
  --wait --timeout 5m

if [ "${1:-}" = "--load-images" ]; then
  WITH_DEMO=1 "$ROOT/images/build.sh"   # the demo's small models inside the images
  "$HERE/load-images.sh"
fi

cat <<INFO

Ready. In two other terminals:
  kubectl -n argo port-forward svc/argo-server 2746:2746
  kubectl -n $NAMESPACE port-forward svc/creed-minio 9000:9000

Then:
  export ARGO_SERVER=https://localhost:2746 ARGO_INSECURE_SKIP_VERIFY=true ARGO_NAMESPACE=$NAMESPACE
  export ARGO_TOKEN="Bearer \$(kubectl -n $NAMESPACE get secret creed-submitter.service-account-token -o jsonpath='{.data.token}' | base64 -d)"
  export AWS_ENDPOINT_URL=http://localhost:9000 AWS_ACCESS_KEY_ID=creed AWS_SECRET_ACCESS_KEY=\$(cat $PASSWORD_FILE)
  creed submit experiments/demo.yaml --store s3://$BUCKET/experiments
INFO
