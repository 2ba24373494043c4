#!/usr/bin/env bash
# How the clip-threshold target of kws-export --calibrate trades keyword accuracy against false accepts:
# exports the checkpoint once per target and measures each with kws-robustness (no streaming: that has its
# own thresholds, kws-stream-calibrate). Usage: scripts/threshold_targets.sh CHECKPOINT OUT_DIR [TARGETS...]
# (about 4 min a target on 2 cores with --every 2; docs/recognition.md#decisions-calibrated-scores-and-thresholds)
set -euo pipefail
cd "$(dirname "$0")/.."
checkpoint="${1:?usage: scripts/threshold_targets.sh CHECKPOINT OUT_DIR [TARGETS...]}"
out="${2:?usage: scripts/threshold_targets.sh CHECKPOINT OUT_DIR [TARGETS...]}"
shift 2
if (($#)); then targets=("$@"); else targets=(0.005 0.01 0.02); fi
bin=.venv/bin
mkdir -p "$out"
for target in "${targets[@]}"; do
    "$bin/kws-export" "$checkpoint" -o "$out/target-$target.onnx" --calibrate "$target" > "$out/target-$target.export.txt"
    "$bin/kws-robustness" "$out/target-$target.onnx" --every 2 --streaming-minutes 0 \
        --json "$out/target-$target.json" > "$out/target-$target.txt"
    echo "== target $target"; grep -E "accuracy|accept|drop|recall" "$out/target-$target.txt" | head -20
done
