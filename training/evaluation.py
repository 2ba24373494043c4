"""How well a network does on a split: what ``fit()`` measures every epoch and at the end of a run, and what
``kws-evaluate`` reports for a checkpoint. One function, so the figures of both agree.

Evaluation runs in fp32, without augmentation or dropout. "Discrete" is the network as shipped: every delay
rounded to an integer, one tap per synapse; "continuous" is the training-time form with DCLS's Gaussian taps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from model.network import DelaySNN, class_scores, readout_loss
from training.clips import ClipSet


@dataclass
class Evaluation:
    accuracy: float
    loss: float
    predictions: np.ndarray
    targets: np.ndarray
    scores: np.ndarray
    spikes_per_clip: list[float]  # mean spikes per hidden layer per clip

    def per_class_accuracy(self, labels: list[str]) -> dict[str, float]:
        result = {}
        for index, label in enumerate(labels):
            mask = self.targets == index
            if mask.any():
                result[label] = float((self.predictions[mask] == index).mean())
        return result

    def confusion(self, num_classes: int) -> np.ndarray:
        matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        np.add.at(matrix, (self.targets, self.predictions), 1)
        return matrix


@torch.no_grad()
def evaluate(model: DelaySNN, clips: ClipSet, batch_size: int, discrete: bool, device: torch.device) -> Evaluation:
    """Accuracy and loss of the network on a split, in fp32, without augmentation or dropout."""
    was_training = model.training
    model.eval()
    losses, predictions, scores = [], [], []
    spike_totals: np.ndarray | None = None
    for start in range(0, len(clips), batch_size):
        indices = np.arange(start, min(start + batch_size, len(clips)))
        inputs = torch.from_numpy(clips.batch_inputs(indices)).to(device)
        targets = torch.from_numpy(clips.batch_labels(indices)).to(device)
        output = model(inputs, discrete_delays=discrete)
        losses.append(float(readout_loss(output.potentials, targets)) * len(indices))
        batch_scores = class_scores(output.potentials)
        scores.append(batch_scores.cpu().numpy())
        predictions.append(batch_scores.argmax(dim=1).cpu().numpy())
        counts = np.array([float(s.sum()) for s in output.hidden_spikes])
        spike_totals = counts if spike_totals is None else spike_totals + counts
    model.train(was_training)
    targets_all = clips.labels
    predictions_all = np.concatenate(predictions) if predictions else np.zeros(0, dtype=np.int64)
    return Evaluation(
        accuracy=float((predictions_all == targets_all).mean()) if len(targets_all) else float("nan"),
        loss=sum(losses) / max(1, len(clips)),
        predictions=predictions_all,
        targets=targets_all,
        scores=np.concatenate(scores) if scores else np.zeros((0, 0)),
        spikes_per_clip=[] if spike_totals is None else (spike_totals / max(1, len(clips))).tolist(),
    )


def split_report(
    model: DelaySNN, clips: ClipSet, labels: list[str], batch_size: int, device: torch.device, continuous: bool,
) -> tuple[dict[str, Any], Evaluation]:
    """The figures of one split, as stored in ``best.pt``/``summary.json`` and printed by ``kws-evaluate``,
    and the discrete evaluation behind them. Without ``continuous`` (networks whose delays are not learned,
    where both forms are the same network) the continuous accuracy is the discrete one."""
    discrete = evaluate(model, clips, batch_size, True, device)
    report = {
        "accuracy": discrete.accuracy,
        "accuracy_continuous": evaluate(model, clips, batch_size, False, device).accuracy if continuous else discrete.accuracy,
        "loss": discrete.loss,
        "clips": len(clips),
        "per_class_accuracy": discrete.per_class_accuracy(list(labels)),
        "spikes_per_clip": discrete.spikes_per_clip,
    }
    return report, discrete
