#!/usr/bin/env bash
# Copies a finished kws10 run into artifacts/kws10 (checkpoint, metrics, plots) and exports the service's
# embedded ONNX model from it. Usage: scripts/ship_kws10.sh runs/kws10 [VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."
run="${1:?usage: scripts/ship_kws10.sh RUN_DIR [VERSION]}"
version="${2:-1.0.0}"
mkdir -p artifacts/kws10/plots
cp "$run/best.pt" artifacts/kws10/model.pt
cp "$run/metrics.csv" "$run/summary.json" artifacts/kws10/
cp "$run"/plots/*.png artifacts/kws10/plots/
kws-export artifacts/kws10/model.pt -o service/models/kws10.onnx --version "$version"
