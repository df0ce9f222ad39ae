#!/usr/bin/env bash
# Build and tag every creed image: the two bases, then one image per stage.
#
#   images/build.sh                      # tag = the creed version in pyproject.toml
#   TAG=dev REPO=registry.example.com/lab images/build.sh
#   PUSH=1 images/build.sh               # also push (after `docker login`)
#   WITH_VLLM=1 WITH_DEMO=1 images/build.sh   # vLLM in eval; the demo's GGUF models in generate/train/eval
#
# Images: $REPO/creed-base-cpu, $REPO/creed-base-cuda, $REPO/creed-<stage> for
# generate, filter, mix, analyze (CPU base) and train, eval (CUDA base). Needs docker.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
REPO=${REPO:-ghcr.io/creed}
TAG=${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -n 1)}
COMMIT=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
STAGES="generate filter mix analyze train eval"

command -v docker >/dev/null || { echo "error: docker not found on PATH" >&2; exit 2; }
[ -n "$TAG" ] || { echo "error: no version in pyproject.toml; set TAG" >&2; exit 2; }

build() {  # build <dockerfile> <image> [docker build args...]
  local file=$1 image=$2
  shift 2
  echo "--- $image"
  docker build -f "$ROOT/images/$file" --build-arg CREED_GIT_COMMIT="$COMMIT" "$@" -t "$image" "$ROOT"
}

build base-cpu.Dockerfile "$REPO/creed-base-cpu:$TAG"
build base-cuda.Dockerfile "$REPO/creed-base-cuda:$TAG"
for stage in $STAGES; do
  case $stage in
    train|eval) base="$REPO/creed-base-cuda:$TAG" ;;
    *) base="$REPO/creed-base-cpu:$TAG" ;;
  esac
  # WITH_VLLM=1 adds vLLM to the eval image (eval.engine: vllm); WITH_DEMO=1 adds the demo's
  # small models to generate, train and eval (for experiments/demo.yaml on kind).
  build "$stage.Dockerfile" "$REPO/creed-$stage:$TAG" --build-arg BASE_IMAGE="$base" \
    --build-arg WITH_VLLM="${WITH_VLLM:-0}" --build-arg WITH_DEMO="${WITH_DEMO:-0}"
done

if [ "${PUSH:-0}" = "1" ]; then
  for image in base-cpu base-cuda $STAGES; do
    docker push "$REPO/creed-$image:$TAG"
  done
fi
echo "built $REPO/creed-{base-cpu,base-cuda,${STAGES// /,}}:$TAG"
