"""Calibrated scores and per-keyword thresholds, chosen on validation data.

* **Temperature.** The graph's raw scores are the paper's readout, the mean over time of the softmax of
  the readout potentials: they rank well but are not probabilities of being right. One temperature
  ``T`` is fitted by minimising the negative log-likelihood of the true labels of the calibration clips
  (temperature scaling, Guo et al. 2017): ``scores = softmax(log(raw) / T)``. Monotone within a clip,
  so the top label never changes; the graph computes it (``build_onnx(calibration_temperature=T)``).
* **Thresholds.** For every keyword ``k``, the lowest threshold at which at most ``target`` of the
  calibration clips that are not keywords (other words, synthetic words, non-speech) are answered
  ``k``. Lower thresholds can only add false accepts, so this keeps the most recall at that rate.

What a calibrated score means: among validation clips given score ``s`` for their top label, about a
fraction ``s`` were right.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from model.vocabulary import is_keyword

TEMPERATURE_GRID = np.exp(np.linspace(np.log(0.05), np.log(20.0), 241))
PROBABILITY_FLOOR = 1e-12


def apply_temperature(raw: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(raw) / T)`` row by row, as the graph computes it."""
    logits = np.log(np.maximum(raw, PROBABILITY_FLOOR)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def negative_log_likelihood(raw: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    scores = apply_temperature(raw, temperature)
    return float(-np.mean(np.log(np.maximum(scores[np.arange(len(targets)), targets], PROBABILITY_FLOOR))))


def fit_temperature(raw: np.ndarray, targets: np.ndarray) -> float:
    """The temperature of least negative log-likelihood (grid over 0.05 ... 20, then refined)."""
    losses = [negative_log_likelihood(raw, targets, t) for t in TEMPERATURE_GRID]
    best = int(np.argmin(losses))
    low, high = TEMPERATURE_GRID[max(0, best - 1)], TEMPERATURE_GRID[min(len(TEMPERATURE_GRID) - 1, best + 1)]
    fine = np.linspace(low, high, 41)
    return float(fine[int(np.argmin([negative_log_likelihood(raw, targets, t) for t in fine]))])


def expected_calibration_error(scores: np.ndarray, targets: np.ndarray, bins: int = 15) -> float:
    """Mean |accuracy - confidence| of the top label over equal-width confidence bins, weighted by count."""
    confidence = scores.max(axis=1)
    correct = scores.argmax(axis=1) == targets
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        members = (confidence > lo) & (confidence <= hi)
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


def choose_thresholds(scores: np.ndarray, targets: np.ndarray, labels: Sequence[str], target: float) -> dict[str, float]:
    """Per keyword, the lowest threshold that keeps its false-accept rate on the non-keyword clips <= ``target``."""
    keyword_index = [i for i, label in enumerate(labels) if is_keyword(label)]
    negative = ~np.isin(targets, keyword_index)
    top = scores.argmax(axis=1)
    allowed = int(np.floor(target * negative.sum()))
    thresholds = {}
    for k in keyword_index:
        accepted = np.sort(scores[negative & (top == k), k])[::-1]  # negatives whose top label is k, best first
        # Accept at most `allowed` of them: the threshold sits just above the next one.
        thresholds[labels[k]] = float(np.nextafter(accepted[allowed], 1.0)) if len(accepted) > allowed else 0.0
    return thresholds
