#!/usr/bin/env bash
# The measurement behind FeatureConfig.normalization (docs/recognition.md, "Level: the front end"): the same
# reduced kws10 run (2 x 128 neurons, 8 epochs, 500 draws per keyword) with each front end, exported without
# calibration and answered by its top label. About 15 min per front end on 2 quiet cores.
#   scripts/compare_front_ends.sh [CONFIG]   (default configs/kws10.toml; the figures in the docs used the
#                                             150-voices-per-keyword corpus and synthetic_keyword_fraction 0)
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/kws10.toml}
for norm in none channel_mean pcen; do
    out=runs/frontend-$norm
    .venv/bin/kws-train --config "$config" --out "$out" --no-progress \
        --set features.normalization=$norm --set "model.hidden_sizes=[128,128]" --set train.epochs=8 \
        --set data.keyword_clips_per_epoch=500 --set data.unknown_clips_per_epoch=1750 \
        --set model.dropout=0.25 --set data.synthetic_keyword_fraction=0.0
    .venv/bin/kws-export "$out/best.pt" -o "$out/plain.onnx" --formulation shift
    .venv/bin/kws-robustness "$out/plain.onnx" --config "$config" --no-thresholds --no-speech-check \
        --streaming-minutes 0 --json "$out/frontend.json"
done
