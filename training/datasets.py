"""Datasets: Google Speech Commands (kws10 / gsc35), FSDD, and the Heidelberg SHD / SSC spike files.

Every loader returns a :class:`Dataset`: the label list and the splits, each a
:class:`ClipSet` that turns indices into network inputs ``(batch, channels, T)``.
Speech is kept as fixed-length waveforms so that augmentation (shift, gain,
background noise) happens on audio before the shared log-mel front end.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.features import FeatureConfig, fit_to_clip, log_mel
from model.vocabulary import KWS10_KEYWORDS, KWS10_LABELS, SILENCE, UNKNOWN
from training.augment import augment_spectrogram, augment_waveform, random_noise_slice
from training.config import AugmentConfig, DataConfig

BACKGROUND_NOISE = "_background_noise_"
AUDIO_SUFFIXES = (".wav", ".flac")
SHD_CHANNELS = 700


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
class ClipSet:
    """A split: network inputs built on demand from waveforms (speech) or binned spikes (SHD/SSC)."""

    labels: np.ndarray  # (N,) int64
    names: list[str]
    waveforms: np.ndarray | None = None  # (N, samples) float32 speech clips
    frames: np.ndarray | None = None  # (N, channels, T) float32 precomputed inputs (spike counts)
    feature_config: FeatureConfig | None = None
    noise: list[np.ndarray] = field(default_factory=list)  # background recordings for mixing / silence
    silence_label: int | None = None  # kws10: label of the silence clips drawn per epoch
    silence_per_epoch: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    def epoch_order(self, rng: np.random.Generator) -> np.ndarray:
        """Shuffled indices for one epoch; indices >= len(self) stand for fresh silence clips."""
        return rng.permutation(len(self) + self.silence_per_epoch)

    def batch_labels(self, indices: np.ndarray) -> np.ndarray:
        silence = self.silence_label if self.silence_label is not None else -1
        return np.array([self.labels[i] if i < len(self) else silence for i in indices], dtype=np.int64)

    def batch_inputs(
        self, indices: np.ndarray, rng: np.random.Generator | None = None, augment: AugmentConfig | None = None
    ) -> np.ndarray:
        """``(batch, channels, T)`` float32 inputs; augmented when ``rng`` and an enabled ``augment`` are given."""
        if self.frames is not None:
            return self.frames[indices]
        assert self.waveforms is not None and self.feature_config is not None
        training = rng is not None and augment is not None and augment.enabled
        clips = []
        for index in indices:
            if index >= len(self):
                assert rng is not None, "silence clips are drawn only in training"
                clip = random_noise_slice(self.noise, self.waveforms.shape[1], rng) * rng.uniform(0.0, 1.0)
            else:
                clip = self.waveforms[index]
            if training:
                clip = augment_waveform(clip, self.feature_config.sample_rate, self.noise, augment, rng)
            clips.append(clip)
        features = log_mel(np.stack(clips), self.feature_config)
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


# -- Google Speech Commands ---------------------------------------------------------------------


def _speaker_of(file_name: str) -> str:
    return Path(file_name).name.split("_nohash_")[0]


def _speaker_hash_fraction(speaker: str, salt: str) -> float:
    digest = hashlib.sha1(f"{salt}{speaker}".encode()).hexdigest()
    return int(digest[:8], 16) / 0xFFFFFFFF


def gsc_file_splits(root: Path) -> dict[str, list[tuple[str, str]]]:
    """``split → [(relative file, word)]`` from ``manifest.csv`` (shared data) or the standard lists."""
    manifest = root / "manifest.csv"
    splits: dict[str, list[tuple[str, str]]] = {"training": [], "validation": [], "testing": []}
    if manifest.exists():
        with open(manifest, newline="") as handle:
            for row in csv.DictReader(handle):
                if row["split"] in splits:
                    splits[row["split"]].append((row["file"], row["word"]))
        return splits
    validation_list, testing_list = root / "validation_list.txt", root / "testing_list.txt"
    if not validation_list.exists() or not testing_list.exists():
        raise DatasetMissingError(
            f"{root} has neither manifest.csv nor validation_list.txt/testing_list.txt: not a Speech Commands folder"
        )
    held_out = {}
    for split, listing in (("validation", validation_list), ("testing", testing_list)):
        for line in listing.read_text().split():
            held_out[Path(line).with_suffix("").as_posix()] = split
    for word_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name != BACKGROUND_NOISE):
        for path in sorted(word_dir.iterdir()):
            if path.suffix in AUDIO_SUFFIXES:
                relative = path.relative_to(root).as_posix()
                split = held_out.get(Path(relative).with_suffix("").as_posix(), "training")
                splits[split].append((relative, word_dir.name))
    return splits


def _load_noise(root: Path, sample_rate: int) -> list[np.ndarray]:
    folder = root / BACKGROUND_NOISE
    if not folder.is_dir():
        return []
    return [read_audio(p, sample_rate) for p in sorted(folder.iterdir()) if p.suffix in AUDIO_SUFFIXES]


def _limit(items: list[tuple[str, int]], limit: int | None, rng: np.random.Generator) -> list[tuple[str, int]]:
    if limit is None:
        return items
    kept: list[tuple[str, int]] = []
    for label in sorted({label for _, label in items}):
        members = [item for item in items if item[1] == label]
        chosen = rng.permutation(len(members))[:limit]
        kept.extend(members[i] for i in sorted(chosen))
    return kept


def load_gsc(data: DataConfig, features: FeatureConfig, seed: int = 0) -> Dataset:
    root = Path(data.root)
    if not root.is_dir():
        raise DatasetMissingError(f"Speech Commands folder not found: {root}")
    splits = gsc_file_splits(root)
    if data.task == "kws10":
        labels = KWS10_LABELS
        label_of = {word: i for i, word in enumerate(KWS10_KEYWORDS)}
        unknown_index = labels.index(UNKNOWN)
    else:
        labels = tuple(sorted({word for items in splits.values() for _, word in items}))
        label_of = {word: i for i, word in enumerate(labels)}
        unknown_index = None

    def labelled(items: list[tuple[str, str]]) -> list[tuple[str, int]]:
        return [(f, label_of.get(w, unknown_index)) for f, w in items]  # type: ignore[misc]

    rng = np.random.default_rng(seed)
    train_items = _limit(labelled(splits["training"]), data.limit_per_class, rng)
    validation_items = labelled(splits["validation"])
    test_items = labelled(splits["testing"])
    if not test_items and data.test_fraction > 0:
        # The shared subset has no test speakers: move a speaker-hashed part of validation to test.
        is_test = [_speaker_hash_fraction(_speaker_of(f), "test-holdout") < data.test_fraction for f, _ in validation_items]
        test_items = [item for item, t in zip(validation_items, is_test) if t]
        validation_items = [item for item, t in zip(validation_items, is_test) if not t]
    if data.limit_per_class is not None:
        validation_items = _limit(validation_items, max(1, data.limit_per_class // 4), rng)
        test_items = _limit(test_items, max(1, data.limit_per_class // 4), rng)

    noise = _load_noise(root, features.sample_rate)
    cut = [int(len(n) * (1 - data.noise_holdout)) for n in noise]
    noise_train = [n[:c] for n, c in zip(noise, cut)]
    noise_validation = [n[c:] for n, c in zip(noise, cut)]

    def clip_set(items: list[tuple[str, int]], noise_part: list[np.ndarray], fixed_silence: int) -> ClipSet:
        waveforms = [fit_to_clip(read_audio(root / f, features.sample_rate), features) for f, _ in items]
        names = [f for f, _ in items]
        targets = [label for _, label in items]
        if fixed_silence and noise_part and data.task == "kws10":
            silence_rng = np.random.default_rng(seed + 1)
            for k in range(fixed_silence):
                clip = random_noise_slice(noise_part, features.clip_samples, silence_rng)
                waveforms.append(clip * silence_rng.uniform(0.0, 1.0))
                names.append(f"{SILENCE}/{k}")
                targets.append(labels.index(SILENCE))
        return ClipSet(
            labels=np.array(targets, dtype=np.int64),
            names=names,
            waveforms=np.stack(waveforms) if waveforms else np.zeros((0, features.clip_samples), np.float32),
            feature_config=features,
            noise=noise_part,
        )

    def silence_count(items: list) -> int:
        return int(round(len(items) * data.silence_fraction)) if data.task == "kws10" and noise else 0

    train = clip_set(train_items, noise_train, 0)
    if data.task == "kws10" and noise:
        train.silence_label = labels.index(SILENCE)
        train.silence_per_epoch = silence_count(train_items)
    validation = clip_set(validation_items, noise_validation, silence_count(validation_items))
    test = clip_set(test_items, noise_validation, silence_count(test_items)) if test_items else None
    return Dataset(labels, train, validation, test, features.n_mels, f"Speech Commands {data.task} from {root}")


# -- FSDD -------------------------------------------------------------------------------------------

FSDD_VALIDATION_INDICES = range(5, 10)  # carved out of the official train split for model selection


def load_fsdd(data: DataConfig, features: FeatureConfig, seed: int = 0) -> Dataset:
    root = Path(data.root)
    manifest = root / "manifest.csv"
    if manifest.exists():
        with open(manifest, newline="") as handle:
            rows = [(r["file"], int(r["digit"]), int(r["index"])) for r in csv.DictReader(handle)]
    elif (root / "recordings").is_dir():
        pattern = re.compile(r"(\d)_([a-z]+)_(\d+)\.(wav|flac)$")
        rows = [
            (f"recordings/{p.name}", int(m.group(1)), int(m.group(3)))
            for p in sorted((root / "recordings").iterdir())
            if (m := pattern.match(p.name))
        ]
    else:
        raise DatasetMissingError(f"FSDD folder not found or without recordings/: {root}")
    parts: dict[str, list[tuple[str, int]]] = {"train": [], "validation": [], "test": []}
    for file, digit, index in rows:
        split = "test" if index < 5 else "validation" if index in FSDD_VALIDATION_INDICES else "train"
        parts[split].append((file, digit))
    parts["train"] = _limit(parts["train"], data.limit_per_class, np.random.default_rng(seed))

    def clip_set(items: list[tuple[str, int]]) -> ClipSet:
        waveforms = [fit_to_clip(read_audio(root / f, features.sample_rate), features) for f, _ in items]
        return ClipSet(
            labels=np.array([d for _, d in items], dtype=np.int64), names=[f for f, _ in items],
            waveforms=np.stack(waveforms), feature_config=features,
        )

    labels = tuple(str(d) for d in range(10))
    return Dataset(labels, clip_set(parts["train"]), clip_set(parts["validation"]), clip_set(parts["test"]),
                   features.n_mels, f"FSDD from {root}")


# -- SHD / SSC --------------------------------------------------------------------------------------


def bin_spikes(times: np.ndarray, units: np.ndarray, data: DataConfig) -> np.ndarray:
    """Spike counts ``(700 / channel_bins, T)`` in ``spike_bin_ms`` bins over ``spike_duration_s``."""
    steps = int(round(data.spike_duration_s * 1000 / data.spike_bin_ms))
    channels = SHD_CHANNELS // data.spike_channel_bins
    frame = np.zeros((channels, steps), dtype=np.float32)
    step = np.floor(np.asarray(times, dtype=np.float64) * 1000 / data.spike_bin_ms).astype(np.int64)
    keep = step < steps
    np.add.at(frame, (np.asarray(units, dtype=np.int64)[keep] // data.spike_channel_bins, step[keep]), 1.0)
    return frame


def read_spike_file(path: Path, data: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Binned inputs ``(N, channels, T)`` and labels ``(N,)`` of one SHD/SSC HDF5 file."""
    import h5py

    with h5py.File(path, "r") as handle:
        times, units = handle["spikes"]["times"], handle["spikes"]["units"]
        labels = np.asarray(handle["labels"], dtype=np.int64)
        frames = np.stack([bin_spikes(times[i], units[i], data) for i in range(len(labels))])
    return frames, labels


