"""The feedforward delay SNN: hidden LIF layers joined by delayed synapses, and a non-firing readout.

Layout: features ``(batch, n_inputs, T)`` → for each hidden layer: delayed synapses →
batch norm → LIF → dropout (one mask per sequence) → delayed synapses → readout LIF
whose membrane potentials ``(T, batch, classes)`` are the output. The class scores
are the paper's readout: the softmax of the potentials, summed over time
(:func:`class_scores` divides by T so the scores sum to one).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from model.config_io import from_dict_strict
from model.delays import DelayedSynapses, DelayMode
from model.neuron import LIF, LIFParameters, SURROGATE_ALPHA, TAU, THRESHOLD


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a delay SNN; stored in every checkpoint and exported graph."""

    input_size: int = 40
    hidden_sizes: tuple[int, ...] = (256, 256)
    num_classes: int = 10
    delay_mode: str = DelayMode.LEARNED.value
    max_delay: int = 25  # kernel length in time steps; delays are 0 .. max_delay - 1
    kernel_count: int = 1  # taps per synapse
    fan_in: int | None = None  # synapses per neuron; None = fully connected
    sigma_init: float | None = None  # DCLS sigma at the start; None = max_delay // 2 as in the paper
    sigma_learned: bool = False  # sigma trained by gradient with the positions, per tap (no schedule)
    delay_init_spread: float = 1.0  # initial/random delays drawn over this middle fraction of the kernel
    dropout: float = 0.25
    batch_norm: bool = True
    tau: float = TAU
    threshold: float = THRESHOLD
    surrogate_alpha: float = SURROGATE_ALPHA
    structure_seed: int = 0  # draws the initial positions, random delays and sparse masks

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        DelayMode(self.delay_mode)
        if not 1 <= len(self.hidden_sizes) <= 4:
            raise ValueError(f"expected 1-4 hidden layers, got {self.hidden_sizes}")

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["hidden_sizes"] = list(self.hidden_sizes)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
        return from_dict_strict(cls, values, "model parameters")


class SNNOutput(NamedTuple):
    potentials: Tensor  # (T, batch, classes) readout membrane potentials
    hidden_spikes: tuple[Tensor, ...]  # per hidden layer, (T, batch, neurons)


class SequenceDropout(nn.Module):
    """Dropout with one mask per sequence, shared by all time steps of a ``(T, batch, n)`` input."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.empty_like(x[0]).bernoulli_(1 - self.p) / (1 - self.p)
        return x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class HiddenLayer(nn.Module):
    def __init__(self, synapses: DelayedSynapses, batch_norm: bool, neuron: LIFParameters, dropout: float) -> None:
        super().__init__()
        self.synapses = synapses
        self.norm = nn.BatchNorm1d(synapses.out_features) if batch_norm else nn.Identity()
        self.neurons = LIF(neuron)
        self.dropout = SequenceDropout(dropout)

    def forward(self, x: Tensor, discrete: bool) -> Tensor:
        """``(batch, in, T)`` → spikes ``(T, batch, out)``."""
        current = self.norm(self.synapses(x, discrete))
        return self.dropout(self.neurons(current.permute(2, 0, 1)))


class DelaySNN(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        generator = torch.Generator().manual_seed(config.structure_seed)
        neuron = LIFParameters(config.tau, config.threshold, config.surrogate_alpha)
        sizes = (config.input_size, *config.hidden_sizes, config.num_classes)

        def synapses(n_in: int, n_out: int) -> DelayedSynapses:
            return DelayedSynapses(
                n_in, n_out, config.max_delay, config.delay_mode, config.kernel_count,
                config.fan_in, config.sigma_init, generator, config.delay_init_spread, config.sigma_learned,
            )

        self.hidden = nn.ModuleList(
            HiddenLayer(synapses(n_in, n_out), config.batch_norm, neuron, config.dropout)
            for n_in, n_out in zip(sizes[:-2], sizes[1:-1])
        )
        self.readout_synapses = synapses(sizes[-2], sizes[-1])
        self.readout_neurons = LIF(LIFParameters(config.tau, float("inf"), config.surrogate_alpha))

    def delay_layers(self) -> list[DelayedSynapses]:
        return [layer.synapses for layer in self.hidden] + [self.readout_synapses]

    def forward(self, features: Tensor, discrete_delays: bool = False) -> SNNOutput:
        """``features``: ``(batch, input_size, T)``. ``discrete_delays`` rounds learned delays."""
        x = features
        spikes = []
        for layer in self.hidden:
            layer_spikes = layer(x, discrete_delays)
            spikes.append(layer_spikes)
            x = layer_spikes.permute(1, 2, 0)
        current = self.readout_synapses(x, discrete_delays)
        potentials = self.readout_neurons(current.permute(2, 0, 1))
        return SNNOutput(potentials, tuple(spikes))

    @torch.no_grad()
    def set_sigma(self, sigma: float) -> None:
        for layer in self.delay_layers():
            layer.set_sigma(sigma)

    def mean_sigma(self) -> float | None:
        """DCLS's SIG averaged over the learned layers (None without learned delays)."""
        values = [layer.sigma for layer in self.delay_layers() if layer.sigma is not None]
        return sum(values) / len(values) if values else None

    @torch.no_grad()
    def clamp_positions(self) -> None:
        for layer in self.delay_layers():
            layer.clamp_positions()

    def parameter_count(self) -> dict[str, int]:
        """Trainable numbers of the shipped (discretised) network: synaptic weights, delays, the rest."""
        synapses = sum(layer.synapse_count() for layer in self.delay_layers())
        learned_delays = synapses if DelayMode(self.config.delay_mode) is DelayMode.LEARNED else 0
        other = sum(p.numel() for n, p in self.named_parameters() if "synapses" not in n)
        return {"weights": synapses, "delays": learned_delays, "other": other, "total": synapses + learned_delays + other}


def class_scores(potentials: Tensor) -> Tensor:
    """The paper's readout normalised to probabilities: mean over time of softmax(potentials), ``(batch, classes)``."""
    return potentials.softmax(dim=-1).mean(dim=0)


def readout_loss(potentials: Tensor, targets: Tensor) -> Tensor:
    """The paper's loss: cross-entropy of the sum over time of the softmax of the readout potentials."""
    summed = potentials.softmax(dim=-1).sum(dim=0)
    return nn.functional.cross_entropy(summed, targets)
