"""Splits as network inputs: :class:`ClipSet` turns indices into ``(batch, channels, T)`` arrays.

Speech is kept as fixed-length waveforms so that augmentation happens on audio, before the shared
front end (``model.features.log_mel``). An epoch is either every clip once, or — when the loader gives
``pools`` — a fixed number of draws from each pool (class balancing, real/synthetic mix), plus fresh
non-speech clips generated on the fly for the ``_silence_`` label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.features import FeatureConfig, log_mel
from training.augment import Augmenter, augment_spectrogram
from training.config import AugmentConfig


class DatasetMissingError(FileNotFoundError):
    """The data set's files are not where the configuration says."""


def read_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Mono float32 waveform at ``sample_rate`` (resampled with soxr if needed)."""
    import soundfile

    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != sample_rate:
        import soxr

        audio = soxr.resample(audio, rate, sample_rate, quality="HQ")
    return audio.astype(np.float32)


@dataclass
class Pool:
    """Indices of a ClipSet drawn ``per_epoch`` times an epoch (without replacement while they last)."""

    name: str
    indices: np.ndarray
    per_epoch: int

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        if len(self.indices) == 0 or self.per_epoch == 0:
            return np.zeros(0, dtype=np.int64)
        whole, rest = divmod(self.per_epoch, len(self.indices))
        parts = [rng.permutation(self.indices) for _ in range(whole)]
        parts.append(rng.choice(self.indices, rest, replace=False))
        return np.concatenate(parts)


@dataclass
class ClipSet:
    """A split: network inputs built on demand from waveforms (speech) or binned spikes (SHD/SSC)."""

    labels: np.ndarray  # (N,) int64
    names: list[str]
    waveforms: np.ndarray | None = None  # (N, samples) float32 speech clips
    frames: np.ndarray | None = None  # (N, channels, T) float32 precomputed inputs (spike counts)
    feature_config: FeatureConfig | None = None
    noise_dir: Path | None = None  # background noise files for augmentation and non-speech clips
    rooms_dir: Path | None = None  # room impulse responses for reverberation
    silence_label: int | None = None  # kws10: label of the non-speech clips drawn per epoch
    silence_per_epoch: int = 0
    cut_label: int | None = None  # kws10: _unknown_, whose clips augmentation may cut to a fragment of the word
    pools: list[Pool] | None = None  # per-epoch draws; None = every clip once
    _augmenters: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def epoch_size(self) -> int:
        speech = len(self) if self.pools is None else sum(p.per_epoch for p in self.pools if len(p.indices))
        return speech + self.silence_per_epoch

    def epoch_order(self, rng: np.random.Generator) -> np.ndarray:
        """Shuffled indices for one epoch; indices >= len(self) stand for fresh non-speech clips."""
        if self.pools is None:
            return rng.permutation(len(self) + self.silence_per_epoch)
        drawn = [pool.draw(rng) for pool in self.pools]
        silence = np.arange(len(self), len(self) + self.silence_per_epoch)
        return rng.permutation(np.concatenate([*drawn, silence]).astype(np.int64))

    def batch_labels(self, indices: np.ndarray) -> np.ndarray:
        silence = self.silence_label if self.silence_label is not None else -1
        return np.array([self.labels[i] if i < len(self) else silence for i in indices], dtype=np.int64)

    def augmenter(self, config: AugmentConfig) -> Augmenter:
        if config not in self._augmenters:
            assert self.feature_config is not None
            self._augmenters[config] = Augmenter(config, self.feature_config.sample_rate, self.noise_dir, self.rooms_dir)
        return self._augmenters[config]

    def batch_inputs(
        self, indices: np.ndarray, rng: np.random.Generator | None = None, augment: AugmentConfig | None = None
    ) -> np.ndarray:
        """``(batch, channels, T)`` float32 inputs; augmented when ``rng`` and an enabled ``augment`` are given."""
        if self.frames is not None:
            return self.frames[indices]
        assert self.waveforms is not None and self.feature_config is not None
        training = rng is not None and augment is not None and augment.enabled
        augmenter = self.augmenter(augment if augment is not None else AugmentConfig()) if rng is not None else None
        clips = []
        vtlp = np.ones(len(indices)) if training and augment.vtlp_probability > 0 else None
        for position, index in enumerate(indices):
            if index >= len(self):
                assert augmenter is not None and rng is not None, "non-speech clips are drawn only in training"
                clip = augmenter.nonspeech(self.waveforms.shape[1], rng)
            else:
                clip = self.waveforms[index]
                if training:
                    clip = augmenter.speech(clip, rng, cuttable=self.cut_label is not None and self.labels[index] == self.cut_label)
                    if vtlp is not None and rng.random() < augment.vtlp_probability:
                        vtlp[position] = rng.uniform(augment.vtlp_min, augment.vtlp_max)
            clips.append(clip)
        features = log_mel(np.stack(clips), self.feature_config, vtlp_factors=vtlp)
        if training:
            features = np.stack([augment_spectrogram(f, augment, rng) for f in features])
        return features


@dataclass
class Dataset:
    labels: tuple[str, ...]
    train: ClipSet
    validation: ClipSet
    test: ClipSet | None
    input_size: int
    description: str
    extra: dict[str, ClipSet] = field(default_factory=dict)  # e.g. synthetic validation clips (kws10)


def limit_per_class(items: list[tuple[str, int]], limit: int | None, rng: np.random.Generator) -> list[tuple[str, int]]:
    """At most ``limit`` items of each label, drawn at random (smoke tests)."""
    if limit is None:
        return items
    kept: list[tuple[str, int]] = []
    for label in sorted({label for _, label in items}):
        members = [item for item in items if item[1] == label]
        chosen = rng.permutation(len(members))[:limit]
        kept.extend(members[i] for i in sorted(chosen))
    return kept
