"""Keyword detection on long recordings: precision, recall and false alarms per hour of the streaming detector.

    python -m benchmarks.detection [--recordings 12] [--seconds 60] [--seed 0] [--data ../shared/data/gsc]

Builds long recordings from validation-speaker clips of Speech Commands: keywords and non-keyword
words (distractors) at random, non-overlapping times over the held-out tail of the GSC background
noise recordings (the part training never mixed in), each word at a random SNR. The recordings run
through the same code as ``WS /v1/stream`` (service/detector.py: StreamDetector windows, the shared
log-mel front end, the ONNX model, the ScoreSmoother), offline and without HTTP.

The validation speakers are split in two by a hash of the speaker id: the threshold is chosen on the
first half (the sweep's best F1) and the figures are reported on the other half, so the default in
service/settings.py is chosen by a measurement, not tuned on the figures it is judged by. A detection
is correct when its label is that of a placed keyword overlapping [t_start - tol, t_end + tol]; each
placed keyword counts once; every other detection is a false alarm.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from model.speech import speech_extent
from model.vocabulary import UNKNOWN
from service.detector import Detection, StreamConfig, StreamDetector, Window, window_features
from service.inference import KeywordModel
from service.settings import Settings
from training.datasets import (
    BACKGROUND_NOISE,
    _speaker_hash_fraction,
    _speaker_of,
    read_audio,
)

REPO = Path(__file__).resolve().parents[1]
SPLIT_SALT = "detection-threshold"
NOISE_HOLDOUT = 0.2  # the tail of each noise recording that training kept for validation (DataConfig.noise_holdout)
THRESHOLDS = np.round(np.arange(0.10, 0.301, 0.01), 3)  # 0.1 is chance over ten labels


@dataclass(frozen=True)
class Placed:
    word: str
    start: float
    end: float
    keyword: bool


@dataclass
class Recording:
    samples: np.ndarray
    placed: list[Placed]


def build_recording(keyword_clips: list[np.ndarray], keyword_words: list[str], distractors: list[np.ndarray],
                    noise: np.ndarray, seconds: float, rate: int, rng: np.random.Generator) -> Recording:
    """Words placed at random, at least 1 s apart, over tiled background noise; SNR 5-20 dB per word."""
    length = int(seconds * rate)
    start = int(rng.integers(len(noise)))
    background = np.resize(np.roll(noise, -start), length).astype(np.float32)
    background *= rng.uniform(0.003, 0.03) / (np.sqrt(np.mean(background**2)) + 1e-12)
    noise_power = float(np.mean(background**2))
    items = [(c, w, True) for c, w in zip(keyword_clips, keyword_words)] + [(c, UNKNOWN, False) for c in distractors]
    order = rng.permutation(len(items))
    slot = length // len(items)  # one word per slot, placed at random inside it with >= 1 s of gap around
    samples, placed = background.copy(), []
    for slot_index, item_index in enumerate(order):
        clip, word, is_keyword = items[item_index]
        begin, end = speech_extent(clip, rate)
        speech = clip[begin:end]
        snr_db = rng.uniform(5.0, 20.0)
        gain = np.sqrt(noise_power * 10 ** (snr_db / 10) / (np.mean(speech**2) + 1e-12))
        latest = slot - len(clip) - rate // 2
        offset = slot_index * slot + rate // 2 + int(rng.integers(max(1, latest - rate // 2)))
        samples[offset : offset + len(clip)] += gain * clip
        placed.append(Placed(word, (offset + begin) / rate, (offset + end) / rate, is_keyword))
    peak = np.abs(samples).max()
    if peak > 0.99:  # a loud word at a high SNR over loud noise: scale the whole recording, as an AGC would
        samples *= 0.99 / peak
    return Recording(samples, sorted(placed, key=lambda p: p.start))


def stream_scores(model: KeywordModel, config: StreamConfig, samples: np.ndarray, chunk_s: float = 0.25) -> list[tuple[Window, np.ndarray]]:
    """The windows a stream of ``chunk_s`` messages produces, and the model's scores for each."""
    detector = StreamDetector(model.labels, config)
    chunk = int(chunk_s * config.sample_rate)
    windows: list[Window] = []
    for first in range(0, len(samples), chunk):
        windows += detector.push(samples[first : first + chunk])
    windows += detector.flush()
    scored = []
    for first in range(0, len(windows), 64):
        batch = windows[first : first + 64]
        scores = model.run(window_features(batch, model.features))
        scored += [(Window(w.t_end, np.zeros(0, np.float32)), s) for w, s in zip(batch, scores)]
    return scored


