"""Fine-tuning a wider network from a trained narrower one, starting from the same function (Net2Net-style).

``kws-train --init-from SMALL.pt --set model.hidden_sizes=[288, 288]``: every tensor of the trained network
is copied into the leading block of the wider one's; the new neurons keep the wider network's fresh
initialisation (weights, delay positions, batch norm) for their incoming synapses, and their *outgoing*
synapses start at weight 0. So at step 0 the wider network computes exactly what the trained one did (the
new neurons spike, but nothing listens yet), and training grows their influence from there (Chen et al.,
"Net2Net", 2016, function-preserving widening; zero outgoing weights instead of its split copies, which would
need the new neurons' spikes to equal the old ones'). Only the hidden widths may differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import torch

from model.network import DelaySNN, ModelConfig

SYNAPSE_WEIGHT = "synapses.dcls.weight"  # (out, in, taps) of every delay layer, the readout's too


class IncompatibleInitError(ValueError):
    """``--init-from`` given a network that is not this one, or a narrower one of it."""


# What gives the tensors their meaning: a difference here is another network, not a wider one (a longer
# max_delay, say, keeps every shape but moves what each position means).
STRUCTURE = ("input_size", "num_classes", "delay_mode", "max_delay", "kernel_count", "fan_in", "structure_seed")


def load_widened(model: DelaySNN, trained: Mapping[str, torch.Tensor], trained_config: ModelConfig) -> list[str]:
    """Loads ``trained`` (a network of ``trained_config``) into ``model`` (the same network, hidden layers as
    wide or wider); returns the keys that were widened. Raises ValueError on any other difference."""
    config = replace(trained_config, hidden_sizes=model.config.hidden_sizes)
    differ = [name for name in STRUCTURE if getattr(config, name) != getattr(model.config, name)]
    if differ or len(trained_config.hidden_sizes) != len(model.config.hidden_sizes):
        raise IncompatibleInitError("--init-from: the trained network differs in more than its hidden widths: "
                         + ", ".join(f"{n} {getattr(trained_config, n)} here {getattr(model.config, n)}" for n in differ)
                         + ("" if differ else f"hidden layers {trained_config.hidden_sizes} here {model.config.hidden_sizes}"))
    target = model.state_dict()
    if set(target) != set(trained):
        raise IncompatibleInitError(f"--init-from: the networks differ in their tensors: "
                         f"{sorted(set(target) ^ set(trained))[:6]} (only hidden widths may change)")
    widened = []
    with torch.no_grad():
        for key, new in target.items():
            old = trained[key]
            if old.shape == new.shape:
                new.copy_(old)
                continue
            if old.ndim != new.ndim or any(o > n for o, n in zip(old.shape, new.shape)):
                raise IncompatibleInitError(f"--init-from: {key} is {tuple(old.shape)} in the trained network and "
                                 f"{tuple(new.shape)} here; a fine-tune may only widen hidden layers")
            new[tuple(slice(0, size) for size in old.shape)] = old
            if key.endswith(SYNAPSE_WEIGHT) and new.shape[1] > old.shape[1]:
                new[: old.shape[0], old.shape[1]:] = 0.0  # the new inputs of the trained neurons: silent at first
            widened.append(key)
    model.load_state_dict(target)
    return widened
