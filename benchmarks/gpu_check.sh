#!/usr/bin/env bash
# The GPU path, proven in one run (issue 17): on a machine with CUDA and no network, in under 8 minutes.
#
#   OUT=runs/gpu bash benchmarks/gpu_check.sh        # writes OUT/*.json, OUT/gpu_check.md and OUT/log.txt
#
# 1. the GPU tests (pytest -m gpu: CUDA gives the CPU's numbers; a daemon on --torch-device cuda streams them);
# 2. bench_inference.py --torch-device cuda: the default model and seed-lstm, network alone and whole path, batch 1…4096;
# 3. bench_daemon.py --torch-device cuda: the daemon under the fleet at rising device counts, until one misses.
# Every step has its own time limit, and a step that fails is recorded and the next one still runs. Needs a torch
# built with CUDA in PY (default .venv/bin/python); the summary names the card (nvidia-smi) and torch's CUDA.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu}
PY=${PY:-.venv/bin/python}
DEVICES=${DEVICES:-1000,2000,4000,6000}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1

status=0
step() {  # step NAME SECONDS COMMAND...: run it under a time limit; remember a failure, go on
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit} s): $*"
  local start=$SECONDS
  timeout "$limit" "$@"
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - start)) s"
  echo "$name $rc $((SECONDS - start))" >>"$OUT/steps.txt"
  [ $rc -eq 0 ] || status=1
}

: >"$OUT/steps.txt"
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi") >"$OUT/card.txt"
$PY - >"$OUT/torch.txt" <<'PYEOF'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available {torch.cuda.is_available()}",
      f"device {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "")
PYEOF
cat "$OUT/card.txt" "$OUT/torch.txt"

step tests 120 $PY -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py
step inference 150 $PY benchmarks/bench_inference.py --torch-device cuda --batch-sizes 1,64,256,1024,4096 --seconds 2 \
  --out "$OUT/inference_cuda.json"
step daemon 240 $PY benchmarks/bench_daemon.py --modes batched --torch-device cuda --devices "$DEVICES" \
  --seconds 20 --max-batch 512 --out "$OUT/daemon_cuda.json"
$PY benchmarks/summarize_gpu.py "$OUT" >"$OUT/gpu_check.md" && cat "$OUT/gpu_check.md"
exit $status
