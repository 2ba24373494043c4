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

TEMPERATURE_GRID = np.exp(np.linspace(np.log(0.002), np.log(20.0), 321))  # the raw scores are flat: T < 1
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
    """The temperature of least negative log-likelihood (grid over 0.002 ... 20, then refined)."""
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


def calibration_inputs(dataset, augment, nonspeech: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features, labels and a set name per clip: the validation split that chose the epoch (real speech and
    its non-speech clips), the synthetic calibration words, and ``nonspeech`` more non-speech clips from
    the held-out noise at the training levels (near silence to full scale)."""
    from model.vocabulary import SILENCE

    parts, targets, sets = [], [], []
    validation = dataset.validation
    for start in range(0, len(validation), 256):
        parts.append(validation.batch_inputs(np.arange(start, min(start + 256, len(validation)))))
    targets.append(validation.labels)
    sets += ["validation"] * len(validation)
    synthetic = dataset.extra.get("synthetic_calibration")
    if synthetic is not None and len(synthetic):
        for start in range(0, len(synthetic), 256):
            parts.append(synthetic.batch_inputs(np.arange(start, min(start + 256, len(synthetic)))))
        targets.append(synthetic.labels)
        sets += ["synthetic"] * len(synthetic)
    if nonspeech and validation.noise_dir is not None and validation.waveforms is not None:
        from model.features import log_mel

        rng = np.random.default_rng(seed)
        augmenter = validation.augmenter(augment)
        clips = np.stack([augmenter.nonspeech(validation.waveforms.shape[1], rng) for _ in range(nonspeech)])
        parts.append(log_mel(clips, validation.feature_config))
        targets.append(np.full(nonspeech, dataset.labels.index(SILENCE), np.int64))
        sets += ["nonspeech"] * nonspeech
    return np.concatenate(parts), np.concatenate(targets), sets


def calibrate(raw: np.ndarray, targets: np.ndarray, sets: Sequence[str], labels: Sequence[str],
              target: float) -> dict:
    """Temperature (fitted on the real validation clips and non-speech, whose labels are the task's own) and
    thresholds (on every calibration clip), with what they do on the calibration clips."""
    from model.decision import DecisionRule

    sets_array = np.array(sets)
    fit = sets_array != "synthetic"
    temperature = fit_temperature(raw[fit], targets[fit])
    scores = apply_temperature(raw, temperature)
    thresholds = choose_thresholds(scores, targets, labels, target)
    decided = DecisionRule(labels, thresholds).decide(scores)
    keyword_index = [i for i, label in enumerate(labels) if is_keyword(label)]
    positive = np.isin(targets, keyword_index)
    accepted = np.isin(decided, keyword_index)
    return {
        "temperature": temperature, "thresholds": thresholds, "target_false_accept_rate_per_keyword": target,
        "clips": {name: int((sets_array == name).sum()) for name in sorted(set(sets))},
        "expected_calibration_error": {"raw": round(expected_calibration_error(raw[fit], targets[fit]), 4),
                                       "calibrated": round(expected_calibration_error(scores[fit], targets[fit]), 4)},
        "keyword_recall": round(float((decided[positive] == targets[positive]).mean()), 4) if positive.any() else None,
        "keyword_recall_top_label": round(float((scores[positive].argmax(1) == targets[positive]).mean()), 4) if positive.any() else None,
        "false_accepts": round(float(accepted[~positive].mean()), 4) if (~positive).any() else None,
        "false_accepts_top_label": round(float(np.isin(scores[~positive].argmax(1), keyword_index).mean()), 4)
        if (~positive).any() else None,
    }


def calibrate_network(checkpoint, uncalibrated, target: float) -> dict:
    """Runs the uncalibrated graph (an ``onnx.ModelProto``) on the calibration clips of the checkpoint's
    own data (its stored experiment config) and calibrates it (:func:`calibrate`)."""
    import onnxruntime

    from training.config import ExperimentConfig
    from training.datasets import load_dataset

    config = ExperimentConfig.from_dict(checkpoint.training["config"])
    dataset = load_dataset(config.data, config.features, seed=config.train.seed, training=False)
    features, targets, sets = calibration_inputs(dataset, config.augment, seed=config.train.seed)
    session = onnxruntime.InferenceSession(uncalibrated.SerializeToString(), providers=["CPUExecutionProvider"])
    raw = np.concatenate([session.run(["scores"], {"features": features[i : i + 128]})[0]
                          for i in range(0, len(features), 128)])
    return calibrate(raw, targets, sets, list(dataset.labels), target)


def calibration_metadata(calibration: dict, labels: Sequence[str]) -> dict[str, str]:
    """The ONNX metadata a calibration adds: the thresholds (``model.decision``) and its report."""
    import json

    from model.decision import DecisionRule

    report = {k: v for k, v in calibration.items() if k != "thresholds"}
    return DecisionRule(tuple(labels), calibration["thresholds"]).to_metadata() | {"calibration": json.dumps(report)}


def describe(calibration: dict) -> str:
    return (f"calibration on {calibration['clips']}: temperature {calibration['temperature']:.3f} "
            f"(ECE {calibration['expected_calibration_error']['raw']} -> "
            f"{calibration['expected_calibration_error']['calibrated']}); keyword recall "
            f"{calibration['keyword_recall_top_label']} -> {calibration['keyword_recall']}, false accepts "
            f"{calibration['false_accepts_top_label']} -> {calibration['false_accepts']}\n"
            "thresholds: " + ", ".join(f"{k} {v:.3f}" for k, v in calibration["thresholds"].items()))
