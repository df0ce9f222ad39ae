#!/usr/bin/env bash
# GPU check of the train stage: the demo base model fine-tuned on one GPU for a few hundred steps
# through jobs.train; prints tokens/s, MFU and peak memory (last line), and writes them as JSON.
#   scripts/gpu_check_train.sh [MODEL] [extra args for scripts/gpu_check_train.py, e.g. --method full]
# MODEL: local HF folder, pypi-gguf:<package>, hub id, or "random" (nothing downloaded).
# Needs: a CUDA GPU and the train GPU image (torch with CUDA). Record the figures in README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
MODEL="${1:-}"
[ $# -gt 0 ] && shift

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" CREED_LOG_FORMAT="${CREED_LOG_FORMAT:-json}"
OUT_JSON="${OUT:-/tmp}/gpu_check_train.json"
exec "$PY" scripts/gpu_check_train.py ${MODEL:+--model "$MODEL"} --json "$OUT_JSON" "$@"
