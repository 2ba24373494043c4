"""Where the speech is in a clip (the span of 20-ms frames within 25 dB of the loudest one), and laying it
over noise: the noise bed of a long recording and the gain that puts a word at a given SNR.

Pure numpy. ``evaluation/stream_recordings.py`` (the streaming evaluation) and ``training/hard_negatives.py``
(the mined streams) build their recordings with these; where and how densely they place words, and over
which noise, differ on purpose. The streaming tests check that a detection covers the word it reports.
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


def noise_bed(noise: np.ndarray, length: int, rms_range: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """``length`` samples of ``noise`` from a random offset (repeated as needed), at an RMS drawn in ``rms_range``."""
    background = np.resize(np.roll(noise, -int(rng.integers(len(noise)))), length).astype(np.float32)
    background *= rng.uniform(*rms_range) / (np.sqrt(np.mean(background**2)) + 1e-12)
    return background


def gain_for_snr(speech: np.ndarray, noise_power: float, snr_db: float) -> float:
    """The gain that puts ``speech`` (the word's span only) ``snr_db`` above a noise of power ``noise_power``."""
    # a numpy float64, as before this helper: the product with a float32 clip is then taken in float64
    return np.sqrt(noise_power * 10 ** (snr_db / 10) / (float(np.mean(speech**2)) + 1e-12))
