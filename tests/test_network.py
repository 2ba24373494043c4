import pytest
import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.features import FeatureConfig
from model.network import DelaySNN, ModelConfig, SequenceDropout, class_scores, readout_loss

SMALL = ModelConfig(input_size=6, hidden_sizes=(8, 7), num_classes=3, max_delay=5)


def test_shapes_and_named_submodules():
    model = DelaySNN(SMALL)
    output = model(torch.randn(2, 6, 12))
    assert output.potentials.shape == (12, 2, 3)
    assert [s.shape for s in output.hidden_spikes] == [(12, 2, 8), (12, 2, 7)]
    names = dict(model.named_modules())
    assert {"hidden.0.synapses", "hidden.0.norm", "hidden.0.neurons", "hidden.1.dropout", "readout_synapses"} <= set(names)
    scores = class_scores(output.potentials)
    torch.testing.assert_close(scores.sum(dim=1), torch.ones(2))


def test_readout_loss_is_cross_entropy_of_summed_softmax():
    potentials = torch.randn(5, 2, 3)
    targets = torch.tensor([0, 2])
    summed = potentials.softmax(-1).sum(0)
    expected = -(summed.log_softmax(-1)[torch.arange(2), targets]).mean()
    torch.testing.assert_close(readout_loss(potentials, targets), expected)


def test_dropout_uses_one_mask_per_sequence():
    dropout = SequenceDropout(0.5).train()
    out = dropout(torch.ones(10, 4, 50))
    assert torch.equal(out, out[:1].expand_as(out))  # identical at every time step
    assert 0 < (out[0] == 0).float().mean() < 1


def test_parameter_count_of_the_reference_46k_network():
    model = DelaySNN(ModelConfig(input_size=40, hidden_sizes=(128, 128), num_classes=10, max_delay=25))
    assert model.parameter_count()["total"] == 46_080  # 2 x 22,784 synapses (weight + delay) + 512 batch norm


@pytest.mark.parametrize("mode", ["learned", "random", "none"])
def test_checkpoint_round_trip_with_weights_only(tmp_path, mode):
    torch.manual_seed(0)
    config = ModelConfig(**{**SMALL.to_dict(), "delay_mode": mode, "kernel_count": 2, "fan_in": 4})
    model = DelaySNN(config).eval()
    features = FeatureConfig(n_mels=6)
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, name="tiny", labels=["a", "b", "c"], feature_config=features,
                    training={"epoch": 3}, metrics={"validation": {"accuracy": 0.5}})
    raw = torch.load(path, weights_only=True)
    assert raw["format_version"] == 1 and raw["model_config"]["delay_mode"] == mode
    loaded = load_checkpoint(path)
    assert loaded.labels == ["a", "b", "c"] and loaded.feature_config == features and loaded.model_config == config
    assert loaded.metrics["validation"]["accuracy"] == 0.5
    x = torch.randn(2, 6, 15)
    torch.testing.assert_close(loaded.model(x, True).potentials, model(x, True).potentials)
    for before, after in zip(model.delay_layers(), loaded.model.delay_layers()):
        assert torch.equal(before.integer_delays(), after.integer_delays())


def test_load_rejects_foreign_files(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="not a delay-SNN checkpoint"):
        load_checkpoint(path)
