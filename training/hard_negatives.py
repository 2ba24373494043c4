"""Hard negatives: the windows of long negative streams that a trained network takes for a keyword.

A stream window is not a training clip. It holds the end of one word and the start of the next, a word
at any offset, a fragment, or only noise; the false alarms of ``WS /v1/stream`` fall on such windows
(``kws-robustness``'s ``false_alarms_by_source``: background noise, digits, near-misses). ``kws-mine``
finds them the way bootstrapped detectors always have: it builds streams from **training material
only** (GSC training clips of words that are neither keywords nor held out, the synthetic corpus's
training negatives), densely (a word every 0.1-1.2 s after the last, so windows straddle words as they
do live), over the training part of the noise recordings, each word at a random SNR and each stream at
a random level; it scores every 1-s window (hop 0.1 s) with the checkpoint's network as shipped
(rounded delays) and keeps the windows that it answers with a keyword, most confident first, at most
one per ``SUPPRESSION_S``. Each is labelled by what it holds: ``_unknown_`` when a word overlaps it,
``_silence_`` when only noise does. Training draws them as a pool of their own
(``data.hard_negatives``, ``data.hard_negative_clips_per_epoch``), through the same augmentation as
speech. Nothing of the evaluation (validation speakers, held-out words, the synthetic validation words,
FSDD, the held-out noise) enters a stream.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from model.speech import gain_for_snr, noise_bed, speech_extent
from model.vocabulary import KWS10_KEYWORDS, SILENCE, UNKNOWN
from training.clips import read_audio
from training.mined_windows import save

HOP_S = 0.1
SUPPRESSION_S = 0.5  # windows kept from one stream are at least this far apart (one per false alarm)
GAP_S = (0.1, 1.2)  # silence between consecutive words
SNR_DB = (0.0, 20.0)
STREAM_GAIN_DB = (-30.0, 10.0)
NOISE_RMS = (0.003, 0.03)
WORD_OVERLAP_S = 0.05  # a window holding this much of a word is _unknown_, otherwise _silence_
SCORE_BATCH = 256
REAL_SOURCE = "GSC word"


@dataclass(frozen=True)
class MiningPlan:
    minutes: int
    count: int
    seed: int
    synthetic_fraction: float


@dataclass
class Stream:
    samples: np.ndarray
    words: list[tuple[float, float, str]]  # (start s, end s, source) of each word's speech


def training_material(data, rate: int) -> tuple[list[tuple[np.ndarray, str]], list[tuple[np.ndarray, str]], list[np.ndarray]]:
    """(real words, synthetic words, noise recordings) of the training split: (clip, source) pairs."""
    from training.speech_commands import noise_recordings, read_synthetic_manifest

    root, held_out = Path(data.root), set(data.held_out_words)
    with open(root / "manifest.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "training" and r["word"] not in held_out
                and r["word"] not in KWS10_KEYWORDS]
    real = [(read_audio(root / r["file"], rate), f"{REAL_SOURCE} {r['word']}") for r in rows]
    synthetic: list[tuple[np.ndarray, str]] = []
    if data.synth_root:  # a missing corpus is an error: the streams would silently lose half their words
        synth_root = Path(data.synth_root)
        synthetic = [(read_audio(synth_root / r["file"], rate), f"synthetic {r['kind']}")
                     for r in read_synthetic_manifest(synth_root)
                     if r["split"] == "train" and r["kind"] != "keyword" and r["text"] not in held_out]
    noises = [n[: int(len(n) * (1 - data.noise_holdout))] for n in noise_recordings(root, rate).values()]
    return real, synthetic, noises


def build_stream(words: list[tuple[np.ndarray, str]], noise: np.ndarray, seconds: float, rate: int,
                 rng: np.random.Generator) -> Stream:
    """``words`` one after another over ``noise``, each trimmed to its speech and at a random SNR."""
    length = int(seconds * rate)
    background = noise_bed(noise, length, NOISE_RMS, rng)
    noise_power = float(np.mean(background**2))
    samples, placed = background.copy(), []
    cursor = int(rng.uniform(*GAP_S) * rate)
    for clip, source in words:
        begin, end = speech_extent(clip, rate)
        speech = clip[begin:end]
        if cursor + len(speech) > length:
            break
        gain = gain_for_snr(speech, noise_power, rng.uniform(*SNR_DB))
        samples[cursor : cursor + len(speech)] += gain * speech
        placed.append((cursor / rate, (cursor + len(speech)) / rate, source))
        cursor += len(speech) + int(rng.uniform(*GAP_S) * rate)
    samples *= np.float32(10 ** (rng.uniform(*STREAM_GAIN_DB) / 20))
    return Stream(np.clip(samples, -1.0, 1.0), placed)


def window_scores(network, windows: np.ndarray, feature_config) -> np.ndarray:
    """The network's class scores (rounded delays, eval mode) of ``(N, samples)`` windows."""
    import torch

    from model.features import log_mel
    from model.network import class_scores

    network.eval()
    scores = []
    with torch.no_grad():
        for start in range(0, len(windows), SCORE_BATCH):
            features = torch.from_numpy(log_mel(windows[start : start + SCORE_BATCH], feature_config))
            scores.append(class_scores(network(features, discrete_delays=True).potentials).numpy())
    return np.concatenate(scores) if scores else np.zeros((0, 0), np.float32)


