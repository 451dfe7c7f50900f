#!/usr/bin/env bash
# Re-measure every figure of docs/results.md. Reads the datasets from DATA (default ../shared/data).
# On the 2-core CPU it was written on: about 12 minutes for the conv-lstm runs, plus about 40 minutes per
# protocol for seed-lstm (run in parallel below), capped at SEED_EPOCHS epochs per fold.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/results}
SEED_EPOCHS=${SEED_EPOCHS:-5}
BIN=${BIN:-.venv/bin}
train() { "$BIN/p2p-train" --data "$DATA" --cv 5 --set optim.threads=1 "$@"; }

# seed-lstm is the slow one: both protocols in the background, one core each.
for protocol in subject seed; do
  train --config configs/train/seed-lstm.toml --protocol "$protocol" --epochs "$SEED_EPOCHS" \
    --out "$OUT/ppg_bp-${protocol}__seed-lstm" > "$OUT.seed-lstm-$protocol.log" 2>&1 &
done

for protocol in subject seed; do
  train --config configs/train/default.toml --protocol "$protocol" --out "$OUT/ppg_bp-${protocol}__default-demographics"
  train --config configs/train/default-ppg-only.toml --protocol "$protocol" --out "$OUT/ppg_bp-${protocol}__default-ppg-only"
done
train --config configs/train/four-wavelength.toml --out "$OUT/four_wavelength-subject__default-demographics"
train --config configs/train/four-wavelength.toml --set model.params.use_demographics=false \
  --out "$OUT/four_wavelength-subject__default-ppg-only"
# The shipped model, trained on PPG-BP only, scored on every window of the other dataset (cross-dataset).
"$BIN/p2p-eval" --model default --data "$DATA" --dataset four_wavelength --split all --window-s 10 \
  --out "$OUT/four_wavelength-cross__shipped-default/report"
wait
"$BIN/python" benchmarks/summarize_results.py "$OUT"
