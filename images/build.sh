#!/usr/bin/env bash
# Build and tag every creed image: the two bases, then one image per stage.
#
#   images/build.sh                      # tag = the commit (12 hex digits), as `creed render` expects
#   TAG=dev REPO=registry.example.com/lab images/build.sh
#   PUSH=1 images/build.sh               # also push (after `docker login`)
#   WITH_VLLM=1 WITH_DEMO=1 images/build.sh   # also creed-eval:TAG-vllm; the demo's GGUF models in generate/train/eval
#   CPU_ONLY=1 BASE=my/bookworm-python:1 CA_FILE=/etc/ssl/certs/ca-certificates.crt WHEELS=/opt/wheels \
#     NETWORK=host images/build.sh       # offline-ish: a local base, train/eval on the CPU base
#
# Settings (environment):
#   BASE       parent image of the CPU base (default python:3.11.11-slim-bookworm; any Debian-based image
#              with python3 >= 3.11 and its venv module)
#   CUDA_BASE  parent image of the CUDA base (default nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04)
#   CPU_ONLY=1 build train and eval on the CPU base (CPU torch) and skip the CUDA base
#   CA_FILE    CA bundle for pip (a BuildKit secret: never in a layer)
#   PIP_CONF   a pip config file for pip in the build, e.g. an index-url (a BuildKit secret too)
#   WHEELS     a folder of wheels pip takes first (the CPU torch wheel); then torch comes from the
#              folder and PyPI unless TORCH_INDEX_URL is set
#   NETWORK    `docker build --network` (host where the daemon has no bridge network)
#   STAGES     the stage images to build (default: all six)
#   DOCKER     the docker client (one with BuildKit: buildx, or a client older than 23 with DOCKER_BUILDKIT=1)
#
# Images: $REPO/creed-base-cpu, $REPO/creed-base-cuda, $REPO/creed-<stage> for
# generate, filter, mix, analyze (CPU base) and train, eval (CUDA base). Needs docker with BuildKit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
REPO=${REPO:-ghcr.io/creed}
# The default tag is workflows.argo.commit_tag(): the first 12 hex digits of the commit.
COMMIT=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
if [ "$COMMIT" = unknown ]; then
  DEFAULT_TAG=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -n 1)
else
  DEFAULT_TAG=${COMMIT:0:12}
fi
TAG=${TAG:-$DEFAULT_TAG}
STAGES=${STAGES:-generate filter mix analyze train eval}
DOCKER=${DOCKER:-docker}
export DOCKER_BUILDKIT=1

command -v "$DOCKER" >/dev/null || { echo "error: $DOCKER not found on PATH" >&2; exit 2; }
[ -n "$TAG" ] || { echo "error: no commit and no version in pyproject.toml; set TAG" >&2; exit 2; }
if [ "$COMMIT" != unknown ] && [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ]; then
  echo "warning: uncommitted changes are built into images tagged $TAG (commit $COMMIT)" >&2
fi

common=(--build-arg CREED_GIT_COMMIT="$COMMIT")
[ -z "${NETWORK:-}" ] || common+=(--network "$NETWORK")
if [ -n "${CA_FILE:-}" ]; then
  [ -f "$CA_FILE" ] || { echo "error: CA_FILE=$CA_FILE is not a file" >&2; exit 2; }
  common+=(--secret "id=ca,src=$CA_FILE")
fi
if [ -n "${PIP_CONF:-}" ]; then
  [ -f "$PIP_CONF" ] || { echo "error: PIP_CONF=$PIP_CONF is not a file" >&2; exit 2; }
  common+=(--secret "id=pipconf,src=$PIP_CONF")
fi
stage_args=()
if [ -n "${WHEELS:-}" ]; then
  [ -d "$WHEELS" ] || { echo "error: WHEELS=$WHEELS is not a folder" >&2; exit 2; }
  if "$DOCKER" buildx version >/dev/null 2>&1; then
    stage_args+=(--build-context "wheels=$WHEELS")
  else  # no buildx, no named contexts: the folder as an image, named by its listing
    wheels_image="creed-wheels:$(find "$WHEELS" -maxdepth 1 -name '*.whl' -printf '%f %s\n' | sort | sha256sum | cut -c1-12)"
    if ! "$DOCKER" image inspect "$wheels_image" >/dev/null 2>&1; then
      tar -C "$WHEELS" -c . | "$DOCKER" import - "$wheels_image" >/dev/null
    fi
    stage_args+=(--build-arg WHEELS_IMAGE="$wheels_image")
  fi
  stage_args+=(--build-arg TORCH_INDEX_URL="${TORCH_INDEX_URL:-}")
elif [ -n "${TORCH_INDEX_URL+set}" ]; then
  stage_args+=(--build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL")
fi

build() {  # build <dockerfile> <image> [docker build args...]
  local file=$1 image=$2
  shift 2
  echo "--- $image"
  "$DOCKER" build -f "$ROOT/images/$file" "${common[@]}" "$@" -t "$image" "$ROOT"
}

built=()
cpu_args=()
[ -z "${BASE:-}" ] || cpu_args+=(--build-arg PYTHON_IMAGE="$BASE")
build base-cpu.Dockerfile "$REPO/creed-base-cpu:$TAG" "${cpu_args[@]}"
built+=("$REPO/creed-base-cpu:$TAG")
gpu_base="$REPO/creed-base-cuda:$TAG"
if [ "${CPU_ONLY:-0}" = "1" ]; then
  gpu_base="$REPO/creed-base-cpu:$TAG"
else
  cuda_args=()
  [ -z "${CUDA_BASE:-}" ] || cuda_args+=(--build-arg CUDA_IMAGE="$CUDA_BASE")
  build base-cuda.Dockerfile "$gpu_base" "${cuda_args[@]}"
  built+=("$gpu_base")
fi
for stage in $STAGES; do
  case $stage in
    train|eval) base=$gpu_base ;;
    *) base="$REPO/creed-base-cpu:$TAG" ;;
  esac
  # WITH_DEMO=1 adds the demo's small models to generate, train and eval (experiments/demo.yaml on kind).
  build "$stage.Dockerfile" "$REPO/creed-$stage:$TAG" --build-arg BASE_IMAGE="$base" "${stage_args[@]}" \
    --build-arg WITH_DEMO="${WITH_DEMO:-0}"
  built+=("$REPO/creed-$stage:$TAG")
  # WITH_VLLM=1: also the eval image with vLLM, under the tag workflows.argo.VLLM_SUFFIX names (eval.engine: vllm).
  if [ "$stage" = eval ] && [ "${WITH_VLLM:-0}" = "1" ]; then
    build eval.Dockerfile "$REPO/creed-eval:$TAG-vllm" --build-arg BASE_IMAGE="$base" "${stage_args[@]}" \
      --build-arg WITH_DEMO="${WITH_DEMO:-0}" --build-arg WITH_VLLM=1
    built+=("$REPO/creed-eval:$TAG-vllm")
  fi
done

if [ "${PUSH:-0}" = "1" ]; then
  for image in "${built[@]}"; do
    "$DOCKER" push "$image"
  done
fi
printf 'built %s\n' "${built[@]}"
