"""The streaming evaluation's recordings: clips placed at random times over held-out background noise, each
word at a random SNR, the whole recording at a random level, from one half of the material:

* ``report``: real clips of the held-out words, the evaluation half of the synthetic validation words and
  phrases, FSDD digits and non-speech sounds of kinds training never had (negative), and keywords and other
  words of the validation speakers that chose neither the epoch nor the thresholds (keyword);
* ``tune``: the other halves (the speakers that chose the epoch, the synthetic words that chose the clip
  thresholds), for the per-keyword stream thresholds; they share no clip with the report's.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from evaluation.sounds import SOUNDS
from evaluation.suite import Data, held_out_noise, read_audio
from model.speech import gain_for_snr, noise_bed, speech_extent

NEGATIVE_WORDS_PER_MINUTE = 12
SOUNDS_PER_MINUTE = 2
KEYWORDS_PER_MINUTE, DISTRACTORS_PER_MINUTE = 10, 5
SNR_DB = (5.0, 20.0)
NOISE_RMS = (0.003, 0.03)  # the noise bed, before the recording's gain
RECORDING_GAIN_DB = (-25.0, 10.0)  # the whole recording: a far talker to a close, loud one


@dataclass(frozen=True)
class Placed:
    label: str  # the keyword, or "" for anything that is not one
    start: float
    end: float
    source: str = ""  # what it is: "held-out word wow", "synthetic word", "FSDD digit", "sound hum", ...
    snr_db: float | None = None  # its level against the background noise


@dataclass
class Recording:
    samples: np.ndarray
    placed: list[Placed]


def build_recording(items: Sequence[tuple[np.ndarray, str, str]], noise: np.ndarray, seconds: float, rate: int,
                    rng: np.random.Generator) -> Recording:
    """``items`` (clip, keyword or "", what it is) at random, non-overlapping times over ``noise``; a random
    SNR each."""
    length = int(seconds * rate)
    background = noise_bed(noise, length, NOISE_RMS, rng)
    noise_power = float(np.mean(background**2))
    samples, placed = background.copy(), []
    slot = length // max(1, len(items))  # one item per slot, at a random place inside it
    for index, item in enumerate(rng.permutation(len(items))):
        clip, label, source = items[item]
        clip = clip[: max(1, slot - rate // 2)]
        begin, end = speech_extent(clip, rate)
        snr_db = float(rng.uniform(*SNR_DB))
        gain = gain_for_snr(clip[begin:end], noise_power, snr_db)
        offset = index * slot + int(rng.integers(max(1, slot - len(clip))))
        samples[offset : offset + len(clip)] += gain * clip
        placed.append(Placed(label, (offset + begin) / rate, (offset + end) / rate, source, snr_db))
    samples *= np.float32(10 ** (rng.uniform(*RECORDING_GAIN_DB) / 20))
    return Recording(np.clip(samples, -1.0, 1.0), sorted(placed, key=lambda p: p.start))


@dataclass
class Material:
    """Clips for recordings: keyword clips by keyword, and clips that are not keywords."""

    keywords: dict[str, list[np.ndarray]]
    others: list[np.ndarray]
    sources: list[str]  # what each of ``others`` is (false alarms are reported by it)
    sounds: bool = False


def material(data: Data, keywords: Sequence[str], rate: int, half: str) -> tuple[Material, Material]:
    """(keyword material, negative material) of one half: ``report`` (evaluation) or ``tune``."""
    from training.speech_commands import is_evaluation_clip, is_test_speaker

    with open(data.gsc / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    held_out = set(data.held_out_words)
    in_half = (lambda f: is_test_speaker(f, data.test_fraction)) if half == "report" else \
        (lambda f: not is_test_speaker(f, data.test_fraction))
    validation = [r for r in rows if r["split"] == "validation" and r["word"] not in held_out and in_half(r["file"])]
    others = [r for r in validation if r["word"] not in keywords]
    spoken = Material({k: [read_audio(data.gsc / r["file"], rate) for r in validation if r["word"] == k] for k in keywords},
                      [read_audio(data.gsc / r["file"], rate) for r in others], ["GSC other word"] * len(others))
    negatives: list[np.ndarray] = []
    sources: list[str] = []
    if data.synth is not None and (data.synth / "manifest.csv").exists():
        with open(data.synth / "manifest.csv", newline="") as handle:
            synthetic = [r for r in csv.DictReader(handle) if r["split"] == "validation" and r["kind"] != "keyword"
                         and r["text"] not in held_out and is_evaluation_clip(r) == (half == "report")]
        negatives += [read_audio(data.synth / r["file"], rate) for r in synthetic]
        sources += [f"synthetic {r['kind']}" for r in synthetic]
    if half == "report":
        words = [r for r in rows if r["word"] in held_out]
        negatives += [read_audio(data.gsc / r["file"], rate) for r in words]
        sources += [f"held-out word {r['word']}" for r in words]
        if data.fsdd is not None and (data.fsdd / "manifest.csv").exists():
            with open(data.fsdd / "manifest.csv", newline="") as handle:
                digits = list(csv.DictReader(handle))[::3]
            negatives += [read_audio(data.fsdd / r["file"], rate) for r in digits]
            sources += ["FSDD digit"] * len(digits)
    else:
        negatives += spoken.others  # the tuning speakers' other words
        sources += spoken.sources
    return spoken, Material({}, negatives, sources, sounds=half == "report")


def negative_recordings(negatives: Material, noises: list[np.ndarray], minutes: int, rate: int,
                        rng: np.random.Generator) -> list[Recording]:
    order = rng.permutation(len(negatives.others))
    recordings, used = [], 0
    for minute in range(minutes):
        items = []
        for _ in range(NEGATIVE_WORDS_PER_MINUTE):
            index = int(order[used % len(order)])
            items.append((negatives.others[index], "", negatives.sources[index]))
            used += 1
        if negatives.sounds:
            names = list(SOUNDS)
            for _ in range(SOUNDS_PER_MINUTE):
                name = names[int(rng.integers(len(names)))]
                items.append((0.1 * SOUNDS[name](int(rng.uniform(0.3, 1.0) * rate), rate, rng), "", f"sound {name}"))
        recordings.append(build_recording(items, noises[minute % len(noises)], 60.0, rate, rng))
    return recordings


def keyword_recordings(spoken: Material, noises: list[np.ndarray], minutes: int, rate: int,
                       rng: np.random.Generator) -> list[Recording]:
    pool = [(clip, k, k) for k, clips in spoken.keywords.items() for clip in clips]
    order, others = rng.permutation(len(pool)), rng.permutation(len(spoken.others))
    recordings = []
    for minute in range(minutes):
        items = [pool[order[(minute * KEYWORDS_PER_MINUTE + i) % len(pool)]] for i in range(KEYWORDS_PER_MINUTE * bool(pool))]
        chosen = [int(others[(minute * DISTRACTORS_PER_MINUTE + i) % len(others)])
                  for i in range(DISTRACTORS_PER_MINUTE * bool(len(others)))]  # a half may have no other words
        items += [(spoken.others[i], "", spoken.sources[i]) for i in chosen]
        recordings.append(build_recording(items, noises[minute % len(noises)], 60.0, rate, rng))
    return recordings



def keyword_minutes_for(negative_minutes: int) -> int:
    """Minutes of keyword recordings beside ``negative_minutes`` of negatives: an hour gives 24 min, 240 keywords."""
    return max(6, negative_minutes * 2 // 5)


def build_recordings(data: Data, model, half: str, negative_minutes: int, keyword_minutes: int, seed: int):
    rate = model.features.sample_rate
    rng = np.random.default_rng([seed, 0 if half == "report" else 1])
    noises = list(held_out_noise(data, rate).values())
    spoken, negatives = material(data, model.keywords, rate, half)
    return (negative_recordings(negatives, noises, negative_minutes, rate, rng),
            keyword_recordings(spoken, noises, keyword_minutes, rate, rng))
