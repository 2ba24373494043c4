"""The diagnostics of a learned-delay network (a run's ``best.pt``, or any checkpoint): how far its delays
moved from the initial ones (``training/delay_diagnostics.py``), its run's per-epoch figures, and two test
evaluations that say whether the network uses where the delays moved — with every delay put back to its
initial value, and with the learned moves shuffled among the synapses (moves of the same sizes, elsewhere).

The initial delays are those of ``DelaySNN(config)``: ``model.structure_seed`` draws them.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from model.checkpoint import LoadedCheckpoint, load_checkpoint
from model.network import DelaySNN
from training.delay_diagnostics import LayerMovement, learned_layers, movement


@dataclass
class Diagnostics:
    """A learned-delay run: the moves of its shipped delays, and its per-epoch position figures."""

    layers: list[LayerMovement]
    initial: list  # per layer, the initial real-valued delays (numpy)
    final: list  # per layer, the shipped (best epoch) real-valued delays
    history: list[dict]  # metrics.json rows
    # Test accuracy of the shipped network with its learned delays put back to the initial ones (weights kept):
    # how much the trained network depends on where its delays moved. None when the test split is absent.
    test_with_initial_delays: float | None = None
    # The control: the learned delays moved by the same amounts, in random places (each layer's moves
    # shuffled among its synapses): how much any move of that size costs.
    test_with_shuffled_moves: float | None = None

    @property
    def layer_names(self) -> list[str]:
        return [layer.layer for layer in self.layers]


def load_diagnostics(checkpoint_path: Path, data_overrides: list[str] = ()) -> Diagnostics:
    """The diagnostics of a learned-delay checkpoint; its run's ``metrics.json`` when it lies beside it.
    ``data_overrides`` (``data.KEY=VALUE``) change the stored data configuration the test split comes from."""
    checkpoint = load_checkpoint(checkpoint_path)
    return diagnostics_of(checkpoint, checkpoint_path.parent / "metrics.json", test_clips(checkpoint, data_overrides))


def diagnostics_of(checkpoint: LoadedCheckpoint, metrics: Path, test) -> Diagnostics:
    """The diagnostics of a loaded checkpoint, with ``test`` (clips, or None) for the delay-reset evaluations."""
    trained = checkpoint.model
    initial = DelaySNN(trained.config)  # structure_seed draws the initial positions: the run's start
    layers, pairs = movement(trained, initial)
    history = json.loads(metrics.read_text()) if metrics.exists() else []
    reset = shuffled = None
    if test is not None:
        reset = accuracy_with_positions(trained, [layer.dcls.P for layer in learned_layers(initial)], test)
        shuffled = accuracy_with_positions(trained, shuffled_moves(trained, initial), test)
    return Diagnostics(layers, [p[0] for p in pairs], [p[1] for p in pairs], history, reset, shuffled)


def test_clips(checkpoint: LoadedCheckpoint, data_overrides: list[str] = ()):
    """The test split of a checkpoint's stored data configuration (with overrides); None without one."""
    from training.config import parse_override

    overrides = {}
    for text in data_overrides:
        keys, value = parse_override(text)
        if keys[0] != "data" or len(keys) != 2:
            raise ValueError(f"{text}: only data.KEY=VALUE overrides apply to the test split")
        overrides[keys[1]] = value
    if "config" not in checkpoint.training:
        return None
    data = {**checkpoint.training["config"]["data"], **overrides}
    return test_split_of({"data": data, "features": checkpoint.feature_config.to_dict()})


def test_split_of(config: dict):
    """The test clips of a run's data (``training.config`` of its checkpoint); None without a test split."""
    return _test_split(json.dumps({"data": config["data"], "features": config["features"]}, sort_keys=True))


@functools.lru_cache(maxsize=2)  # a study's runs share one data set: its features are computed once
def _test_split(data_and_features: str):
    from model.features import FeatureConfig
    from training.config import DataConfig
    from training.datasets import DatasetMissingError, load_dataset

    values = json.loads(data_and_features)
    try:
        dataset = load_dataset(DataConfig(**values["data"]), FeatureConfig.from_dict(values["features"]), seed=0)
    except DatasetMissingError:
        return None
    return dataset.test if dataset.test is not None and len(dataset.test) else None


def shuffled_moves(trained: DelaySNN, initial: DelaySNN, seed: int = 0) -> list[torch.Tensor]:
    """Per learned layer, positions ``p_learned + shuffled(p_learned - p_initial)``: moves of the sizes
    learning made, put on other synapses (existing ones only), clamped to the kernel."""
    generator = torch.Generator().manual_seed(seed)
    positions = []
    for layer, start in zip(learned_layers(trained), learned_layers(initial)):
        existing = layer.mask.bool().unsqueeze(-1).expand(-1, -1, layer.kernel_count)
        moves = (layer.dcls.P[0] - start.dcls.P[0]).detach()[existing]
        moved = layer.dcls.P[0].detach().clone()
        moved[existing] += moves[torch.randperm(len(moves), generator=generator)]
        positions.append(moved.clamp(-layer.position_limit, layer.position_limit).unsqueeze(0))
    return positions


def accuracy_with_positions(trained: DelaySNN, positions: list[torch.Tensor], clips) -> float:
    """Test accuracy (rounded delays) of ``trained`` with its learned layers' positions replaced, weights kept."""
    from training.evaluation import evaluate

    changed = copy.deepcopy(trained)
    with torch.no_grad():
        for layer, new in zip(learned_layers(changed), positions):
            layer.dcls.P.copy_(new)
    return evaluate(changed, clips, 256, True, torch.device("cpu")).accuracy
