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
# A bare GPU image has torch but neither this package installed nor every library it needs: take the
# wheels carried in .whl/ (see README, "GPU check") for the modules that are missing, and import the
# package from a linked tree.
PY=$(command -v python || command -v python3)
if ! "$PY" -c "import salient.models" 2>/dev/null; then
  wheels=()
  for pair in monai:monai pywt:pywavelets scipy:scipy einops:einops yaml:pyyaml; do
    module=${pair%%:*} wheel=${pair#*:}
    if ! "$PY" -c "import $module" 2>/dev/null && compgen -G ".whl/$wheel-*.whl" >/dev/null; then
      wheels+=(.whl/"$wheel"-*.whl)
    fi
  done
  if ((${#wheels[@]})); then
    echo "installing into /tmp/salient-site: ${wheels[*]}"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/salient-site "${wheels[@]}"
  fi
  mkdir -p /tmp/salient-site/salient
  for layer in models platform dashboards; do ln -sfn "$PWD/$layer" "/tmp/salient-site/salient/$layer"; done
  export PYTHONPATH="/tmp/salient-site${PYTHONPATH:+:$PYTHONPATH}"
  "$PY" -c "import salient.models.diffusion, salient.models.ucmt, salient.models.detector" || exit 1
fi
args=()
if [[ "${1:-}" == "--cpu" || "${SALIENT_GPU_CHECK_CPU:-0}" == "1" ]]; then
  args+=(--small)
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
exec timeout 470 "$PY" benchmarks/gpu_check.py "${args[@]}"
