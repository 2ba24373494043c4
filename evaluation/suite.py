"""The robustness suite: every set the served model is judged on, and the figures it yields.

Every clip goes through what ``POST /v1/recognize`` does after decoding — the model's windows (one for a
clip up to 1 s, windows every ``hop`` over longer ones), the ONNX graph, and the decision rule of
``model.decision`` with the thresholds in the model's metadata — so the figures are the service's answers.

Sets (each a list of clips with the answer they should get):

* ``validation``       real clips of the held-out half of the validation speakers (they chose neither the
                       epoch nor the thresholds): keywords, other words, + non-speech clips from the
                       held-out noise; the kws10 ten-way accuracy;
* ``open_set``         real clips of the held-out words (never trained on, real or synthetic): false accepts;
* ``other_words``      validation speakers' non-keyword words that training has seen: false accepts;
* ``levels``           the validation speech clips at -30 ... +20 dB, clipped to +-1 like an ADC;
* ``noise``            held-out noise and coloured noise, -70 dBFS to full scale: answered as a keyword?;
* ``sounds``           hum, tones, chirps, clicks, square waves, chords, DC (no such sound in training);
* ``fsdd``             spoken digits of another corpus (8 kHz, other microphones): false accepts;
* ``synthetic``        synthetic validation keywords (voices training never heard) and synthetic
                       validation words, the half the thresholds were not chosen on: does the network
                       reject "not a keyword", or "synthetic"?
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.sounds import SOUNDS
from model.decision import DecisionRule
from model.features import fit_to_clip
from model.vocabulary import SILENCE, UNKNOWN
from training.speech_commands import is_evaluation_clip, is_test_speaker

LEVELS_DB = (-30.0, -20.0, -10.0, 0.0, 10.0, 20.0)
NOISE_LEVELS_DBFS = (-70.0, -60.0, -50.0, -40.0, -30.0, -20.0, -10.0, -5.0, 0.0)
SOUND_LEVELS_DBFS = (-50.0, -40.0, -30.0, -20.0, -10.0, -3.0)
COLOURED = {"white": 0.0, "pink": -3.01, "brown": -6.02}
BATCH = 64


@dataclass(frozen=True)
class Answer:
    label: str
    score: float


class Scorer:
    """Answers clips as the service does: windows → graph → decision rule (``thresholds=False``: top label) →
    the VAD's speech check of a keyword answer (``verify_speech``, the service's ``KWS_VERIFY_SPEECH``)."""

    def __init__(self, model, hop_seconds: float, thresholds: bool = True, verify_speech: bool = True) -> None:
        self.model = model
        self.hop = hop_seconds
        self.rule = DecisionRule.from_metadata(model.labels, model.metadata if thresholds else {})
        self.keywords = set(model.keywords)
        self.verify_speech = verify_speech
        self.checked = 0  # keyword answers the VAD looked at
        self.overruled = 0  # ... of which it heard no speech in
        self.vad_seconds = 0.0

    def answers(self, clips: Sequence[np.ndarray]) -> list[Answer]:
        windows = [self.model.windows(np.asarray(c, np.float32), self.hop) for c in clips]
        counts = [len(w) for w in windows]
        stacked = np.concatenate(windows) if windows else np.zeros((0,))
        scores = np.concatenate([self.model.run(stacked[i : i + BATCH]) for i in range(0, len(stacked), BATCH)]) \
            if len(stacked) else np.zeros((0, len(self.model.labels)))
        result, start = [], 0
        for clip, count in zip(clips, counts):
            clip_scores = scores[start : start + count]
            start += count
            window, label = self.rule.answer_window(clip_scores)
            if self.verify_speech and label in self.rule.keyword_indices:
                import time

                began = time.perf_counter()
                checked, _ = self.model.speech_check(np.asarray(clip, np.float32), self.hop, window, label)
                self.vad_seconds += time.perf_counter() - began
                self.checked += 1
                self.overruled += checked != label
                label = checked
            result.append(Answer(self.model.labels[label], float(clip_scores[window, label])))
        return result

    def accepted(self, answers: Iterable[Answer]) -> np.ndarray:
        return np.array([a.label in self.keywords for a in answers], dtype=bool)


def read_audio(path: Path, rate: int) -> np.ndarray:
    import soundfile
    import soxr

    audio, source_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    return soxr.resample(audio, source_rate, rate, quality="HQ").astype(np.float32) if source_rate != rate else audio


def at_level(clip: np.ndarray, gain_db: float) -> np.ndarray:
    """``clip`` amplified by ``gain_db`` and clipped to ±1, as an ADC would."""
    return np.clip(clip * np.float32(10 ** (gain_db / 20)), -1.0, 1.0).astype(np.float32)


def at_rms(clip: np.ndarray, dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(clip.astype(np.float64) ** 2))) + 1e-12
    return np.clip(clip * np.float32(10 ** (dbfs / 20) / rms), -1.0, 1.0).astype(np.float32)


def _mask(flags: Iterable[bool]) -> np.ndarray:
    return np.fromiter(flags, dtype=bool)


def _rate(flags: np.ndarray) -> float:
    return round(float(np.mean(flags)), 4) if len(flags) else float("nan")


@dataclass
class Data:
    """Where the clips come from, and which words training never saw."""

    gsc: Path
    fsdd: Path | None
    synth: Path | None
    held_out_words: tuple[str, ...]
    noise_holdout: float = 0.2
    test_fraction: float = 0.5  # validation speakers kept from model selection and calibration
    seed: int = 0


def _gsc_rows(data: Data) -> list[dict[str, str]]:
    with open(data.gsc / "manifest.csv", newline="") as handle:
        return [r for r in csv.DictReader(handle) if r["split"] in ("training", "validation")]


def held_out_noise(data: Data, rate: int) -> dict[str, np.ndarray]:
    """The tail of each background recording that training never mixed in."""
    folder = data.gsc / "_background_noise_"
    noises = {}
    for path in sorted(folder.glob("*.flac")) + sorted(folder.glob("*.wav")):
        audio = read_audio(path, rate)
        noises[path.stem] = audio[int(len(audio) * (1 - data.noise_holdout)) :]
    return noises


def _slices(recording: np.ndarray, length: int, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    starts = rng.integers(0, max(1, len(recording) - length), count)
    return [recording[s : s + length] for s in starts]


def run_suite(scorer: Scorer, data: Data, every: int = 1, progress=lambda name: None) -> dict:
    model = scorer.model
    rate, length = model.features.sample_rate, model.features.clip_samples
    keywords = scorer.keywords
    rng = np.random.default_rng(data.seed)
    rows = _gsc_rows(data)
    held_out = set(data.held_out_words)
    # The half of the validation speakers that chose neither the epoch nor the thresholds (data.test_fraction).
    validation = [r for r in rows if r["split"] == "validation" and r["word"] not in held_out
                  and is_test_speaker(r["file"], data.test_fraction)][::every]
    clips = [read_audio(data.gsc / r["file"], rate) for r in validation]
    targets = [r["word"] if r["word"] in keywords else UNKNOWN for r in validation]
    noises = held_out_noise(data, rate)
    results: dict = {}

    # validation: ten-way accuracy with non-speech clips (10 % of the speech, levels -60 ... -10 dBFS)
    progress("validation")
    silence = [at_rms(s, rng.uniform(-60, -10)) for name in noises
               for s in _slices(noises[name], length, max(1, len(clips) // 10 // max(1, len(noises))), rng)]
    answers = scorer.answers(clips + silence)
    truth = targets + [SILENCE] * len(silence)
    correct = np.array([a.label == t for a, t in zip(answers, truth)])
    per_class = {label: _rate(correct[_mask(t == label for t in truth)]) for label in model.labels}
    results["validation"] = {"clips": len(truth), "accuracy": _rate(correct), "per_class": per_class,
                             "keyword_recall": _rate(correct[_mask(t in keywords for t in truth)])}

    # open set: every real clip of the held-out words
    progress("open set")
    open_rows = [r for r in rows if r["word"] in held_out][::every]
    open_answers = scorer.answers([read_audio(data.gsc / r["file"], rate) for r in open_rows])
    accepted = scorer.accepted(open_answers)
    per_word = {w: _rate(accepted[_mask(r["word"] == w for r in open_rows)]) for w in sorted(held_out)}
    # The pooled rate is dominated by the words with many clips (GSC has ~900 "happy", ~12 of the others):
    # the mean over words says how an unseen word fares, whatever its count.
    results["open_set"] = {
        "clips": len(open_rows), "false_accepts": _rate(accepted),
        "word_mean_false_accepts": round(float(np.nanmean(list(per_word.values()))), 4),
        "per_word": per_word,
        "clips_per_word": dict(Counter(r["word"] for r in open_rows)),
        "accepted_as": dict(Counter(a.label for a, ok in zip(open_answers, accepted) if ok).most_common()),
    }
    other = np.array([t == UNKNOWN for t in targets])
    results["other_words"] = {"clips": int(other.sum()), "false_accepts": _rate(scorer.accepted(
        [a for a, o in zip(answers, other) if o]))}

    # levels: the speech clips louder and quieter, clipped like an ADC
    progress("levels")
    sweep = {}
    for gain in LEVELS_DB:
        level_answers = scorer.answers([at_level(c, gain) for c in clips[::2]])
        ok = np.array([a.label == t for a, t in zip(level_answers, targets[::2])])
        sweep[f"{gain:+.0f}"] = {"accuracy": _rate(ok), "keyword_recall": _rate(ok[_mask(t in keywords for t in targets[::2])])}
    reference = sweep["+0"]["accuracy"]
    results["levels"] = {"clips": len(clips[::2]), "by_gain_db": sweep,
                         "worst_drop_points": round(100 * max(reference - v["accuracy"] for v in sweep.values()), 2)}

    # noise only, at every level up to full scale
    progress("noise")
    sources = {name: _slices(rec, length, 12, rng) for name, rec in noises.items()}
    from training.augment import coloured_noise

    sources.update({f"{name} noise": [coloured_noise(length, decay, rng) for _ in range(12)] for name, decay in COLOURED.items()})
    results["noise"] = _sweep_rejection(scorer, sources, NOISE_LEVELS_DBFS)

    # other non-speech: sounds of kinds training never had
    progress("sounds")
    sounds = {name: [make(length, rate, rng) for _ in range(30)] for name, make in SOUNDS.items()}
    results["sounds"] = _sweep_rejection(scorer, sounds, SOUND_LEVELS_DBFS)

    if data.fsdd is not None and (data.fsdd / "manifest.csv").exists():
        progress("fsdd")
        with open(data.fsdd / "manifest.csv", newline="") as handle:
            fsdd = list(csv.DictReader(handle))[::every]
        fsdd_answers = scorer.answers([read_audio(data.fsdd / r["file"], rate) for r in fsdd])
        accepted = scorer.accepted(fsdd_answers)
        results["fsdd"] = {"clips": len(fsdd), "false_accepts": _rate(accepted),
                           "accepted_as": dict(Counter(a.label for a, ok in zip(fsdd_answers, accepted) if ok).most_common())}

    if data.synth is not None and (data.synth / "manifest.csv").exists():
        progress("synthetic")
        with open(data.synth / "manifest.csv", newline="") as handle:
            synth = [r for r in csv.DictReader(handle) if r["split"] == "validation" and r["text"] not in held_out
                     and is_evaluation_clip(r)][::every]
        synth_answers = scorer.answers([fit_to_clip(read_audio(data.synth / r["file"], rate), model.features) for r in synth])
        is_keyword = np.array([r["kind"] == "keyword" for r in synth], dtype=bool)
        right = np.array([a.label == r["text"] for a, r in zip(synth_answers, synth)], dtype=bool)
        accepted = scorer.accepted(synth_answers)
        kinds = sorted({r["kind"] for r in synth} - {"keyword"})
        results["synthetic"] = {
            "keyword_clips": int(is_keyword.sum()), "keyword_recall": _rate(right[is_keyword]),
            "word_clips": int((~is_keyword).sum()), "word_false_accepts": _rate(accepted[~is_keyword]),
            "false_accepts_by_kind": {k: _rate(accepted[_mask(r["kind"] == k for r in synth)])
                                      for k in kinds},
        }
    return results


def _sweep_rejection(scorer: Scorer, sources: dict[str, list[np.ndarray]], levels: Sequence[float]) -> dict:
    """Share of clips NOT answered as a keyword, per source and level; the worst level overall."""
    table: dict[str, dict[str, float]] = {}
    for name, clips in sources.items():
        table[name] = {}
        for level in levels:
            rejected = ~scorer.accepted(scorer.answers([at_rms(c, level) for c in clips]))
            table[name][f"{level:.0f}"] = _rate(rejected)
    by_level = {f"{level:.0f}": round(float(np.mean([table[n][f"{level:.0f}"] for n in table])), 4) for level in levels}
    return {"clips_per_cell": len(next(iter(sources.values()))), "not_keyword": table, "by_level": by_level,
            "worst_level": min(by_level.values()), "worst_cell": min(v for row in table.values() for v in row.values()),
            "overall": round(float(np.mean([v for row in table.values() for v in row.values()])), 4)}
