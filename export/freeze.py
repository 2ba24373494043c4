"""The fixed-delay intermediate representation of a trained network.

:func:`freeze` turns a checkpoint's network into plain numpy arrays: for every
layer, each synapse tap's weight (batch norm folded in) and its integer delay
(the rounded DCLS position, :meth:`model.delays.DelayedSynapses.integer_delays`),
a per-neuron bias (the batch-norm shift) and the neuron constants. Nothing in
here needs torch once frozen; :meth:`FrozenNetwork.forward` is a numpy
reference of the exported graph.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class FrozenLayer:
    weight: np.ndarray  # (out, in, taps) float32, batch norm folded in; 0 where no synapse
    delay: np.ndarray  # (out, in, taps) int64 steps, 0 .. max_delay - 1
    bias: np.ndarray  # (out,) float32
    decay: float  # 1 - 1/tau
    threshold: float  # math.inf for the readout

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def is_readout(self) -> bool:
        return math.isinf(self.threshold)

    @property
    def synapse_count(self) -> int:
        return int(np.count_nonzero(self.weight))

    def delay_matrices(self) -> dict[int, np.ndarray]:
        """``delay → (in, out)`` weight matrix of the taps with that delay (taps sharing a delay add)."""
        matrices: dict[int, np.ndarray] = {}
        for d in np.unique(self.delay[self.weight != 0]):
            chosen = np.where(self.delay == d, self.weight, 0.0).sum(axis=2)
            matrices[int(d)] = chosen.T.astype(np.float32)
        return matrices

    def currents(self, x: np.ndarray) -> np.ndarray:
        """Input ``(T, batch, in)`` → synaptic current ``(T, batch, out)`` (explicit integer shifts)."""
        steps = x.shape[0]
        current = np.zeros((steps, x.shape[1], self.out_features), dtype=np.float32)
        for d, matrix in self.delay_matrices().items():
            if d < steps:
                current[d:] += x[: steps - d] @ matrix
        return current + self.bias

    def neurons(self, current: np.ndarray) -> np.ndarray:
        """LIF over ``(T, batch, out)``: spikes, or potentials for the readout."""
        v = np.zeros(current.shape[1:], dtype=np.float32)
        outputs = np.empty_like(current)
        decay = np.float32(self.decay)
        for t in range(current.shape[0]):
            v = decay * v + current[t]
            if self.is_readout:
                outputs[t] = v
                continue
            spikes = (v >= np.float32(self.threshold)).astype(np.float32)
            outputs[t] = spikes
            v = v * (1.0 - spikes)
        return outputs


@dataclass
class FrozenNetwork:
    layers: list[FrozenLayer]  # hidden layers, then the readout
    labels: list[str]
    feature_config: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def input_size(self) -> int:
        return self.layers[0].in_features

    @property
    def max_delay(self) -> int:
        return max(int(layer.delay.max()) + 1 for layer in self.layers)

    def forward(self, features: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """``features (batch, input, T)`` → readout potentials ``(T, batch, classes)`` and hidden spikes."""
        x = np.ascontiguousarray(np.transpose(features, (2, 0, 1)), dtype=np.float32)
        spikes = []
        for layer in self.layers:
            x = layer.neurons(layer.currents(x))
            if not layer.is_readout:
                spikes.append(x)
        return x, spikes

    def scores(self, features: np.ndarray) -> np.ndarray:
        potentials, _ = self.forward(features)
        shifted = np.exp(potentials - potentials.max(axis=-1, keepdims=True))
        return (shifted / shifted.sum(axis=-1, keepdims=True)).mean(axis=0)

    def delay_statistics(self) -> list[dict[str, float]]:
        stats = []
        for layer in self.layers:
            used = layer.delay[layer.weight != 0]
            stats.append({"mean": float(used.mean()) if used.size else 0.0, "max": int(used.max()) if used.size else 0,
                          "zero_fraction": float((used == 0).mean()) if used.size else 0.0,
                          "synapses": int(used.size)})
        return stats

    def parameter_count(self) -> int:
        return sum(2 * layer.synapse_count + layer.out_features for layer in self.layers)


def freeze(checkpoint: Any) -> FrozenNetwork:
    """A :class:`model.checkpoint.LoadedCheckpoint` → :class:`FrozenNetwork` (delays rounded, BN folded)."""
    import torch

    model = checkpoint.model.eval()
    layers = []
    blocks = [(layer.synapses, layer.norm, layer.neurons.params) for layer in model.hidden]
    blocks.append((model.readout_synapses, None, model.readout_neurons.params))
    with torch.no_grad():
        for synapses, norm, params in blocks:
            weight = synapses.synaptic_weight.detach().double()
            bias = torch.zeros(weight.shape[0], dtype=torch.float64)
            if isinstance(norm, torch.nn.BatchNorm1d):
                scale = norm.weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)
                weight = weight * scale[:, None, None]
                bias = norm.bias.double() - norm.running_mean.double() * scale
            layers.append(FrozenLayer(
                weight=weight.float().numpy(), delay=synapses.integer_delays().numpy().astype(np.int64),
                bias=bias.float().numpy(), decay=float(params.decay), threshold=float(params.threshold),
            ))
    metadata = {
        "name": checkpoint.name,
        "model_config": json.dumps(checkpoint.model_config.to_dict()),
        "metrics": json.dumps(checkpoint.metrics),
    }
    return FrozenNetwork(layers, list(checkpoint.labels), checkpoint.feature_config.to_dict(), metadata)
