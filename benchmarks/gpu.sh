#!/usr/bin/env bash
# The GPU checks, as one prepared script (under 8 minutes on an H100/H200-class GPU):
#   1. the GPU-marked kernel parity tests (Triton kernels against their reference paths);
#   2. benchmarks/encoder.py on CUDA: ViT-B/16 at 224 px, batch 256, bf16 -- medvl with its
#      Triton kernels, medvl's reference path and timm, eager and compiled; img/s, peak memory
#      and model FLOP utilisation against the device's dense bf16 peak (targets: medvl >= 1.3x
#      timm's train step, MFU >= 45%);
#   3. benchmarks/loss.py at batch 32k: the blockwise contrastive losses' peak memory against
#      the plain B x B loss (target: <= 1/8).
# Usage, from the project root on the GPU machine (python3 holding torch, Triton, timm, pytest):
#   bash benchmarks/gpu.sh [OUT_DIR]        (default runs/gpu; every log lands there)
# Only torch, numpy, tqdm, timm and pytest are imported (medvl's kernels, encoders and losses):
# the project is put on PYTHONPATH and needs no install.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
out=${1:-${OUT:-runs/gpu}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)
status=0

step() {  # step NAME LIMIT_S CMD...: run with a time limit, log to $out/NAME.log, remember a failure
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit} s): $*"
  timeout --signal=INT --kill-after=20 "$limit" "$@" 2>&1 | tee "$out/$name.log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { echo "== $name: exit $rc"; status=1; }
}

"$PY" - <<'EOF' 2>&1 | tee "$out/device.log" || exit 2
import sys, torch, triton, timm
if not torch.cuda.is_available():
    sys.exit("benchmarks/gpu.sh: no CUDA device")
p = torch.cuda.get_device_properties(0)
print(f"{p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs; torch {torch.__version__}, "
      f"triton {triton.__version__}, timm {timm.__version__}, CUDA {torch.version.cuda}")
EOF

step gpu_tests 120 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/kernels
# Compiled configurations use torch.compile's default mode: max-autotune's GEMM search would take
# the whole budget on a cold cache. Two rounds, medians of ten timed steps after three warm-up steps.
step encoder 270 "$PY" benchmarks/encoder.py --device cuda --arch vit_base_patch16 --img 224 --batch 256 \
  --steps 10 --warmup 3 --repeats 2 --compile-mode default \
  --only timm-eager-bf16,timm-compile-bf16,medvl-eager-bf16,medvl-eager-bf16-reference,medvl-compile-bf16
step loss 90 "$PY" benchmarks/loss.py --device cuda --batch 32768 --dim 768 --steps 3 --repeats 1 --out "$out/loss"

echo "benchmarks/gpu.sh: $(( $(date +%s) - start )) s, logs in $out$([ $status -eq 0 ] || echo '; a step FAILED')"
exit $status
