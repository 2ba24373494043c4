"""Where the speech is in a clip: the span of 20-ms frames within 25 dB of the loudest one.

Pure numpy. ``evaluation/streaming.py`` places words in long recordings by it, and the streaming tests
check that a detection covers the word it reports.
"""

from __future__ import annotations

import numpy as np

FRAME_S = 0.02
DYNAMIC_RANGE_DB = 25.0


def speech_extent(clip: np.ndarray, rate: int) -> tuple[int, int]:
    """First and last sample of the word: 20-ms frames within 25 dB of the loudest one."""
    frame = int(rate * FRAME_S)
    energy = np.array([np.mean(clip[i : i + frame] ** 2) for i in range(0, len(clip) - frame + 1, frame)]) + 1e-12
    loud = np.flatnonzero(10 * np.log10(energy / energy.max()) > -DYNAMIC_RANGE_DB)
    return int(loud[0] * frame), int((loud[-1] + 1) * frame)
