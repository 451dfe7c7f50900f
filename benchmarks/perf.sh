#!/usr/bin/env bash
# Every current figure of docs/performance.md ("Now" tables) in one run: `make perf`, about 25 minutes on the 2-core
# development VM. Writes docs/perf/current/*.json; each benchmark prints its table as it goes. The ways of running
# the daemon are compared within one bench_daemon run (batched, recompute, process, naive), never across runs.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-docs/perf/current}
DATA=${DATA:-../shared/data}
mkdir -p "$OUT"
run() { echo; echo "\$ $*"; "$@"; }

run "$BIN/python" benchmarks/bench_peak.py --out "$OUT/peak.json"
run "$BIN/python" benchmarks/bench_inference.py --out "$OUT/inference.json"
run "$BIN/python" benchmarks/bench_network_variants.py --batch 64 --seconds 4 --out "$OUT/network_variants.json"
run "$BIN/python" benchmarks/bench_window_steps.py
run "$BIN/python" benchmarks/bench_ingest.py --messages 100000 --repeat 3 --out "$OUT/ingest.json"
# The whole path, 100 Hz wearables in 25-sample chunks: spread over the hop as independent devices are, then all due
# at once (--aligned); each mode up to the first device count it does not sustain.
run "$BIN/python" benchmarks/bench_daemon.py --modes batched,recompute,process,naive --devices 2000,3000,4000,5000 \
  --naive-devices 100,300,500,750 --fs 100 --seconds 24 --out "$OUT/daemon_staggered.json"
run "$BIN/python" benchmarks/bench_daemon.py --modes batched,recompute,process --devices 1000 --aligned --fs 100 \
  --seconds 24 --out "$OUT/daemon_aligned.json"
if [ -d "$DATA" ]; then  # the accuracy side of preparing crops alone needs the datasets
  run "$BIN/python" benchmarks/crop_prep_accuracy.py --data "$DATA" --out "$OUT/crop_prep_accuracy.json"
fi
echo; echo "wrote $OUT"
