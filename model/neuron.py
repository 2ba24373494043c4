"""Leaky integrate-and-fire neuron of the paper (SpikingJelly's ``LIFNode`` settings).

The maths lives in :func:`lif_step`, a pure function of an input current and a
:class:`LIFState`; :class:`LIF` is a thin module that runs it over a time-major
sequence. Per time step, with ``decay = 1 - 1/tau`` and the input *not* decayed::

    v      = decay * v + input
    spike  = H(v - threshold)            # ATan surrogate gradient in backward
    v      = v * (1 - spike.detach())    # hard reset to 0, reset kept out of the gradient

A readout layer uses ``threshold = inf``: it never fires and its membrane
potential is the network's output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

TAU = 1.5  # membrane time constant in time steps: the paper's GSC setting, 15 ms at 10-ms steps
THRESHOLD = 1.0
SURROGATE_ALPHA = 5.0


@dataclass(frozen=True)
class LIFParameters:
    tau: float = TAU
    threshold: float = THRESHOLD
    surrogate_alpha: float = SURROGATE_ALPHA

    @property
    def decay(self) -> float:
        return 1.0 - 1.0 / self.tau


class LIFState(NamedTuple):
    v: Tensor  # membrane potential after the (possible) reset


class ATanSpike(torch.autograd.Function):
    """Heaviside step forward; derivative of ``atan(pi/2 * alpha * x) / pi + 1/2`` backward."""

    @staticmethod
    def forward(ctx, x: Tensor, alpha: float) -> Tensor:  # noqa: D102
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # noqa: D102
        (x,) = ctx.saved_tensors
        alpha = ctx.alpha
        surrogate = (alpha / 2) / (1 + (math.pi / 2 * alpha * x) ** 2)
        return grad_output * surrogate, None


def lif_step(input_current: Tensor, state: LIFState, params: LIFParameters) -> tuple[Tensor, LIFState]:
    """Advance the neuron by one time step. Returns ``(spikes, new_state)``."""
    v = params.decay * state.v + input_current
    if math.isinf(params.threshold):
        return torch.zeros_like(v), LIFState(v)
    spikes = ATanSpike.apply(v - params.threshold, params.surrogate_alpha)
    v = v * (1.0 - spikes.detach())
    return spikes, LIFState(v)


def initial_state(like: Tensor) -> LIFState:
    return LIFState(torch.zeros_like(like))


class LIF(nn.Module):
    """Multi-step LIF layer over a time-major ``(T, batch, neurons)`` input current."""

    def __init__(self, params: LIFParameters = LIFParameters()) -> None:
        super().__init__()
        self.params = params

    def forward(self, current: Tensor) -> Tensor:
        """Spikes ``(T, batch, neurons)``; for a readout (``threshold=inf``) the potentials instead."""
        state = initial_state(current[0])
        outputs = []
        readout = math.isinf(self.params.threshold)
        for step_current in current:
            spikes, state = lif_step(step_current, state, self.params)
            outputs.append(state.v if readout else spikes)
        return torch.stack(outputs)

    def extra_repr(self) -> str:
        p = self.params
        return f"tau={p.tau}, threshold={p.threshold}, surrogate_alpha={p.surrogate_alpha}"
