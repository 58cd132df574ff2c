#!/usr/bin/env bash
# The GPU check (issue #16): wavelet vs pixel diffusion throughput at 256 and 512 px, one
# structured-CFG sampling step vs an unguided one, and a tiny study with gpus: 1 - one table.
# Under 8 minutes on one H100. Needs only this repository and its installed packages.
#
#   benchmarks/gpu_check.sh            # on the GPU machine
#   benchmarks/gpu_check.sh --cpu      # small sizes on a CPU (CI; also SALIENT_GPU_CHECK_CPU=1)
#
# Outputs (gpu_check.txt, gpu_check.json, the tiny study) go under $OUT when it is set.
set -euo pipefail
cd "$(dirname "$0")/.."
args=()
if [[ "${1:-}" == "--cpu" || "${SALIENT_GPU_CHECK_CPU:-0}" == "1" ]]; then
  args+=(--small)
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
exec timeout 470 python benchmarks/gpu_check.py "${args[@]}"
