import math

import torch

from model.neuron import LIF, LIFParameters, LIFState, lif_step


def test_lif_matches_a_hand_computed_trace():
    # tau = 2 → decay 0.5; input 0.6 every step; threshold 1, hard reset to 0, input not decayed.
    params = LIFParameters(tau=2.0, threshold=1.0)
    current = torch.full((6, 1, 1), 0.6)
    spikes = LIF(params)(current).flatten().tolist()
    # v: 0.6 → 0.9 → 1.05 (spike, reset) → 0.6 → 0.9 → 1.05 (spike)
    assert spikes == [0.0, 0.0, 1.0, 0.0, 0.0, 1.0]


def test_step_function_is_pure_and_returns_the_reset_state():
    params = LIFParameters(tau=2.0)
    state = LIFState(torch.tensor([0.8, 0.2]))
    spikes, new_state = lif_step(torch.tensor([0.7, 0.1]), state, params)
    assert spikes.tolist() == [1.0, 0.0]
    assert torch.allclose(new_state.v, torch.tensor([0.0, 0.2]))  # 0.4+0.7 fired and reset; 0.1+0.1 kept
    assert torch.equal(state.v, torch.tensor([0.8, 0.2]))  # input state untouched


def test_readout_never_fires_and_returns_potentials():
    params = LIFParameters(tau=2.0, threshold=math.inf)
    potentials = LIF(params)(torch.full((3, 1, 1), 10.0)).flatten().tolist()
    assert potentials == [10.0, 15.0, 17.5]


def test_atan_surrogate_gradient_and_detached_reset():
    alpha = 5.0
    params = LIFParameters(tau=2.0, threshold=1.0, surrogate_alpha=alpha)
    x = torch.tensor([1.2], requires_grad=True)
    spikes, state = lif_step(x, LIFState(torch.zeros(1)), params)
    spikes.sum().backward()
    expected = alpha / 2 / (1 + (math.pi / 2 * alpha * 0.2) ** 2)
    assert torch.allclose(x.grad, torch.tensor([expected]))
    # The reset uses detached spikes: the state after a spike carries no gradient through the spike.
    x2 = torch.tensor([1.2], requires_grad=True)
    _, state2 = lif_step(x2, LIFState(torch.zeros(1)), params)
    assert state2.v.item() == 0.0
    state2.v.sum().backward()
    assert x2.grad.item() == 0.0
