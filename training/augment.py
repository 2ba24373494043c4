"""Augmentation on audio, with audiomentations, plus SpecAugment masks on the features.

:class:`Augmenter` holds two chains:

* **speech** (real and synthetic clips alike, so nothing but the words tells them apart): speed
  perturbation (resampling: tempo and pitch together, Kaldi's recipe for speaker variety), time shift
  (with ``shift_keeps_word`` anywhere the word stays whole in the window, as a stream window may hold it;
  ``_unknown_`` clips are sometimes cut to a fragment of their word, as stream windows hold fragments too),
  room reverberation (impulse responses from ``kws-synth``'s bank), a random seven-band EQ and low-pass
  (microphones, 8-kHz sources), background noise at a random SNR, a faint coloured-noise floor (so that
  digital zeros are not a cue), a random gain over a wide range, and
  clipping to ±1 as an ADC would;
* **non-speech** (the ``_silence_`` class): background noise at an absolute level anywhere from near
  digital silence to full scale, sometimes two noises mixed, sometimes in bursts, through the same room,
  EQ and clipping; a few clips are left digitally silent.

Noise files are the training part of the recordings (written once as WAV into a cache folder, so the
library seeks in them instead of decoding whole FLAC files) plus coloured noises. audiomentations draws
from Python's and numpy's global generators: each call reseeds them from the caller's generator, so a
run stays reproducible from its seed.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np

from model.speech import speech_extent
from training.config import AugmentConfig

NOISE_FILE_SECONDS = 60.0
COLOURED_NOISES = {"white": 0.0, "pink": -3.01, "brown": -6.02, "blue": 3.01, "violet": 6.02}  # dB per octave


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


def coloured_noise(length: int, decay_db_per_octave: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise whose power falls by ``decay`` dB per octave, at unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    frequencies = np.arange(1, len(spectrum) + 1, dtype=np.float64)
    spectrum *= frequencies ** (decay_db_per_octave / (20 * np.log10(2)))
    noise = np.fft.irfft(spectrum, n=length)
    return (noise / np.sqrt(np.mean(noise**2))).astype(np.float32)


def write_noise_files(noise: list[np.ndarray], names: list[str], sample_rate: int, cache: Path, seed: int = 0) -> Path:
    """The recordings plus coloured noises as WAV files in a folder keyed by their content; the folder."""
    import soundfile

    digest = hashlib.sha1(b"".join(n.tobytes()[:4096] + str(len(n)).encode() for n in noise) + str(sample_rate).encode())
    folder = cache / digest.hexdigest()[:12]
    if (folder / "complete").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for recording, name in zip(noise, names):
        soundfile.write(str(folder / f"{name}.wav"), recording, sample_rate, subtype="FLOAT")
    rng = np.random.default_rng(seed)
    length = int(NOISE_FILE_SECONDS * sample_rate)
    for name, decay in COLOURED_NOISES.items():
        soundfile.write(str(folder / f"coloured_{name}.wav"), 0.1 * coloured_noise(length, decay, rng), sample_rate,
                        subtype="FLOAT")
    (folder / "complete").touch()
    return folder


def word_shift(clip: np.ndarray, rate: int, max_shift_s: float, cut: bool, rng: np.random.Generator) -> int:
    """A shift (samples) that keeps the word whole inside the window, or with ``cut`` one that moves 30-70 %
    of it out of one side (the word's extent: :func:`model.speech.speech_extent`)."""
    begin, end = speech_extent(clip, rate)
    if cut:
        leaving = int(rng.uniform(0.3, 0.7) * (end - begin))
        return -(begin + leaving) if rng.random() < 0.5 else len(clip) - end + leaving
    reach = int(max_shift_s * rate)
    return int(rng.integers(max(-begin, -reach), min(len(clip) - end, reach) + 1))


def speed_perturb(clip: np.ndarray, factor: float) -> np.ndarray:
    """Play ``factor`` times faster (tempo and pitch together) by resampling, as Kaldi's speed perturbation."""
    import soxr

    if factor == 1.0:
        return clip
    return soxr.resample(clip, 16_000 * factor, 16_000, quality="HQ").astype(np.float32)


def burst_envelope(length: int, rng: np.random.Generator) -> np.ndarray:
    """1-4 bursts of 30-400 ms with soft edges: impacts, rustles, a door."""
    envelope = np.zeros(length, np.float32)
    for _ in range(int(rng.integers(1, 5))):
        width = int(rng.uniform(0.03, 0.4) * 16_000)
        start = int(rng.integers(-width // 2, length))
        shape = np.hanning(width).astype(np.float32) ** rng.uniform(0.3, 2.0)
        lo, hi = max(0, start), min(length, start + width)
        if hi > lo:
            envelope[lo:hi] = np.maximum(envelope[lo:hi], shape[lo - start : hi - start])
    return envelope


class Augmenter:
    """The speech and non-speech chains of one training set (see the module docstring)."""

    def __init__(self, config: AugmentConfig, sample_rate: int, noise_dir: Path | None = None,
                 rooms_dir: Path | None = None) -> None:
        import audiomentations as A

        self.config = config
        self.sample_rate = sample_rate
        has_noise = noise_dir is not None and any(noise_dir.glob("*.wav"))
        rooms = sorted(rooms_dir.glob("*.wav")) if rooms_dir is not None and rooms_dir.is_dir() else []
        shared: list = []
        if rooms and config.reverb_probability > 0:
            shared.append(A.ApplyImpulseResponse(rooms, p=config.reverb_probability, lru_cache_size=len(rooms)))
        if config.eq_probability > 0:
            shared.append(A.SevenBandParametricEQ(-config.eq_gain_db, config.eq_gain_db, p=config.eq_probability))
        if config.lowpass_probability > 0:
            shared.append(A.LowPassFilter(3000.0, 7500.0, p=config.lowpass_probability))
        gain_min = -config.gain_db if config.gain_db_min is None else config.gain_db_min
        gain_max = config.gain_db if config.gain_db_max is None else config.gain_db_max
        plain_shift = config.time_shift_s > 0 and not config.shift_keeps_word
        speech: list = [A.Shift(-config.time_shift_s, config.time_shift_s, shift_unit="seconds", rollover=False,
                                p=1.0 if plain_shift else 0.0), *shared]
        if has_noise and config.noise_probability > 0:
            speech.append(A.AddBackgroundNoise(noise_dir, config.snr_db_min, config.snr_db_max,
                                               p=config.noise_probability))
        if config.colored_noise_probability > 0:
            speech.append(A.AddColorNoise(20.0, 50.0, p=config.colored_noise_probability))
        speech += [A.Gain(gain_min, gain_max, p=1.0), A.Clip(-1.0, 1.0, p=1.0)]
        self.speech_chain = A.Compose(speech)
        nonspeech: list = []
        if has_noise:
            level = dict(noise_rms="absolute", min_absolute_rms_db=config.silence_level_db_min,
                         max_absolute_rms_db=config.silence_level_db_max)
            nonspeech += [A.AddBackgroundNoise(noise_dir, p=1.0 - config.digital_silence_probability, **level),
                          A.AddBackgroundNoise(noise_dir, p=config.noise_mix_probability, **level)]
        self.nonspeech_chain = A.Compose([*nonspeech, *shared, A.Clip(-1.0, 1.0, p=1.0)])

    def _reseed(self, rng: np.random.Generator) -> None:
        seed = int(rng.integers(2**31))
        random.seed(seed)
        np.random.seed(seed)

    def speech(self, clip: np.ndarray, rng: np.random.Generator, cuttable: bool = False) -> np.ndarray:
        """The speech chain; ``cuttable`` clips (``_unknown_``) may lose part of their word (``cut_word_probability``)."""
        length = len(clip)
        if self.config.speed_probability > 0 and rng.random() < self.config.speed_probability:
            factor = float(np.exp(rng.uniform(np.log(self.config.speed_min), np.log(self.config.speed_max))))
            stretched = speed_perturb(clip, factor)
            start = max(0, (len(stretched) - length) // 2)
            clip = np.pad(stretched[start : start + length], (0, max(0, length - len(stretched) + start)))
        cut = cuttable and rng.random() < self.config.cut_word_probability
        if cut or (self.config.shift_keeps_word and self.config.time_shift_s > 0):
            clip = time_shift(clip, word_shift(clip, self.sample_rate, self.config.time_shift_s, cut, rng))
        self._reseed(rng)
        return self.speech_chain(clip.astype(np.float32), self.sample_rate).astype(np.float32)

    def nonspeech(self, length: int, rng: np.random.Generator) -> np.ndarray:
        self._reseed(rng)
        clip = self.nonspeech_chain(np.zeros(length, np.float32), self.sample_rate)
        if rng.random() < self.config.burst_probability:
            clip = clip * burst_envelope(length, rng)
        return np.clip(clip, -1.0, 1.0).astype(np.float32)


def augment_spectrogram(features: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """SpecAugment-style frequency and time masks, filled with the clip's mean feature value."""
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
