"""Google Speech Commands as kws10 (8 keywords + ``_unknown_`` + ``_silence_``) or gsc35, plus the
synthetic corpus of ``kws-synth``.

kws10 specifics:

* ``data.held_out_words`` are removed from every split: their real clips are the open-set evaluation,
  words the network never heard (``kws-synth`` leaves them out too).
* The synthetic corpus (``data.synth_root``): its training clips join the training split (keywords as
  keywords, everything else as ``_unknown_``); its validation clips (other words, other voices) are
  ``Dataset.extra["synthetic_validation"]``, kept apart so that validation accuracy stays a figure on
  real speech.
* ``data.keyword_clips_per_epoch > 0`` balances an epoch: that many draws of every keyword (of which
  ``data.synthetic_keyword_fraction`` synthetic; 0 = real and synthetic clips in one pool),
  ``data.unknown_clips_per_epoch`` of ``_unknown_`` of which ``data.synthetic_unknown_fraction`` are
  synthetic, plus non-speech clips for ``_silence_``.
* ``data.hard_negatives`` (a ``kws-mine`` file, ``training/hard_negatives.py``): stream windows a trained
  network answered with a keyword, drawn ``data.hard_negative_clips_per_epoch`` times an epoch in a pool of
  their own, with the labels the file gives them.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np

from model.features import FeatureConfig, fit_to_clip
from model.vocabulary import KWS10_KEYWORDS, KWS10_LABELS, SILENCE, UNKNOWN
from training.augment import write_noise_files
from training.clips import ClipSet, Dataset, DatasetMissingError, Pool, limit_per_class, read_audio
from training.config import AugmentConfig, DataConfig
from training.mined_windows import load as load_mined_windows

BACKGROUND_NOISE = "_background_noise_"
AUDIO_SUFFIXES = (".wav", ".flac")
SYNTH_MANIFEST = "manifest.csv"
HARD_NEGATIVE_PREFIX = "hard-negative/"


def _speaker_of(file_name: str) -> str:
    return Path(file_name).name.split("_nohash_")[0]


def _speaker_hash_fraction(speaker: str, salt: str) -> float:
    digest = hashlib.sha1(f"{salt}{speaker}".encode()).hexdigest()
    return int(digest[:8], 16) / 0xFFFFFFFF


def is_test_speaker(file_name: str, test_fraction: float) -> bool:
    """Whether a validation clip's speaker is in the held-out test part (``data.test_fraction``, by speaker hash)."""
    return _speaker_hash_fraction(_speaker_of(file_name), "test-holdout") < test_fraction


def is_evaluation_clip(row: dict[str, str]) -> bool:
    """Synthetic validation clips split in two — words by their text, keywords by clip (their voices are
    already unseen): one half chooses the thresholds (``kws-export --calibrate``), the other is only
    evaluated (``kws-robustness``)."""
    key = row["file"] if row["kind"] == "keyword" else row["text"]
    return _speaker_hash_fraction(key, "synthetic-evaluation") < 0.5


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


def noise_recordings(root: Path, sample_rate: int) -> dict[str, np.ndarray]:
    """The ``_background_noise_`` recordings by name (empty if the folder has none)."""
    folder = root / BACKGROUND_NOISE
    if not folder.is_dir():
        return {}
    return {p.stem: read_audio(p, sample_rate) for p in sorted(folder.iterdir()) if p.suffix in AUDIO_SUFFIXES}


def read_synthetic_manifest(root: Path) -> list[dict[str, str]]:
    manifest = root / SYNTH_MANIFEST
    if not manifest.exists():
        raise DatasetMissingError(f"synthetic corpus not found: {manifest} (make it with kws-synth --out {root})")
    with open(manifest, newline="") as handle:
        return list(csv.DictReader(handle))


def _waveforms(paths: list[Path], features: FeatureConfig) -> np.ndarray:
    clips = [fit_to_clip(read_audio(p, features.sample_rate), features) for p in paths]
    return np.stack(clips) if clips else np.zeros((0, features.clip_samples), np.float32)


