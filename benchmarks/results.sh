#!/usr/bin/env bash
# Re-measure every figure of docs/results.md. Reads the datasets from DATA (default ../shared/data).
# On the 2-core CPU it was written on: about 2 minutes for leave-one-dataset-out and the generalist, about
# 12 minutes for the conv-lstm in-dataset runs, plus about 40 minutes per protocol for seed-lstm (run in
# parallel below), capped at SEED_EPOCHS epochs per fold.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/results}
SEED_EPOCHS=${SEED_EPOCHS:-5}
BIN=${BIN:-.venv/bin}
mkdir -p "$OUT"
train() { "$BIN/p2p-train" --data "$DATA" --cv 5 --set optim.threads=1 "$@"; }

# seed-lstm is the slow one: both protocols in the background, one core each.
for protocol in subject seed; do
  train --config configs/train/seed-lstm.toml --protocol "$protocol" --epochs "$SEED_EPOCHS" \
    --out "$OUT/ppg_bp-${protocol}__seed-lstm" > "$OUT.seed-lstm-$protocol.log" 2>&1 &
done

# Cross-dataset: leave-one-dataset-out over PPG-BP, four-wavelength and AIST, the calibrated tracking on AIST,
# and the shipped generalist itself (the checkpoint lands in $OUT/generalist/model, not in the package).
"$BIN/p2p-train" --config configs/train/default.toml --data "$DATA" \
  --out "$OUT/generalist/model" --report-dir "$OUT/generalist/report"

# In-dataset: PPG-BP 5-fold subject CV (and the notebook's leaky split), the four-wavelength set.
for protocol in subject seed; do
  train --config configs/train/ppg-bp.toml --protocol "$protocol" --out "$OUT/ppg_bp-${protocol}__default-demographics"
  train --config configs/train/default-ppg-only.toml --protocol "$protocol" --out "$OUT/ppg_bp-${protocol}__default-ppg-only"
done
# The generalist's network recipe (2 s crops, sensor augmentation, PPG only) on PPG-BP alone, subject CV.
train --config configs/train/default.toml --set data.dataset=ppg_bp --set split.protocol=subject \
  --out "$OUT/ppg_bp-subject__generalist-recipe"
train --config configs/train/four-wavelength.toml --out "$OUT/four_wavelength-subject__default-demographics"
train --config configs/train/four-wavelength.toml --set model.params.use_demographics=false \
  --out "$OUT/four_wavelength-subject__default-ppg-only"
# Calibrated tracking from beat features on stress_beats_zjx, leave-one-subject-out (about 10 s): the tables of
# docs/results/tracking/ and the daemon's tracking model, p2p_stream/assets/tracking.json.
"$BIN/python" -m p2p_stream.offline.beat_tracking --data "$DATA" --out "$OUT/tracking/stress_beats.md" \
  --ship "$OUT/tracking/tracking.json"
# The shipped PPG-only tracking on AIST (at rest, four weeks, a wrist sensor; about 10 s): the measurement that
# limits tracking to an hour after a cuff reading (docs/results.md).
"$BIN/python" -m p2p_stream.offline.aist_tracking --data "$DATA" --out "$OUT/tracking/aist.md"
wait
"$BIN/python" benchmarks/summarize_results.py "$OUT"
