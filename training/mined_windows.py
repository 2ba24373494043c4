"""The file ``kws-mine`` writes and training reads: mined stream windows (int16), their labels, where each
came from, the network's score that chose it, and the mining report (JSON)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

STORE_SCALE = 32767.0  # windows are stored as int16


def save(path: Path, mined: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, waveforms=np.round(mined["waveforms"] * STORE_SCALE).astype(np.int16),
                        labels=np.array(mined["labels"]), sources=np.array(mined["sources"]), scores=mined["scores"],
                        report=np.array(json.dumps(mined["report"])))


def load(path: Path) -> tuple[np.ndarray, list[str], dict]:
    """(waveforms float32, labels, report) of a ``kws-mine`` file."""
    with np.load(path) as stored:
        return (stored["waveforms"].astype(np.float32) / STORE_SCALE, [str(label) for label in stored["labels"]],
                json.loads(str(stored["report"])))
