"""Did the delays learn? Figures of the DCLS positions, per delay layer (hidden 1, ..., readout).

Used by the trainer every epoch (``metrics.json``: ``position_grad_norm``, ``delay_shift``,
``delays_changed``) and by ``kws-ablation`` at the end of a run (the distribution of the moves, how many
positions sit on the kernel's edges). Only existing synapses count: pruned ones (``fan_in``) have a
position that never receives a gradient.

The initial delays of a run are those of a freshly built network with the run's model configuration:
``structure_seed`` draws the positions, so :func:`initial_delays` of ``DelaySNN(config)`` are the delays the
run started from (a run started with ``--init-from`` starts from the checkpoint's instead).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from model.delays import DelayedSynapses, DelayMode
from model.network import DelaySNN


def _existing(layer: DelayedSynapses) -> Tensor:
    """``(out, in, taps)`` bool: the synapses that exist (the sparse mask broadcast over the taps)."""
    return layer.mask.bool().unsqueeze(-1).expand(-1, -1, layer.kernel_count)


def learned_layers(model: DelaySNN) -> list[DelayedSynapses]:
    return [layer for layer in model.delay_layers() if layer.mode is DelayMode.LEARNED]


@torch.no_grad()
def initial_delays(model: DelaySNN) -> list[Tensor]:
    """Real-valued delays (steps) of every learned layer's existing synapses, as a flat tensor per layer."""
    return [layer.continuous_delays()[_existing(layer)].detach().cpu().clone() for layer in learned_layers(model)]


@torch.no_grad()
def position_grad_norms(model: DelaySNN) -> list[float]:
    """L2 norm of the loss gradient of each learned layer's positions (call after ``backward()``)."""
    norms = []
    for layer in learned_layers(model):
        grad = layer.dcls.P.grad
        norms.append(0.0 if grad is None else float(grad[0][_existing(layer)].float().norm()))
    return norms


@torch.no_grad()
def delay_shift(model: DelaySNN, initial: list[Tensor]) -> tuple[list[float], list[float]]:
    """Per learned layer: mean |d - d0| in steps (real-valued delays), and the fraction of synapses whose
    rounded delay (the shipped one) differs from the rounded initial one."""
    shifts, changed = [], []
    for layer, start in zip(learned_layers(model), initial):
        now = layer.continuous_delays()[_existing(layer)].cpu()
        shifts.append(float((now - start).abs().mean()))
        rounded_now = layer.integer_delays()[_existing(layer)].cpu()
        rounded_start = (layer.position_limit - torch.round(layer.position_limit - start)).long()
        changed.append(float((rounded_now != rounded_start).float().mean()))
    return shifts, changed


@dataclass
class LayerMovement:
    """How far one layer's delays moved from where they started, in steps."""

    layer: str
    synapses: int
    mean_abs_shift: float
    median_abs_shift: float
    p90_abs_shift: float
    moved_one_step: float  # fraction of synapses with |d - d0| >= 1 step
    rounded_changed: float  # fraction of synapses whose integer delay changed
    at_edges: float  # fraction of positions on the kernel's edges (clamped: delay 0 or max_delay - 1)
    initial_at_edges: float
    sigma: float  # mean DCLS SIG at the end

    def to_dict(self) -> dict:
        return asdict(self)


def layer_names(model: DelaySNN) -> list[str]:
    count = len(model.delay_layers())
    return [f"hidden {i + 1}" if i < count - 1 else "readout" for i in range(count)]


@torch.no_grad()
def movement(trained: DelaySNN, initial: DelaySNN) -> tuple[list[LayerMovement], list[tuple[np.ndarray, np.ndarray]]]:
    """Per learned layer: the summary of the moves, and the (initial, final) real-valued delays."""
    summaries, pairs = [], []
    names = dict(zip(map(id, trained.delay_layers()), layer_names(trained)))
    for layer, start in zip(learned_layers(trained), initial_delays(initial)):
        end = layer.continuous_delays()[_existing(layer)].cpu()
        shift = (end - start).abs().numpy()
        top = layer.max_delay - 1
        rounded_end = layer.integer_delays()[_existing(layer)].cpu()
        rounded_start = (layer.position_limit - torch.round(layer.position_limit - start)).long()
        summaries.append(LayerMovement(
            layer=names[id(layer)], synapses=int(shift.size), mean_abs_shift=float(shift.mean()),
            median_abs_shift=float(np.median(shift)), p90_abs_shift=float(np.percentile(shift, 90)),
            moved_one_step=float((shift >= 1.0).mean()),
            rounded_changed=float((rounded_end != rounded_start).float().mean()),
            at_edges=float(((end <= 1e-4) | (end >= top - 1e-4)).float().mean()),
            initial_at_edges=float(((start <= 1e-4) | (start >= top - 1e-4)).float().mean()),
            sigma=float(layer.dcls.SIG.abs().mean()),
        ))
        pairs.append((start.numpy(), end.numpy()))
    return summaries, pairs
