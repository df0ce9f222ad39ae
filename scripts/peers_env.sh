#!/usr/bin/env bash
# Builds (once) a separate venv with llama-cpp-python's OpenAI-compatible server, for `make test-peers`.
# The build compiles llama.cpp from source (~8 minutes on 2 idle cores), so the venv is cached under
# $CREED_PEERS_CACHE (default ~/.cache/creed/peers), one per version and build flags.
# Build flags: portable AVX2, no AMX. A native build (-march=native) uses AMX tile instructions for the
# Q4_1 GGUF on a CPU that has them, and they fault (SIGSEGV in ldtilecfg) where the kernel or sandbox
# does not enable AMX state, as on this project's development machines.
# Prints the venv's python on stdout.
set -euo pipefail
LLAMA_CPP_PYTHON="${LLAMA_CPP_PYTHON:-llama-cpp-python==0.3.36}"
LLAMA_CMAKE_ARGS="${LLAMA_CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"
CACHE="${CREED_PEERS_CACHE:-$HOME/.cache/creed/peers}"
KEY="$(printf '%s\n%s\n' "$LLAMA_CPP_PYTHON" "$LLAMA_CMAKE_ARGS" | sha256sum | cut -c1-10)"
VENV="$CACHE/venv-${LLAMA_CPP_PYTHON//[^A-Za-z0-9.]/-}-$KEY"
STAMP="$VENV/.built"
if [[ ! -f "$STAMP" ]]; then
  mkdir -p "$CACHE"
  rm -rf "$VENV"
  "${PY:-python3}" -m venv "$VENV"
  echo "building ${LLAMA_CPP_PYTHON}[server] ($LLAMA_CMAKE_ARGS) into $VENV: minutes, cached afterwards" >&2
  start=$(date +%s)
  CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    "$VENV/bin/pip" install --quiet --no-cache-dir "${LLAMA_CPP_PYTHON/==/[server]==}" >&2
  echo "built in $(( $(date +%s) - start )) s" >&2
  touch "$STAMP"
fi
echo "$VENV/bin/python"
