#!/usr/bin/env bash
# GPU check of the eval stage: the demo base model + one LoRA adapter, with vLLM and with hf;
# prints both throughputs and their ratio (last line: ratio=<vllm/hf> target=<t>).
#   scripts/gpu_check_eval.sh [MODEL] [extra args for scripts/gpu_check_eval.py]
# MODEL: local HF folder, pypi-gguf:<package>, hub id, or "random" (nothing downloaded).
# Needs: a CUDA GPU and the eval GPU image (torch with CUDA, vllm). Record the figures in README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
MODEL="${1:-}"
[ $# -gt 0 ] && shift

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if ! "$PY" -c "import vllm" 2>/dev/null; then
  echo "vllm is not installed for $PY; the hf figures alone follow (install the eval GPU image for both)" >&2
  ENGINES=(--engines hf)
else
  "$PY" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__, 'cuda', torch.version.cuda)"
  ENGINES=()
fi
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
OUT_JSON="${OUT:-/tmp}/gpu_check_eval.json"
exec "$PY" scripts/gpu_check_eval.py ${MODEL:+--model "$MODEL"} --json "$OUT_JSON" "${ENGINES[@]}" "$@"
