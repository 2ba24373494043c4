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

import torch

from model.network import DelaySNN

SYNAPSE_WEIGHT = "synapses.dcls.weight"  # (out, in, taps) of every delay layer, the readout's too


def load_widened(model: DelaySNN, trained: Mapping[str, torch.Tensor]) -> list[str]:
    """Loads ``trained`` into ``model`` (same tensors, hidden layers as wide or wider); returns the keys that
    were widened. Raises ValueError on any other difference."""
    target = model.state_dict()
    if set(target) != set(trained):
        raise ValueError(f"--init-from: the networks differ in their tensors: "
                         f"{sorted(set(target) ^ set(trained))[:6]} (only hidden widths may change)")
    widened = []
    with torch.no_grad():
        for key, new in target.items():
            old = trained[key]
            if old.shape == new.shape:
                new.copy_(old)
                continue
            if old.ndim != new.ndim or any(o > n for o, n in zip(old.shape, new.shape)):
                raise ValueError(f"--init-from: {key} is {tuple(old.shape)} in the trained network and "
                                 f"{tuple(new.shape)} here; a fine-tune may only widen hidden layers")
            new[tuple(slice(0, size) for size in old.shape)] = old
            if key.endswith(SYNAPSE_WEIGHT) and new.shape[1] > old.shape[1]:
                new[: old.shape[0], old.shape[1]:] = 0.0  # the new inputs of the trained neurons: silent at first
            widened.append(key)
    model.load_state_dict(target)
    return widened
