"""Log-mel front end shared by training, export and serving.

One definition of the features: the named constants below are the defaults of
:class:`FeatureConfig`, whose values travel inside every checkpoint and every
exported ONNX file, so the service computes exactly what the network was trained
on. The maths follows librosa's definitions (``librosa.filters.mel``: Slaney mel
scale and area normalisation; a periodic Hann window zero-padded to ``n_fft``;
centred frames zero-padded at both ends, librosa's default since 0.10) but runs
on numpy alone (scipy's FFT when installed), batched, and imports neither librosa nor torch. ``tests/test_features.py`` checks it against
``librosa.feature.melspectrogram``.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

try:  # scipy's FFT is several times faster than numpy's on the large batches of training; on the service's
    # one-clip inputs the two are on par, so the service image leaves scipy out (110 MB). Same spectrum to
    # float32 rounding (tests/test_features.py).
    from scipy.fft import rfft
except ImportError:  # pragma: no cover - exercised in the container
    from numpy.fft import rfft

from model.config_io import from_dict_strict

SAMPLE_RATE = 16_000
N_FFT = 512
WIN_LENGTH = 400  # 25 ms at 16 kHz
HOP_LENGTH = 160  # 10 ms at 16 kHz: one network time step per frame
N_MELS = 40
F_MIN = 20.0
F_MAX = 8_000.0
LOG_FLOOR = 1e-6  # added to the mel power before the log, so silence stays finite
CLIP_SECONDS = 1.0

# Level normalisation of the network input (FeatureConfig.normalization):
#   "none"          log(mel power + floor), as librosa computes it;
#   "channel_mean"  the same minus each mel channel's mean over the window (cepstral mean normalisation in
#                   the log-mel domain): a gain, or a fixed microphone response, is an additive constant per
#                   channel in the log domain and vanishes; stationary sounds (hum, steady tones) flatten.
#   "pcen"          librosa.pcen's per-channel energy normalisation of the mel power (an AGC per channel
#                   with a first-order smoother started at the window's first frame), then no log.
NORMALIZATIONS = ("none", "channel_mean", "pcen")
PCEN_TIME_CONSTANT_S = 0.4  # librosa.pcen's defaults
PCEN_GAIN = 0.98
PCEN_BIAS = 2.0
PCEN_POWER = 0.5
PCEN_EPS = 1e-6
# Vocal tract length perturbation (training only, AugmentConfig.vtlp_*): the warp is linear up to this
# frequency (times min(factor, 1) / factor), Jaitly & Hinton's 4.8 kHz; factors are rounded to a step so that
# a few dozen filterbanks, cached, serve every clip.
VTLP_BOUNDARY_HZ = 4_800.0
VTLP_FACTOR_STEP = 0.005
PCEN_INPUT_SCALE = 2.0**31  # librosa's advice for float audio in [-1, 1]: scale to the int32 range first


@dataclass(frozen=True)
class FeatureConfig:
    """Everything that defines the network's input; stored in checkpoints and ONNX metadata."""

    sample_rate: int = SAMPLE_RATE
    n_fft: int = N_FFT
    win_length: int = WIN_LENGTH
    hop_length: int = HOP_LENGTH
    n_mels: int = N_MELS
    f_min: float = F_MIN
    f_max: float = F_MAX
    log_floor: float = LOG_FLOOR
    clip_seconds: float = CLIP_SECONDS
    normalization: str = "none"  # one of NORMALIZATIONS

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization {self.normalization!r} is not one of {NORMALIZATIONS}")
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length {self.win_length} exceeds n_fft {self.n_fft}")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate/2, got {self.f_min}, {self.f_max}")

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def num_frames(self) -> int:
        """Frames (network time steps) of one clip: centred framing gives 1 + samples // hop."""
        return 1 + self.clip_samples // self.hop_length

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "FeatureConfig":
        return from_dict_strict(cls, values, "feature parameters")