def detect(labels: list[str], config: StreamConfig, scored: list[tuple[Window, np.ndarray]]) -> list[Detection]:
    detector = StreamDetector(labels, config)
    detections = [d for window, scores in scored for d in detector.observe(window, scores)]
    return detections + detector.finish()


def evaluate(recordings: list[Recording], detections: list[list[Detection]], tolerance: float,
             keywords: list[str], rate: int) -> dict:
    placed_keywords = sum(p.keyword for r in recordings for p in r.placed)
    hits, false_alarms, on_distractors, found = 0, 0, 0, {k: [0, 0] for k in keywords}
    for recording, found_here in zip(recordings, detections):
        matched: set[int] = set()
        for detection in found_here:
            overlapping = [i for i, p in enumerate(recording.placed)
                           if p.start < detection.t_end + tolerance and p.end > detection.t_start - tolerance]
            match = next((i for i in overlapping if recording.placed[i].word == detection.label and i not in matched), None)
            if match is None:
                false_alarms += 1
                on_distractors += any(not recording.placed[i].keyword for i in overlapping)
            else:
                matched.add(match)
                hits += 1
        for i, p in enumerate(recording.placed):
            if p.keyword:
                found[p.word][0] += i in matched
                found[p.word][1] += 1
    hours = sum(len(r.samples) for r in recordings) / rate / 3600
    detected = hits + false_alarms
    precision = hits / detected if detected else 1.0
    recall = hits / placed_keywords if placed_keywords else 0.0
    return {
        "precision": round(precision, 4), "recall": round(recall, 4),
        "f1": round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0,
        "false_alarms_per_hour": round(false_alarms / hours, 1), "false_alarms": false_alarms,
        "false_alarms_on_distractor_words": on_distractors, "detections": detected, "keywords_placed": placed_keywords,
        "per_label_recall": {k: round(h / n, 3) if n else None for k, (h, n) in found.items()},
    }


