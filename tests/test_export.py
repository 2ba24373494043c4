import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from export.cli import export_main
from export.freeze import freeze
from export.onnx_graph import build_onnx
from model.checkpoint import load_checkpoint, save_checkpoint
from model.features import FeatureConfig
from model.network import DelaySNN, ModelConfig, class_scores


def trained_like_checkpoint(tmp_path, **overrides):
    """A small network with non-trivial batch-norm statistics and non-integer positions, saved and reloaded."""
    torch.manual_seed(0)
    config = ModelConfig(**{**dict(input_size=12, hidden_sizes=(24, 20), num_classes=4, max_delay=9), **overrides})
    model = DelaySNN(config)
    model.train()
    with torch.no_grad():
        for _ in range(5):
            model(torch.randn(8, 12, 30) * 2 + 0.5)
    model.eval()
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, name="tiny", labels=["a", "b", "c", "d"], feature_config=FeatureConfig(n_mels=12),
                    training={"environment": {"git_commit": "abc"}}, metrics={"validation": {"accuracy": 0.5}})
    return load_checkpoint(path), path


def reference_scores(checkpoint, features):
    with torch.no_grad():
        output = checkpoint.model(torch.from_numpy(features), discrete_delays=True)
    return class_scores(output.potentials).numpy(), [s.sum(dim=(0, 2)).numpy() for s in output.hidden_spikes]


@pytest.mark.parametrize("overrides", [
    {}, {"kernel_count": 2}, {"fan_in": 5}, {"delay_mode": "random"}, {"delay_mode": "none"},
    {"hidden_sizes": (16, 16, 16), "kernel_count": 2, "fan_in": 7},
])
def test_onnx_graph_equals_the_pytorch_discretised_network(tmp_path, overrides):
    checkpoint, _ = trained_like_checkpoint(tmp_path, **overrides)
    network = freeze(checkpoint)
    session = onnxruntime.InferenceSession(build_onnx(network).SerializeToString())
    rng = np.random.default_rng(1)
    flips = 0
    for batch in (1, 3, 16):
        features = (rng.standard_normal((batch, 12, 30)) * 2).astype(np.float32)
        expected, expected_counts = reference_scores(checkpoint, features)
        scores, counts = session.run(None, {"features": features})
        assert scores.shape == (batch, 4) and counts.shape == (batch, len(checkpoint.model.hidden))
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
        delta = np.abs(scores - expected).max()
        flips += int(delta > 1e-4)
        assert (scores.argmax(1) == expected.argmax(1)).all()
        assert np.abs(counts.T - np.stack(expected_counts)).max() <= 1  # a spike may flip at the threshold
        np.testing.assert_allclose(network.scores(features), expected, atol=1e-4)
    assert flips <= 1


@pytest.mark.parametrize("formulation", ["conv", "shift"])
def test_alternative_formulations_agree_with_the_exported_one(tmp_path, formulation):
    checkpoint, _ = trained_like_checkpoint(tmp_path, kernel_count=2, fan_in=9)
    network = freeze(checkpoint)
    features = (np.random.default_rng(2).standard_normal((4, 12, 30)) * 2).astype(np.float32)
    event = onnxruntime.InferenceSession(build_onnx(network).SerializeToString()).run(None, {"features": features})[0]
    other = onnxruntime.InferenceSession(build_onnx(network, formulation=formulation).SerializeToString())
    np.testing.assert_allclose(other.run(None, {"features": features})[0], event, atol=1e-4)


def test_frozen_delays_and_folded_batch_norm(tmp_path):
    checkpoint, _ = trained_like_checkpoint(tmp_path, kernel_count=2)
    network = freeze(checkpoint)
    layers = checkpoint.model.delay_layers()
    for frozen, layer in zip(network.layers, layers):
        assert np.array_equal(frozen.delay, layer.integer_delays().numpy())
    norm = checkpoint.model.hidden[0].norm
    scale = (norm.weight / torch.sqrt(norm.running_var + norm.eps)).detach().numpy()
    raw = layers[0].synaptic_weight.detach().numpy()
    np.testing.assert_allclose(network.layers[0].weight, raw * scale[:, None, None], rtol=1e-5, atol=1e-7)
    assert network.layers[-1].threshold == float("inf") and np.all(network.layers[-1].bias == 0)


def test_export_cli_writes_metadata_the_service_reads(tmp_path):
    _, path = trained_like_checkpoint(tmp_path, fan_in=6)
    output = tmp_path / "model.onnx"
    assert export_main([str(path), "-o", str(output), "--version", "1.2.3"]) == 0
    model = onnx.load(output)
    assert model.opset_import[0].version >= 17
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["labels"]) == ["a", "b", "c", "d"]
    assert FeatureConfig.from_dict(json.loads(props["feature_config"])) == FeatureConfig(n_mels=12)
    assert props["model_version"] == "1.2.3" and props["name"] == "tiny"
    assert json.loads(props["metrics"])["validation"]["accuracy"] == 0.5
    assert int(props["synapse_count"]) == 6 * (24 + 20 + 4)
    assert len(json.loads(props["delay_statistics"])) == 3
    session = onnxruntime.InferenceSession(str(output))
    assert [i.name for i in session.get_inputs()] == ["features"]
    assert [o.name for o in session.get_outputs()] == ["scores", "spike_counts"]
    # batch and time are dynamic
    scores, _ = session.run(None, {"features": np.zeros((2, 12, 45), np.float32)})
    assert scores.shape == (2, 4)


def test_export_cli_reports_a_bad_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert export_main([str(bad), "-o", str(tmp_path / "x.onnx")]) == 2
    assert "kws-export" in capsys.readouterr().err
