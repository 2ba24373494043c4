"""Where the benchmarks write their figures (benchmarks/results/), and the saturation figure they share."""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def measured_saturation() -> float:
    """The one-worker saturation throughput that ``python -m benchmarks.workers`` measured last."""
    path = RESULTS / "loadtest-1-worker.json"
    if not path.exists():
        raise SystemExit(f"no {path}: run python -m benchmarks.workers first, or pass --saturation")
    return json.loads(path.read_text())["saturation"]["throughput_rps"]