def _hz_to_mel(frequencies: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, ``htk=False``): linear below 1 kHz, logarithmic above."""
    frequencies = np.asarray(frequencies, dtype=np.float64)
    mels = frequencies / _MEL_LINEAR_STEP
    log_region = frequencies >= _MEL_BREAK_HZ
    mels[log_region] = _MEL_BREAK + np.log(frequencies[log_region] / _MEL_BREAK_HZ) / _MEL_LOG_STEP
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    frequencies = mels * _MEL_LINEAR_STEP
    log_region = mels >= _MEL_BREAK
    frequencies[log_region] = _MEL_BREAK_HZ * np.exp(_MEL_LOG_STEP * (mels[log_region] - _MEL_BREAK))
    return frequencies


_MEL_LINEAR_STEP = 200.0 / 3  # Hz per mel below the break
_MEL_BREAK_HZ = 1000.0
_MEL_BREAK = _MEL_BREAK_HZ / _MEL_LINEAR_STEP
_MEL_LOG_STEP = np.log(6.4) / 27.0


def vtlp_warp(frequencies: np.ndarray, factor: float, nyquist: float) -> np.ndarray:
    """Vocal tract length perturbation's frequency warp (Jaitly & Hinton 2013): ``f -> factor * f`` up to a
    boundary, then the straight line that keeps the Nyquist frequency in place, so no band leaves the spectrum."""
    frequencies = np.asarray(frequencies, dtype=np.float64)
    boundary = VTLP_BOUNDARY_HZ * min(factor, 1.0) / factor
    upper = nyquist - (nyquist - VTLP_BOUNDARY_HZ * min(factor, 1.0)) / (nyquist - boundary) * (nyquist - frequencies)
    return np.where(frequencies <= boundary, factor * frequencies, upper)


def mel_filterbank(config: FeatureConfig, vtlp_factor: float = 1.0) -> np.ndarray:
    """``(n_mels, 1 + n_fft // 2)`` triangular filters with Slaney area normalisation (``librosa.filters.mel``).

    ``vtlp_factor`` != 1 (training augmentation only) evaluates the filters at :func:`vtlp_warp` of the FFT
    frequencies: what the spectrum holds at ``f`` is read as if it were at ``factor * f``, as from a speaker
    whose formants all sit ``factor`` times higher (a shorter vocal tract).
    """
    fft_frequencies = np.linspace(0, config.sample_rate / 2, 1 + config.n_fft // 2)
    if vtlp_factor != 1.0:
        fft_frequencies = vtlp_warp(fft_frequencies, vtlp_factor, config.sample_rate / 2)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array([config.f_min]))[0], _hz_to_mel(np.array([config.f_max]))[0],
                                   config.n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_frequencies[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


def analysis_window(config: FeatureConfig) -> np.ndarray:
    """Periodic Hann window of ``win_length`` zero-padded to ``n_fft`` at the centre (librosa's STFT window)."""
    n = np.arange(config.win_length)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / config.win_length)
    left = (config.n_fft - config.win_length) // 2
    return np.pad(window, (left, config.n_fft - config.win_length - left)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _analysis_tables(config: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    return analysis_window(config), mel_filterbank(config)


@functools.lru_cache(maxsize=256)
def _warped_filterbank(config: FeatureConfig, vtlp_factor: float) -> np.ndarray:
    return mel_filterbank(config, vtlp_factor)


def fit_to_clip(waveform: np.ndarray, config: FeatureConfig, offset: int | None = None) -> np.ndarray:
    """Crop or zero-pad a mono waveform to exactly one clip.

    Longer inputs are cropped at ``offset`` (default: centred); shorter ones are
    padded symmetrically, which keeps the word where a 1-s recording puts it.
    """
    target = config.clip_samples
    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.ndim != 1:
        raise ValueError(f"expected a mono waveform, got shape {waveform.shape}")
    excess = waveform.shape[0] - target
    if excess > 0:
        start = excess // 2 if offset is None else int(np.clip(offset, 0, excess))
        return waveform[start : start + target]
    if excess < 0:
        before = -excess // 2
        return np.pad(waveform, (before, -excess - before))
    return waveform


def log_mel(waveforms: np.ndarray, config: FeatureConfig, vtlp_factors: np.ndarray | None = None) -> np.ndarray:
    """The network's input: the log-mel power spectrogram, level-normalised as ``config.normalization`` says.

    Args:
        waveforms: ``(samples,)`` or ``(batch, samples)`` float audio at ``config.sample_rate``.
        vtlp_factors: training augmentation only: ``(batch,)`` warp factors, one per clip, for
            :func:`mel_filterbank` (rounded to ``VTLP_FACTOR_STEP``); ``None`` (serving, export) is factor 1.
    Returns:
        float32 ``(n_mels, frames)`` or ``(batch, n_mels, frames)``: ``log(mel_power + log_floor)``, minus its
        per-channel mean over the frames for ``channel_mean``; ``pcen`` returns :func:`pcen` of the mel power.
    """
    waveforms = np.asarray(waveforms, dtype=np.float32)
    single = waveforms.ndim == 1
    batch = waveforms[None] if single else waveforms
    if batch.ndim != 2:
        raise ValueError(f"expected (samples,) or (batch, samples), got shape {waveforms.shape}")
    window, mel_basis = _analysis_tables(config)
    pad = config.n_fft // 2
    padded = np.pad(batch, ((0, 0), (pad, pad)))  # librosa >= 0.10 centres with zeros
    frames = np.lib.stride_tricks.sliding_window_view(padded, config.n_fft, axis=1)[:, :: config.hop_length]
    spectrum = rfft(frames * window, n=config.n_fft, axis=-1)
    power = spectrum.real.astype(np.float32) ** 2 + spectrum.imag.astype(np.float32) ** 2
    if vtlp_factors is None:
        mel = np.matmul(power, mel_basis.T).transpose(0, 2, 1)
    else:
        factors = np.round(np.asarray(vtlp_factors, np.float64).reshape(-1) / VTLP_FACTOR_STEP) * VTLP_FACTOR_STEP
        if len(factors) != len(batch):
            raise ValueError(f"{len(factors)} vtlp_factors for {len(batch)} waveforms")
        mel = np.empty((len(batch), config.n_mels, power.shape[1]), np.float32)
        for factor in np.unique(factors):
            rows = factors == factor
            basis = mel_basis if factor == 1.0 else _warped_filterbank(config, float(factor))
            mel[rows] = np.matmul(power[rows], basis.T).transpose(0, 2, 1)
    if config.normalization == "pcen":
        features = pcen(mel, config)
    else:
        features = np.log(mel + np.float32(config.log_floor))
        if config.normalization == "channel_mean":
            features = features - features.mean(axis=-1, keepdims=True)
    return features[0] if single else features


def pcen(mel_power: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """librosa.pcen (its default constants) of ``(..., n_mels, frames)`` mel power, over the last axis.

    ``M[t] = (1 - b) M[t-1] + b E[t]`` with ``M`` started in the steady state of the first frame (librosa's
    ``zi``), then ``(E / (eps + M)^gain + bias)^power - bias^power``. ``tests/test_features.py`` checks it
    against ``librosa.pcen``.
    """
    energy = mel_power.astype(np.float32) * np.float32(PCEN_INPUT_SCALE)
    t_frames = PCEN_TIME_CONSTANT_S * config.sample_rate / config.hop_length
    b = np.float32((np.sqrt(1 + 4 * t_frames**2) - 1) / (2 * t_frames**2))
    smooth = np.empty_like(energy)
    state = energy[..., 0]
    for t in range(energy.shape[-1]):
        state = (1 - b) * state + b * energy[..., t]
        smooth[..., t] = state
    # librosa computes the ratio as exp(-gain * (log(eps) + log1p(M / eps))) for stability; same value.
    ratio = energy * np.exp(-PCEN_GAIN * (np.log(np.float32(PCEN_EPS)) + np.log1p(smooth / np.float32(PCEN_EPS))))
    return (np.power(ratio + np.float32(PCEN_BIAS), np.float32(PCEN_POWER)) - np.float32(PCEN_BIAS**PCEN_POWER)).astype(np.float32)