def load_gsc(data: DataConfig, features: FeatureConfig, seed: int = 0, training: bool = True) -> Dataset:
    """The splits of ``data``; ``training=False`` leaves the training split empty (nothing of it is read, the
    synthetic corpus's training part and the hard negatives neither) for export and evaluation."""
    root = Path(data.root)
    if not root.is_dir():
        raise DatasetMissingError(f"Speech Commands folder not found: {root}")
    splits = gsc_file_splits(root)
    kws10 = data.task == "kws10"
    held_out = set(data.held_out_words)
    if kws10:
        labels = KWS10_LABELS
        label_of = {word: i for i, word in enumerate(KWS10_KEYWORDS)}
        unknown_index = labels.index(UNKNOWN)
        splits = {name: [(f, w) for f, w in items if w not in held_out] for name, items in splits.items()}
    else:
        labels = tuple(sorted({word for items in splits.values() for _, word in items}))
        label_of = {word: i for i, word in enumerate(labels)}
        unknown_index = None

    def labelled(items: list[tuple[str, str]]) -> list[tuple[str, int]]:
        return [(f, label_of.get(w, unknown_index)) for f, w in items]  # type: ignore[misc]

    rng = np.random.default_rng(seed)
    # drawn even when the training split is not loaded: the same generator then limits validation and test
    train_items = limit_per_class(labelled(splits["training"]), data.limit_per_class, rng)
    validation_items = labelled(splits["validation"])
    test_items = labelled(splits["testing"])
    if not test_items and data.test_fraction > 0:
        # The shared subset has no test speakers: move a speaker-hashed part of validation to test.
        is_test = [is_test_speaker(f, data.test_fraction) for f, _ in validation_items]
        test_items = [item for item, t in zip(validation_items, is_test) if t]
        validation_items = [item for item, t in zip(validation_items, is_test) if not t]
    if data.limit_per_class is not None:
        validation_items = limit_per_class(validation_items, max(1, data.limit_per_class // 4), rng)
        test_items = limit_per_class(test_items, max(1, data.limit_per_class // 4), rng)

    recordings = noise_recordings(root, features.sample_rate)
    cut = {name: int(len(n) * (1 - data.noise_holdout)) for name, n in recordings.items()}
    cache = Path(data.synth_root or ".cache") / "noise"
    noise_train = noise_validation = None
    if recordings:
        noise_train = write_noise_files([n[: cut[k]] for k, n in recordings.items()], list(recordings), features.sample_rate, cache)
        noise_validation = write_noise_files([n[cut[k]:] for k, n in recordings.items()], list(recordings),
                                             features.sample_rate, cache, seed=1)
    rooms = Path(data.synth_root) / "rooms" if data.synth_root else None

    def clip_set(items: list[tuple[str, int]], noise_dir: Path | None) -> ClipSet:
        return ClipSet(labels=np.array([label for _, label in items], dtype=np.int64), names=[f for f, _ in items],
                       waveforms=_waveforms([root / f for f, _ in items], features), feature_config=features,
                       noise_dir=noise_dir, rooms_dir=rooms)

    extra: dict[str, ClipSet] = {}
    train = clip_set(train_items if training else [], noise_train)
    near_miss_names: set[str] = set()
    if kws10 and data.synth_root:
        synth_root = Path(data.synth_root)
        rows = [r for r in read_synthetic_manifest(synth_root) if r["text"] not in held_out]
        for split in ("train", "validation") if training else ("validation",):
            part = [r for r in rows if r["split"] == split and not (split == "validation" and is_evaluation_clip(r))]
            if data.limit_per_class is not None:
                part = part[: data.limit_per_class]
            synthetic = ClipSet(
                labels=np.array([label_of.get(r["text"], unknown_index) if r["kind"] == "keyword" else unknown_index
                                 for r in part], dtype=np.int64),
                names=[f"synthetic/{r['file']}" for r in part],
                waveforms=_waveforms([synth_root / r["file"] for r in part], features), feature_config=features,
                noise_dir=noise_train if split == "train" else noise_validation, rooms_dir=rooms)
            if split == "train":
                train = _concatenate(train, synthetic)
                near_miss_names = {f"synthetic/{r['file']}" for r in part if r["kind"] == "near_miss"}
            else:
                extra["synthetic_calibration"] = synthetic
    if kws10 and data.hard_negatives and training:
        train = _concatenate(train, _hard_negative_clips(Path(data.hard_negatives), labels, train))
    speech_per_epoch = len(train)
    if kws10 and data.keyword_clips_per_epoch > 0 and training:
        synthetic = np.array([n.startswith("synthetic/") for n in train.names], dtype=bool)
        mined = np.array([n.startswith(HARD_NEGATIVE_PREFIX) for n in train.names], dtype=bool)
        draws = (data.keyword_clips_per_epoch, data.unknown_clips_per_epoch, data.near_miss_clips_per_epoch,
                 data.hard_negative_clips_per_epoch)
        if data.limit_per_class is not None:  # smoke tests: an epoch as small as the clips it draws from
            draws = tuple(min(d, data.limit_per_class) for d in draws)
        per_keyword, unknown_draws, near_miss_draws, mined_draws = draws
        synthetic_draws = int(round(per_keyword * data.synthetic_keyword_fraction))
        train.pools = []
        for i, word in enumerate(KWS10_KEYWORDS):
            if synthetic_draws:
                train.pools += [Pool(word, np.flatnonzero((train.labels == i) & ~synthetic), per_keyword - synthetic_draws),
                                Pool(f"synthetic {word}", np.flatnonzero((train.labels == i) & synthetic), synthetic_draws)]
            else:
                train.pools.append(Pool(word, np.flatnonzero(train.labels == i), per_keyword))
        synthetic_unknown = int(round(unknown_draws * data.synthetic_unknown_fraction))
        is_unknown = train.labels == unknown_index
        # with no near-miss draws the near-misses stay in the synthetic pool (theirs is then empty)
        near_miss = np.array([near_miss_draws > 0 and n in near_miss_names for n in train.names], dtype=bool)
        train.pools += [Pool("real unknown", np.flatnonzero(is_unknown & ~synthetic & ~mined),
                             unknown_draws - synthetic_unknown),
                        Pool("synthetic unknown", np.flatnonzero(is_unknown & synthetic & ~near_miss), synthetic_unknown),
                        Pool("synthetic near-miss", np.flatnonzero(is_unknown & near_miss), near_miss_draws),
                        Pool("hard negatives", np.flatnonzero(mined), mined_draws)]
        speech_per_epoch = train.epoch_size
    if kws10 and recordings:
        train.silence_label = labels.index(SILENCE)
        train.cut_label = labels.index(UNKNOWN)
        train.silence_per_epoch = int(round(speech_per_epoch * data.silence_fraction))
    validation = _with_silence(clip_set(validation_items, noise_validation), data, labels, seed + 1) if kws10 else clip_set(validation_items, noise_validation)
    test = None
    if test_items:
        test = clip_set(test_items, noise_validation)
        test = _with_silence(test, data, labels, seed + 2) if kws10 else test
    return Dataset(labels, train, validation, test, features.n_mels, f"Speech Commands {data.task} from {root}", extra)


def _hard_negative_clips(path: Path, labels: tuple[str, ...], like: ClipSet) -> ClipSet:
    """The windows of a ``kws-mine`` file as training clips (names ``hard-negative/<i>``)."""
    if not path.exists():
        raise DatasetMissingError(f"hard negatives not found: {path} (make them with kws-mine CHECKPOINT --out {path})")
    waveforms, window_labels, _ = load_mined_windows(path)
    foreign = sorted(set(window_labels) - set(labels))
    if foreign:
        raise ValueError(f"{path} labels windows {foreign}, which are not labels of this task")
    return ClipSet(labels=np.array([labels.index(label) for label in window_labels], dtype=np.int64),
                   names=[f"{HARD_NEGATIVE_PREFIX}{i}" for i in range(len(window_labels))], waveforms=waveforms,
                   feature_config=like.feature_config, noise_dir=like.noise_dir, rooms_dir=like.rooms_dir)


def _concatenate(a: ClipSet, b: ClipSet) -> ClipSet:
    assert a.waveforms is not None and b.waveforms is not None
    return ClipSet(labels=np.concatenate([a.labels, b.labels]), names=a.names + b.names,
                   waveforms=np.concatenate([a.waveforms, b.waveforms]), feature_config=a.feature_config,
                   noise_dir=a.noise_dir, rooms_dir=a.rooms_dir)


def _with_silence(clips: ClipSet, data: DataConfig, labels: tuple[str, ...], seed: int) -> ClipSet:
    """Adds fixed non-speech clips (``silence_fraction`` of the split) made from the held-out noise."""
    count = int(round(len(clips) * data.silence_fraction))
    if count == 0 or clips.noise_dir is None or clips.waveforms is None:
        return clips
    rng = np.random.default_rng(seed)
    augmenter = clips.augmenter(AugmentConfig(reverb_probability=0.0, eq_probability=0.0, lowpass_probability=0.0))
    silence = np.stack([augmenter.nonspeech(clips.waveforms.shape[1], rng) for _ in range(count)])
    return ClipSet(labels=np.concatenate([clips.labels, np.full(count, labels.index(SILENCE), np.int64)]),
                   names=clips.names + [f"{SILENCE}/{k}" for k in range(count)],
                   waveforms=np.concatenate([clips.waveforms, silence]), feature_config=clips.feature_config,
                   noise_dir=clips.noise_dir, rooms_dir=clips.rooms_dir)
