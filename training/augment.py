"""Speech augmentation: time shift, gain, background noise at a random SNR, SpecAugment masks."""

from __future__ import annotations

import numpy as np

from training.config import AugmentConfig


def random_noise_slice(noise: list[np.ndarray], length: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``length``-sample slice of a random background recording (zeros if there is none)."""
    usable = [n for n in noise if len(n) >= length]
    if not usable:
        return np.zeros(length, dtype=np.float32)
    recording = usable[rng.integers(len(usable))]
    start = rng.integers(0, len(recording) - length + 1)
    return recording[start : start + length].astype(np.float32)


def time_shift(clip: np.ndarray, shift: int) -> np.ndarray:
    """Shift right (positive) or left with zero fill."""
    if shift == 0:
        return clip
    shifted = np.zeros_like(clip)
    if shift > 0:
        shifted[shift:] = clip[:-shift]
    else:
        shifted[:shift] = clip[-shift:]
    return shifted


def augment_waveform(
    clip: np.ndarray, sample_rate: int, noise: list[np.ndarray], config: AugmentConfig, rng: np.random.Generator
) -> np.ndarray:
    max_shift = int(config.time_shift_s * sample_rate)
    if max_shift:
        clip = time_shift(clip, int(rng.integers(-max_shift, max_shift + 1)))
    clip = clip * np.float32(10 ** (rng.uniform(-config.gain_db, config.gain_db) / 20))
    if noise and rng.random() < config.noise_probability:
        background = random_noise_slice(noise, len(clip), rng)
        signal_power = float(np.mean(clip**2))
        noise_power = float(np.mean(background**2))
        if signal_power > 1e-10 and noise_power > 1e-12:
            snr_db = rng.uniform(config.snr_db_min, config.snr_db_max)
            clip = clip + background * np.float32(np.sqrt(signal_power / (noise_power * 10 ** (snr_db / 10))))
    return clip.astype(np.float32)


def augment_spectrogram(features: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """SpecAugment-style frequency and time masks, filled with the clip's mean log-mel value."""
    features = features.copy()
    fill = features.mean()
    n_mels, frames = features.shape
    for _ in range(config.freq_masks):
        width = int(rng.integers(0, config.freq_mask_width + 1))
        start = int(rng.integers(0, max(1, n_mels - width)))
        features[start : start + width, :] = fill
    for _ in range(config.time_masks):
        width = int(rng.integers(0, config.time_mask_width + 1))
        start = int(rng.integers(0, max(1, frames - width)))
        features[:, start : start + width] = fill
    return features