def load_pools(root: Path, rate: int) -> dict[str, dict[str, list[str]]]:
    """``half → word → files`` of the validation split, halves by speaker hash."""
    pools: dict[str, dict[str, list[str]]] = {"tune": {}, "report": {}}
    with open(root / "manifest.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["split"] == "validation":
                half = "tune" if _speaker_hash_fraction(_speaker_of(row["file"]), SPLIT_SALT) < 0.5 else "report"
                pools[half].setdefault(row["word"], []).append(row["file"])
    return pools


def build_half(root: Path, pool: dict[str, list[str]], keywords: list[str], noises: list[np.ndarray], count: int,
               seconds: float, rate: int, rng: np.random.Generator) -> list[Recording]:
    keyword_files = [(f, w) for w in keywords for f in pool.get(w, [])]
    distractor_files = [f for w, files in pool.items() if w not in keywords for f in files]
    keyword_order, distractor_order = rng.permutation(len(keyword_files)), rng.permutation(len(distractor_files))
    per_minute_keywords, per_minute_distractors = 10, 5
    n_keywords, n_distractors = int(per_minute_keywords * seconds / 60), int(per_minute_distractors * seconds / 60)
    recordings = []
    for index in range(count):
        chosen = [keyword_files[i] for i in np.take(keyword_order, range(index * n_keywords, (index + 1) * n_keywords), mode="wrap")]
        distractors = [distractor_files[i] for i in
                       np.take(distractor_order, range(index * n_distractors, (index + 1) * n_distractors), mode="wrap")]
        recordings.append(build_recording([read_audio(root / f, rate) for f, _ in chosen], [w for _, w in chosen],
                                          [read_audio(root / f, rate) for f in distractors],
                                          noises[index % len(noises)], seconds, rate, rng))
    return recordings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "gsc", help="Speech Commands folder")
    parser.add_argument("--model", type=Path, default=Settings().model_path)
    parser.add_argument("--recordings", type=int, default=12, help="recordings per half of the speakers")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each recording")
    parser.add_argument("--tolerance", type=float, default=0.25, help="seconds of slack when matching a detection to a word")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "detection.json")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    settings = Settings()
    model = KeywordModel.load(args.model, intra_op_threads=2)
    rate = model.features.sample_rate
    keywords = model.keywords
    base = StreamConfig(rate, model.features.clip_seconds, settings.stream_hop_seconds, settings.stream_smoothing_hops,
                        settings.stream_threshold, settings.stream_refractory_seconds)
    noises = []
    for path in sorted((args.data / BACKGROUND_NOISE).iterdir()):
        noise = read_audio(path, rate)
        noises.append(noise[int(len(noise) * (1 - NOISE_HOLDOUT)) :])
    rng = np.random.default_rng(args.seed)
    pools = load_pools(args.data, rate)
    halves = {half: build_half(args.data, pools[half], keywords, noises, args.recordings, args.seconds, rate, rng)
              for half in ("tune", "report")}
    scored = {half: [stream_scores(model, base, r.samples) for r in recordings] for half, recordings in halves.items()}

    def at(half: str, threshold: float) -> dict:
        config = replace(base, threshold=float(threshold))
        return evaluate(halves[half], [detect(model.labels, config, s) for s in scored[half]], args.tolerance, keywords, rate)

    sweep = {half: {f"{t:.2f}": at(half, t) for t in THRESHOLDS} for half in halves}
    # Best F1 on the tuning speakers; among near-ties (within 0.005) the higher threshold, the fewer false alarms.
    best_f1 = max(row["f1"] for row in sweep["tune"].values())
    chosen = max(float(t) for t, row in sweep["tune"].items() if row["f1"] >= best_f1 - 0.005)
    report = sweep["report"][f"{chosen:.2f}"]
    result = {
        "command": " ".join(["python -m benchmarks.detection", *(sys.argv[1:] if argv is None else argv)]),
        "model": model.name, "recordings_per_half": args.recordings, "seconds_each": args.seconds, "seed": args.seed,
        "tolerance_s": args.tolerance,
        "detector": {"hop_s": base.hop_s, "smoothing_hops": base.smoothing_hops, "refractory_s": base.refractory_s},
        "speakers": {half: len({_speaker_of(f) for files in pools[half].values() for f in files}) for half in pools},
        "chosen_threshold": chosen, "chosen_by": "best F1 on the tuning half of the validation speakers",
        "report_half_at_chosen_threshold": report,
        "tune_half_at_chosen_threshold": sweep["tune"][f"{chosen:.2f}"],
        "sweep": {half: {t: {k: row[k] for k in ("precision", "recall", "f1", "false_alarms_per_hour")}
                         for t, row in rows.items()} for half, rows in sweep.items()},
        "seconds_taken": round(time.perf_counter() - started, 1),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'threshold':>9} | tune: {'P':>6} {'R':>6} {'FA/h':>6} | report: {'P':>6} {'R':>6} {'FA/h':>6}")
    for t in sweep["tune"]:
        a, b = sweep["tune"][t], sweep["report"][t]
        mark = "  <- chosen" if float(t) == chosen else ""
        print(f"{t:>9} | {a['precision']:>12.3f} {a['recall']:>6.3f} {a['false_alarms_per_hour']:>6.1f} | "
              f"{b['precision']:>14.3f} {b['recall']:>6.3f} {b['false_alarms_per_hour']:>6.1f}{mark}")
    print(f"\nthreshold {chosen:.2f} (best F1 on the tuning speakers); on the other half: precision {report['precision']:.3f}, "
          f"recall {report['recall']:.3f}, {report['false_alarms_per_hour']:.1f} false alarms/hour "
          f"({report['false_alarms']} in {args.recordings * args.seconds / 60:.0f} min, "
          f"{report['false_alarms_on_distractor_words']} on distractor words)")
    print("per-label recall:", report["per_label_recall"])
    print(f"wrote {args.json} in {result['seconds_taken']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
