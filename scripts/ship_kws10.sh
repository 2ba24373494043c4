#!/usr/bin/env bash
# Ships a finished kws10 run: copies it into artifacts/kws10 (checkpoint, metrics, plots), exports the service's
# ONNX model with calibrated scores and per-keyword thresholds, chooses its stream thresholds, checks parity
# with PyTorch and measures it with kws-robustness (docs/recognition.md).
# Usage: scripts/ship_kws10.sh RUN_DIR VERSION, e.g. runs/kws10-2.1 2.1.0   (about 4 min on 2 cores; needs ../shared/data and .cache/synth)
set -euo pipefail
cd "$(dirname "$0")/.."
run="${1:?usage: scripts/ship_kws10.sh RUN_DIR VERSION}"
version="${2:?usage: scripts/ship_kws10.sh RUN_DIR VERSION (the model version written into the ONNX metadata)}"
bin=.venv/bin
rm -rf artifacts/kws10 && mkdir -p artifacts/kws10/plots
cp "$run/best.pt" artifacts/kws10/model.pt
cp "$run/metrics.csv" "$run/summary.json" artifacts/kws10/
cp "$run"/plots/*.png artifacts/kws10/plots/
"$bin/kws-export" artifacts/kws10/model.pt -o service/models/kws10.onnx --version "$version" --calibrate 0.005 \
    | tee artifacts/kws10/export.txt
"$bin/kws-stream-calibrate" service/models/kws10.onnx --target-per-hour 8 | tee artifacts/kws10/stream_calibration.txt
"$bin/kws-parity" artifacts/kws10/model.pt service/models/kws10.onnx | tee artifacts/kws10/parity.txt
"$bin/kws-robustness" service/models/kws10.onnx --json artifacts/kws10/robustness.json \
    --curve-plot artifacts/kws10/plots/stream_curve.png | tee artifacts/kws10/robustness.txt
