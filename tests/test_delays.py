import pytest
import torch

from model.delays import DelayedSynapses, DelayMode, shift_kernel, sigma_schedule


def explicit_shift(x: torch.Tensor, weight: torch.Tensor, delays: torch.Tensor) -> torch.Tensor:
    """y[b, o, t] = sum_{i, k} w[o, i, k] * x[b, i, t - d[o, i, k]], written as loops."""
    batch, inputs, steps = x.shape
    outputs, _, taps = weight.shape
    y = torch.zeros(batch, outputs, steps)
    for o in range(outputs):
        for i in range(inputs):
            for k in range(taps):
                d = int(delays[o, i, k])
                y[:, o, d:] += weight[o, i, k] * x[:, i, : steps - d]
    return y


@pytest.mark.parametrize("kernel_count", [1, 2])
@pytest.mark.parametrize("fan_in", [None, 3])
def test_discretised_learned_layer_equals_explicit_integer_shifts(kernel_count, fan_in):
    torch.manual_seed(0)
    layer = DelayedSynapses(5, 4, max_delay=9, kernel_count=kernel_count, fan_in=fan_in)
    with torch.no_grad():
        layer.dcls.P.uniform_(-4.4, 4.4)  # non-integer positions: rounding must decide
    x = torch.randn(2, 5, 30)
    delays = layer.integer_delays()
    assert delays.min() >= 0 and delays.max() <= 8
    expected = explicit_shift(x, layer.synaptic_weight.detach(), delays)
    torch.testing.assert_close(layer(x, discrete=True), expected, atol=1e-5, rtol=1e-5)
    if fan_in is not None:
        assert (layer.mask.sum(dim=1) == fan_in).all()
        assert layer.synapse_count() == 4 * fan_in * kernel_count


def test_rounding_follows_the_documented_position_to_delay_map():
    layer = DelayedSynapses(1, 3, max_delay=7)
    with torch.no_grad():
        layer.dcls.P[0, :, 0, 0] = torch.tensor([3.0, 0.4, -2.6])  # D//2 - round(p)
    assert layer.integer_delays().flatten().tolist() == [0, 3, 6]


def test_continuous_layer_converges_to_discrete_one_as_sigma_shrinks():
    torch.manual_seed(1)
    layer = DelayedSynapses(6, 3, max_delay=11)
    with torch.no_grad():
        layer.dcls.P.round_()
    x = torch.randn(2, 6, 40)
    layer.set_sigma(0.0)  # DCLS's narrowest Gaussian: std 0.27
    gap = (layer(x) - layer(x, discrete=True)).abs().max()
    layer.set_sigma(3.0)
    wide_gap = (layer(x) - layer(x, discrete=True)).abs().max()
    assert gap < 0.02 * x.abs().max() < wide_gap


def test_gradients_reach_positions_and_weights_but_not_sigma():
    torch.manual_seed(2)
    layer = DelayedSynapses(4, 3, max_delay=9, sigma_init=2.0)
    layer(torch.randn(2, 4, 20)).pow(2).sum().backward()
    assert layer.dcls.P.grad is not None and layer.dcls.P.grad.abs().sum() > 0
    assert layer.dcls.weight.grad.abs().sum() > 0
    assert layer.dcls.SIG.grad is None


def test_clamp_keeps_positions_inside_the_kernel():
    layer = DelayedSynapses(2, 2, max_delay=5)
    with torch.no_grad():
        layer.dcls.P.fill_(9.0)
    layer.clamp_positions()
    assert layer.dcls.P.max() == 2.0 and layer.integer_delays().min() == 0


def test_random_and_no_delay_modes():
    torch.manual_seed(3)
    random_layer = DelayedSynapses(4, 3, max_delay=9, mode=DelayMode.RANDOM)
    x = torch.randn(2, 4, 25)
    delays = random_layer.integer_delays()
    assert delays.max() > 0
    torch.testing.assert_close(random_layer(x), explicit_shift(x, random_layer.synaptic_weight.detach(), delays))
    plain = DelayedSynapses(4, 3, max_delay=9, mode="none")
    assert plain.max_delay == 1 and plain.integer_delays().max() == 0
    torch.testing.assert_close(plain(x), torch.einsum("oi,bit->bot", plain.synaptic_weight[..., 0].detach(), x))


def test_shift_kernel_adds_taps_that_share_a_delay():
    weight = torch.tensor([[[1.0, 2.0]]])
    kernel = shift_kernel(weight, torch.tensor([[[3, 3]]]), max_delay=5)
    assert kernel.flatten().tolist() == [0.0, 3.0, 0.0, 0.0, 0.0]


def test_sigma_schedule_decays_exponentially_to_its_floor():
    values = [sigma_schedule(e, 12.0, 0.23, 10) for e in range(12)]
    assert values[0] == 12.0
    assert values[10] == values[11] == 0.23
    ratios = [values[e + 1] / values[e] for e in range(9)]
    assert max(ratios) - min(ratios) < 1e-9  # constant factor per epoch
    assert values[5] == pytest.approx((12.0 * 0.23) ** 0.5)


def test_even_max_delay_is_rejected():
    with pytest.raises(ValueError, match="odd"):
        DelayedSynapses(2, 2, max_delay=8)
