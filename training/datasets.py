"""Datasets: Google Speech Commands (kws10 / gsc35, in ``training.speech_commands``), FSDD, and the
Heidelberg SHD / SSC spike files.

Every loader returns a :class:`~training.clips.Dataset`: the label list and the splits, each a
:class:`~training.clips.ClipSet` that turns indices into network inputs ``(batch, channels, T)``.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from model.features import FeatureConfig, fit_to_clip
from model.vocabulary import KWS10_KEYWORDS, KWS10_LABELS, SILENCE, UNKNOWN  # noqa: F401 - re-exported
from training.clips import ClipSet, Dataset, DatasetMissingError, limit_per_class, read_audio  # noqa: F401
from training.config import DataConfig
from training.speech_commands import (  # noqa: F401 - re-exported for benchmarks and tests
    BACKGROUND_NOISE, _speaker_hash_fraction, _speaker_of, gsc_file_splits, load_gsc,
)

SHD_CHANNELS = 700


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
    parts["train"] = limit_per_class(parts["train"], data.limit_per_class, np.random.default_rng(seed))

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


def load_dataset(data: DataConfig, features: FeatureConfig, seed: int = 0, training: bool = True) -> Dataset:
    """The task's splits. ``training=False``: the validation and test splits only (Speech Commands leaves the
    training split empty and reads none of its files; the small FSDD and spike sets load whole)."""
    if data.task in ("kws10", "gsc35"):
        return load_gsc(data, features, seed, training)
    if data.task == "fsdd":
        return load_fsdd(data, features, seed)
    return load_spikes(data, seed)