def load_spikes(data: DataConfig, seed: int = 0) -> Dataset:
    """SHD (train/test; 10 % of train held out for validation) or SSC (train/valid/test)."""
    root = Path(data.root)
    prefix = data.task
    files = {split: root / f"{prefix}_{split}.h5" for split in ("train", "valid", "test")}
    for split in ("train", "test"):
        if not files[split].exists():
            raise DatasetMissingError(f"{files[split]} not found (download {prefix.upper()} from the Heidelberg archive)")
    train_frames, train_labels = read_spike_file(files["train"], data)
    if files["valid"].exists():
        valid_frames, valid_labels = read_spike_file(files["valid"], data)
    else:
        order = np.random.default_rng(seed).permutation(len(train_labels))
        held = order[: max(1, len(order) // 10)]
        rest = np.sort(order[len(held):])
        valid_frames, valid_labels = train_frames[np.sort(held)], train_labels[np.sort(held)]
        train_frames, train_labels = train_frames[rest], train_labels[rest]
    test_frames, test_labels = read_spike_file(files["test"], data)
    if data.limit_per_class is not None:
        keep = np.concatenate([np.flatnonzero(train_labels == c)[: data.limit_per_class] for c in np.unique(train_labels)])
        train_frames, train_labels = train_frames[np.sort(keep)], train_labels[np.sort(keep)]
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    labels = tuple(str(i) for i in range(num_classes))

    def clip_set(frames: np.ndarray, targets: np.ndarray, name: str) -> ClipSet:
        return ClipSet(labels=targets, names=[f"{name}/{i}" for i in range(len(targets))], frames=frames)

    return Dataset(labels, clip_set(train_frames, train_labels, "train"), clip_set(valid_frames, valid_labels, "valid"),
                   clip_set(test_frames, test_labels, "test"), train_frames.shape[1], f"{prefix.upper()} from {root}")


def load_dataset(data: DataConfig, features: FeatureConfig, seed: int = 0) -> Dataset:
    if data.task in ("kws10", "gsc35"):
        return load_gsc(data, features, seed)
    if data.task == "fsdd":
        return load_fsdd(data, features, seed)
    return load_spikes(data, seed)