def keyword_windows(stream: Stream, scores: np.ndarray, labels: tuple[str, ...], window_s: float,
                    rate: int) -> list[tuple[float, int, str, str]]:
    """(score, first sample, label, source) of the windows answered with a keyword, one per SUPPRESSION_S."""
    keyword_index = np.array([label in KWS10_KEYWORDS for label in labels])
    top = scores.argmax(axis=1)
    candidates = np.flatnonzero(keyword_index[top])
    chosen: list[int] = []
    for index in candidates[np.argsort(-scores[candidates, top[candidates]])]:
        if all(abs(int(index) - other) * HOP_S >= SUPPRESSION_S for other in chosen):
            chosen.append(int(index))
    found = []
    for index in chosen:
        start = index * HOP_S
        overlapping = [source for begin, end, source in stream.words
                       if min(end, start + window_s) - max(begin, start) >= WORD_OVERLAP_S]
        label = UNKNOWN if overlapping else SILENCE
        found.append((float(scores[index, top[index]]), int(round(start * rate)), label,
                      overlapping[0] if overlapping else "background noise"))
    return found


def mine(checkpoint_path: Path, plan: MiningPlan, data_overrides: dict | None = None, progress: bool = True) -> dict:
    """The mined windows and what they are: ``waveforms`` (N, samples) float32, ``labels``, ``sources``,
    ``scores``, and the ``report`` (how many windows were scored and how many answered with a keyword).
    The data are the checkpoint's own (its stored data config), with ``data_overrides`` on top."""
    from dataclasses import replace

    from tqdm import tqdm

    from model.checkpoint import load_checkpoint
    from training.config import ExperimentConfig

    checkpoint = load_checkpoint(checkpoint_path)
    data = replace(ExperimentConfig.from_dict(checkpoint.training["config"]).data, **(data_overrides or {}))
    if data.task != "kws10":
        raise ValueError(f"{checkpoint_path} is a {data.task} network: kws-mine mines for kws10 (keywords against the rest)")
    features = checkpoint.feature_config
    rate, window = features.sample_rate, features.clip_samples
    real, synthetic, noises = training_material(data, rate)
    if not real or not noises:
        raise FileNotFoundError(f"no training words or noise recordings under {data.root}")
    rng = np.random.default_rng(plan.seed)
    found: list[tuple[float, np.ndarray, str, str]] = []
    scored = answered = 0
    hop = int(HOP_S * rate)
    for minute in tqdm(range(plan.minutes), desc="mining", unit="min", disable=not progress):
        words = []
        for _ in range(60):  # more than a minute holds; the stream takes what fits
            pool = synthetic if synthetic and rng.random() < plan.synthetic_fraction else real
            words.append(pool[int(rng.integers(len(pool)))])
        stream = build_stream(words, noises[minute % len(noises)], 60.0, rate, rng)
        starts = np.arange(0, len(stream.samples) - window + 1, hop)
        windows = np.stack([stream.samples[s : s + window] for s in starts])
        scores = window_scores(checkpoint.model, windows, features)
        scored += len(windows)
        hits = keyword_windows(stream, scores, tuple(checkpoint.labels), features.clip_seconds, rate)
        answered += len(hits)
        found += [(score, stream.samples[first : first + window].copy(), label, source)
                  for score, first, label, source in hits]
    found.sort(key=lambda item: -item[0])
    kept = found[: plan.count]
    # by kind of source: one GSC word is too fine a kind
    sources = Counter(REAL_SOURCE if source.startswith(REAL_SOURCE) else source for _, _, _, source in kept)
    report = {"checkpoint": str(checkpoint_path), "model": checkpoint.name,
              "plan": asdict(plan), "windows_scored": scored, "answered_with_a_keyword": answered,
              "answered_per_hour": round(answered / (plan.minutes / 60), 1), "kept": len(kept),
              "kept_labels": {label: sum(item[2] == label for item in kept) for label in (UNKNOWN, SILENCE)},
              "kept_by_source": dict(sources.most_common()),
              "lowest_kept_score": round(kept[-1][0], 4) if kept else None}
    return {"waveforms": np.stack([item[1] for item in kept]) if kept else np.zeros((0, window), np.float32),
            "labels": [item[2] for item in kept], "sources": [item[3] for item in kept],
            "scores": np.array([item[0] for item in kept], np.float32), "report": report}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="kws-mine",
        description="Mine hard negatives for kws10: build negative streams from training material only, score "
                    "every 1-s window with a checkpoint's network, keep the windows it answers with a keyword "
                    "(labelled by what they hold: a word that is no keyword, or only noise). Train on them with "
                    "--set data.hard_negatives=FILE --set data.hard_negative_clips_per_epoch=N.",
        epilog="example: kws-mine artifacts/kws10/model.pt --minutes 240 --count 4000 "
               "--out .cache/hard_negatives/kws10-2.1.0.npz",
    )
    parser.add_argument("checkpoint", type=Path, help="a kws10 checkpoint (its data config says where the data is)")
    parser.add_argument("--out", type=Path, required=True, help="the .npz file to write")
    parser.add_argument("--minutes", type=int, default=240, help="minutes of negative streams to score (default 240)")
    parser.add_argument("--count", type=int, default=4000, help="keep at most this many windows, most confident first")
    parser.add_argument("--synthetic-fraction", type=float, default=0.5, help="share of synthetic words in the streams")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="data.KEY=VALUE",
                        help="override the checkpoint's data config, e.g. data.root=... or data.synth_root= (none)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.minutes < 1 or args.count < 1 or not 0.0 <= args.synthetic_fraction <= 1.0:
        parser.error("--minutes and --count must be positive, --synthetic-fraction within [0, 1]")
    from training.config import parse_override

    overrides = {}
    for text in args.overrides:
        keys, value = parse_override(text)
        if keys[0] != "data" or len(keys) != 2:
            parser.error(f"only data.KEY overrides are accepted, got {text!r}")
        overrides[keys[1]] = value
    try:
        mined = mine(args.checkpoint, MiningPlan(args.minutes, args.count, args.seed, args.synthetic_fraction),
                     overrides, progress=not args.no_progress and sys.stderr.isatty())
    except (FileNotFoundError, TypeError, ValueError) as error:  # TypeError: a --set key the data config lacks
        print(f"kws-mine: {error}", file=sys.stderr)
        return 2
    save(args.out, mined)
    print(json.dumps(mined["report"], indent=1))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
