import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from export.cli import export_main
from export.freeze import FrozenNetwork, freeze
from export.onnx_graph import Segment, build_onnx, plan_from_json
from export.planner import layer_model, plan_from_timings
from export.synapses import EXACT, int8_layer, int24_digits
from model.checkpoint import load_checkpoint, save_checkpoint
from model.features import FeatureConfig
from model.network import DelaySNN, ModelConfig, class_scores

CONFIGS = [
    {}, {"kernel_count": 2}, {"fan_in": 5}, {"delay_mode": "random"}, {"delay_mode": "none"},
    {"hidden_sizes": (16, 16, 16), "kernel_count": 2, "fan_in": 7}, {"hidden_sizes": (24,)},
]


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


def assert_matches_pytorch(checkpoint, model: onnx.ModelProto, batches=(1, 3, 16), steps=30):
    session = onnxruntime.InferenceSession(model.SerializeToString())
    rng = np.random.default_rng(1)
    flips = 0
    for batch in batches:
        features = (rng.standard_normal((batch, 12, steps)) * 2).astype(np.float32)
        expected, expected_counts = reference_scores(checkpoint, features)
        scores, counts = session.run(None, {"features": features})
        assert scores.shape == (batch, 4) and counts.shape == (batch, len(checkpoint.model.hidden))
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
        flips += int(np.abs(scores - expected).max() > 1e-4)
        assert (scores.argmax(1) == expected.argmax(1)).all()
        assert np.abs(counts.T - np.stack(expected_counts)).max() <= 1  # a spike may flip at the threshold
    assert flips <= 1


@pytest.mark.parametrize("formulation", EXACT)
@pytest.mark.parametrize("overrides", CONFIGS)
def test_every_exact_formulation_equals_the_pytorch_discretised_network(tmp_path, overrides, formulation):
    checkpoint, _ = trained_like_checkpoint(tmp_path, **overrides)
    assert_matches_pytorch(checkpoint, build_onnx(freeze(checkpoint), formulation=formulation))


@pytest.mark.parametrize("overrides", [{}, {"hidden_sizes": (16, 16, 16), "kernel_count": 2, "fan_in": 7}])
def test_reference_neurons_and_numpy_forward_equal_pytorch(tmp_path, overrides):
    checkpoint, _ = trained_like_checkpoint(tmp_path, **overrides)
    network = freeze(checkpoint)
    assert_matches_pytorch(checkpoint, build_onnx(network, neurons="reference"))
    features = (np.random.default_rng(2).standard_normal((4, 12, 30)) * 2).astype(np.float32)
    np.testing.assert_allclose(network.scores(features), reference_scores(checkpoint, features)[0], atol=1e-4)


def test_a_plan_switching_formulation_by_batch_size_is_exact_on_every_branch(tmp_path):
    checkpoint, _ = trained_like_checkpoint(tmp_path, kernel_count=2, fan_in=9)
    plan = [(Segment(2, "conv"), Segment(None, "unfold")),
            (Segment(1, "int24"), Segment(4, "stacked"), Segment(None, "shift")),
            (Segment(None, "int24"),)]
    model = build_onnx(freeze(checkpoint), formulation=plan)
    def ifs(graph):
        return sum((node.op_type == "If") + sum(ifs(a.g) for a in node.attribute if a.g.node) for node in graph.node)

    assert ifs(model.graph) == 3  # one per layer with two segments, nested for three
    assert plan_from_json({p.key: p.value for p in model.metadata_props}["synapse_plan"]) == plan
    assert_matches_pytorch(checkpoint, model, batches=(1, 2, 3, 5, 16))


def test_int24_currents_are_as_close_to_float64_as_the_float_forms(tmp_path):
    """24-bit weights with exact integer sums: no further from the exact currents than float32 GEMMs are."""
    checkpoint, _ = trained_like_checkpoint(tmp_path, hidden_sizes=(64, 48), kernel_count=2)
    layer = freeze(checkpoint).layers[1]
    spikes = np.random.default_rng(3).random((40, 5, 64)) < 0.2
    exact = np.zeros((40, 5, 48))
    for o, i, k in zip(*np.nonzero(layer.weight)):
        d = layer.delay[o, i, k]
        exact[d:, :, o] += layer.weight[o, i, k].astype(np.float64) * spikes[: 40 - d, :, i]
    exact += layer.bias
    errors = {}
    for formulation in ("int24", "shift", "unfold", "conv"):
        model = layer_model(layer, first=False, formulation=formulation, layout="TBC")
        current = onnxruntime.InferenceSession(model.SerializeToString()).run(None, {"x": spikes})[0]
        errors[formulation] = np.abs(current - exact).max()
    assert errors["int24"] <= 2 * max(errors["shift"], errors["unfold"], errors["conv"]) < 1e-5


def test_int24_digits_rebuild_the_weights_to_24_bits():
    weights = np.random.default_rng(4).standard_normal((300, 7)).astype(np.float32)
    weights[:, 3] = 0  # a neuron without synapses
    weights[5, 2] = 1e-9
    digits, scales = int24_digits(weights)
    assert digits.dtype == np.int8 and digits.shape == (300, 21)
    rebuilt = (digits.astype(np.float64).reshape(300, 3, 7) * scales.astype(np.float64)).sum(axis=1)
    peak = np.abs(weights).max(axis=0)
    assert (np.abs(rebuilt - weights) <= peak * 2.0 ** -23 + 1e-30).all()
    assert not np.any(rebuilt[:, 3])


