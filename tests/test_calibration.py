"""Temperature scaling and per-keyword thresholds (export/calibration.py)."""

import numpy as np

from export.calibration import (
    apply_temperature, choose_thresholds, expected_calibration_error, fit_temperature,
)
from model.decision import DecisionRule

LABELS = ("yes", "no", "_unknown_", "_silence_")


def overconfident_scores(n=4000, seed=0):
    """Raw scores whose top label is right 70 % of the time but that claim far more (or less) than that."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 4, n)
    logits = rng.normal(0, 1, (n, 4))
    logits[np.arange(n), targets] += 1.2
    raw = np.exp(3 * logits)  # sharpened: over-confident
    return raw / raw.sum(axis=1, keepdims=True), targets


def test_temperature_scaling_keeps_the_ranking_and_makes_scores_calibrated():
    raw, targets = overconfident_scores()
    temperature = fit_temperature(raw, targets)
    assert temperature > 1.5  # it flattens over-confident scores
    calibrated = apply_temperature(raw, temperature)
    assert (calibrated.argmax(axis=1) == raw.argmax(axis=1)).all()
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0, rtol=1e-9)
    assert expected_calibration_error(calibrated, targets) < 0.03 < expected_calibration_error(raw, targets)


def test_thresholds_meet_the_false_accept_target_with_the_most_recall():
    raw, targets = overconfident_scores(seed=1)
    scores = apply_temperature(raw, fit_temperature(raw, targets))
    for target in (0.01, 0.05):
        thresholds = choose_thresholds(scores, targets, LABELS, target)
        decided = DecisionRule(LABELS, thresholds).decide(scores)
        negative = targets >= 2
        for k, label in enumerate(LABELS[:2]):
            false_accepts = np.mean(decided[negative] == k)
            assert false_accepts <= target
            # a slightly lower threshold would break the target: the threshold is the lowest that meets it
            lower = DecisionRule(LABELS, {**thresholds, label: thresholds[label] * 0.98}).decide(scores)
            assert np.mean(lower[negative] == k) > target or thresholds[label] == 0.0


def test_kws_export_calibrate_writes_temperature_and_thresholds_and_parity_holds(tmp_path):
    import json

    import onnxruntime
    import torch

    from export.cli import export_main, parity
    from model.checkpoint import save_checkpoint
    from model.network import DelaySNN, ModelConfig
    from model.vocabulary import KWS10_KEYWORDS, KWS10_LABELS
    from tests.audio_files import write_mini_gsc
    from training.config import DataConfig, ExperimentConfig

    root = write_mini_gsc(tmp_path / "data")
    config = ExperimentConfig(model=ModelConfig(input_size=40, hidden_sizes=(16,), num_classes=10, max_delay=5),
                              data=DataConfig(task="kws10", root=str(root / "gsc"), synth_root=str(root / "synth"),
                                              held_out_words=("happy",)))
    torch.manual_seed(0)
    model = DelaySNN(config.model).eval()
    save_checkpoint(tmp_path / "m.pt", model, name="tiny", labels=list(KWS10_LABELS), feature_config=config.features,
                    training={"config": config.to_dict()}, metrics={})
    assert export_main([str(tmp_path / "m.pt"), "-o", str(tmp_path / "m.onnx"), "--formulation", "shift",
                        "--calibrate", "0.05"]) == 0
    metadata = onnxruntime.InferenceSession(str(tmp_path / "m.onnx")).get_modelmeta().custom_metadata_map
    thresholds = json.loads(metadata["keyword_thresholds"])
    assert set(thresholds) == set(KWS10_KEYWORDS) and all(0.0 <= t <= 1.0 for t in thresholds.values())
    assert float(metadata["calibration_temperature"]) > 0
    report = json.loads(metadata["calibration"])
    assert report["clips"]["synthetic"] == 2 and report["clips"]["nonspeech"] == 400  # the calibration half: "chair"
    agreement = parity(tmp_path / "m.pt", tmp_path / "m.onnx", None)  # the reference gets the same temperature
    assert agreement["same_top1_fraction"] == 1.0 and agreement["max_abs_score_delta"] < 1e-4