def test_int8_graph_computes_its_quantised_network(tmp_path):
    checkpoint, _ = trained_like_checkpoint(tmp_path, kernel_count=2, fan_in=9)
    network = freeze(checkpoint)
    quantised = FrozenNetwork([network.layers[0], *map(int8_layer, network.layers[1:])], network.labels,
                              network.feature_config)
    session = onnxruntime.InferenceSession(build_onnx(network, formulation=[
        (Segment(None, "conv"),), (Segment(None, "int8"),), (Segment(None, "int8"),)]).SerializeToString())
    features = (np.random.default_rng(5).standard_normal((8, 12, 30)) * 2).astype(np.float32)
    scores = session.run(None, {"features": features})[0]
    np.testing.assert_allclose(scores, quantised.scores(features), atol=1e-4)
    assert np.abs(scores - network.scores(features)).max() > 1e-6  # it is an approximation, not the float graph


def test_calibration_temperature_transforms_the_scores(tmp_path):
    checkpoint, _ = trained_like_checkpoint(tmp_path)
    network = freeze(checkpoint)
    features = (np.random.default_rng(6).standard_normal((5, 12, 30)) * 2).astype(np.float32)
    expected = reference_scores(checkpoint, features)[0].astype(np.float64)
    for temperature in (0.5, 1.0, 2.5):
        model = build_onnx(network, formulation="int24", calibration_temperature=temperature)
        scores = onnxruntime.InferenceSession(model.SerializeToString()).run(["scores"], {"features": features})[0]
        logits = np.log(expected) / temperature
        calibrated = np.exp(logits - logits.max(axis=1, keepdims=True))
        np.testing.assert_allclose(scores, calibrated / calibrated.sum(axis=1, keepdims=True), atol=1e-5)
        props = {p.key: p.value for p in model.metadata_props}
        assert float(props["calibration_temperature"]) == temperature and "/ calibration_temperature" in props["output_scores"]
    assert "calibration_temperature" not in {p.key for p in build_onnx(network).metadata_props}
    with pytest.raises(ValueError):
        build_onnx(network, calibration_temperature=0.0)


def test_plan_keeps_the_fastest_formulation_per_batch_size_without_flapping():
    sizes = (1, 2, 4, 8, 16)
    timings = {"a": [1.0, 2.0, 4.0, 8.0, 16.0], "b": [2.0, 2.05, 3.0, 5.0, 9.0], "c": [9.0] * 5}
    assert plan_from_timings(timings, sizes) == (Segment(2, "a"), Segment(None, "b"))
    # a formulation less than 10 % faster does not open a segment of its own
    assert plan_from_timings({"a": [1.0] * 5, "b": [2.0, 0.93, 2.0, 2.0, 2.0]}, sizes) == (Segment(None, "a"),)
    assert plan_from_timings({"a": [1.0] * 5, "b": [2.0, 0.5, 2.0, 2.0, 2.0]}, sizes) == (
        Segment(1, "a"), Segment(2, "b"), Segment(None, "a"))
    assert plan_from_timings({"a": [1.0, float("inf")], "b": [2.0, 2.0]}, (1, 16)) == (Segment(1, "a"), Segment(None, "b"))


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
    checkpoint, path = trained_like_checkpoint(tmp_path, fan_in=6)
    output = tmp_path / "model.onnx"
    assert export_main([str(path), "-o", str(output), "--version", "1.2.3"]) == 0  # --formulation auto: timed here
    model = onnx.load(output)
    assert model.opset_import[0].version >= 17
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["labels"]) == ["a", "b", "c", "d"]
    assert FeatureConfig.from_dict(json.loads(props["feature_config"])) == FeatureConfig(n_mels=12)
    assert props["model_version"] == "1.2.3" and props["name"] == "tiny"
    assert json.loads(props["metrics"])["validation"]["accuracy"] == 0.5
    assert int(props["synapse_count"]) == 6 * (24 + 20 + 4)
    assert len(json.loads(props["delay_statistics"])) == 3
    plan = plan_from_json(props["synapse_plan"])
    timings = json.loads(props["synapse_timings"])
    assert len(plan) == len(timings["ms_per_run"]) == 3 and timings["batch_sizes"] == [1, 2, 4, 8, 16]
    for layer, measured in zip(plan, timings["ms_per_run"]):
        assert {s.formulation for s in layer} <= {f for f, ms in measured.items() if any(ms)}
    assert "onnxruntime" in props["synapse_plan_measured_on"] and props["weights"] == "float32 (exact)"
    session = onnxruntime.InferenceSession(str(output))
    assert [i.name for i in session.get_inputs()] == ["features"]
    assert [o.name for o in session.get_outputs()] == ["scores", "spike_counts"]
    # batch and time are dynamic
    scores, _ = session.run(None, {"features": np.zeros((2, 12, 45), np.float32)})
    assert scores.shape == (2, 4)
    assert_matches_pytorch(checkpoint, model)


def test_export_cli_forces_a_formulation_and_int8(tmp_path):
    _, path = trained_like_checkpoint(tmp_path)
    assert export_main([str(path), "-o", str(tmp_path / "s.onnx"), "--formulation", "int24"]) == 0
    props = {p.key: p.value for p in onnx.load(tmp_path / "s.onnx").metadata_props}
    assert plan_from_json(props["synapse_plan"]) == [(Segment(None, "conv"),), (Segment(None, "int24"),), (Segment(None, "int24"),)]
    assert "synapse_timings" not in props
    assert export_main([str(path), "-o", str(tmp_path / "q.onnx"), "--formulation", "shift", "--int8"]) == 0
    props = {p.key: p.value for p in onnx.load(tmp_path / "q.onnx").metadata_props}
    assert [layer[0].formulation for layer in plan_from_json(props["synapse_plan"])] == ["shift", "int8", "int8"]
    assert props["weights"].startswith("int8")


def test_export_cli_reports_a_bad_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert export_main([str(bad), "-o", str(tmp_path / "x.onnx")]) == 2
    assert "kws-export" in capsys.readouterr().err
