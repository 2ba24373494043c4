"""What a run remembers between epochs and across ``--resume``: typed records, stored in ``last.pt`` as plain
dicts and lists (the checkpoint loads with ``torch.load(weights_only=True)``, which takes no custom classes).

Checkpoints written before these records stored the history and the best epoch as JSON strings; they load
too. A checkpoint without a resume state (``best.pt``, or the shipped ``artifacts/kws10/model.pt``) is a
finished network: it cannot be resumed, only fine-tuned from (``--init-from``).
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import LoadedCheckpoint, load_checkpoint
from training.config import ExperimentConfig


class NotResumableError(ValueError):
    """``--resume`` given a checkpoint that holds no resume state."""


@dataclass
class EpochRecord:
    """One row of ``metrics.csv`` / ``metrics.json``: the epoch's schedule, training and validation figures."""

    epoch: int
    sigma: float
    lr_weights: float
    lr_positions: float
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float  # discretised network (rounded delays): the model selection figure
    val_accuracy_continuous: float
    val_spikes_per_clip: list[float] = field(default_factory=list)
    epoch_seconds: float = 0.0
    # Learned delays, per learned delay layer (training/delay_diagnostics.py): mean over the epoch's batches of
    # the L2 norm of the positions' gradient; mean |d - d0| in steps at the end of the epoch; share of synapses
    # whose rounded delay differs from the initial one.
    position_grad_norm: list[float] = field(default_factory=list)
    delay_shift: list[float] = field(default_factory=list)
    delays_changed: list[float] = field(default_factory=list)
    # With train.ema_decay: the discretised validation accuracy of the training weights (val_accuracy is the
    # average's); NaN without an average.
    val_accuracy_training_weights: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> EpochRecord:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in row.items() if k in known}
        missing = [f.name for f in fields(cls) if f.name not in values
                   and f.default is MISSING and f.default_factory is MISSING]  # fields added later have defaults
        values.update({name: math.nan for name in missing})  # a row from an older version: what it lacks is unknown
        return cls(**values)


@dataclass
class BestEpoch:
    """The epoch ``best.pt`` holds: the highest discretised validation accuracy so far (-1: none yet)."""

    epoch: int = -1
    accuracy: float = -1.0

    def improved_by(self, record: EpochRecord) -> bool:
        return record.val_accuracy > self.accuracy


@dataclass
class ResumeState:
    """Everything ``--resume`` needs beyond the network's weights (which are the checkpoint's state dict)."""

    optimizers: list[dict[str, Any]]
    schedulers: list[dict[str, Any]]
    history: list[EpochRecord]
    best: BestEpoch
    next_epoch: int
    elapsed_s: float
    torch_rng: torch.Tensor
    average: dict[str, Any] | None = None  # the moving average's state dict (train.ema_decay), else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "optimizers": self.optimizers, "schedulers": self.schedulers,
            "history": [record.to_dict() for record in self.history], "best": asdict(self.best),
            "next_epoch": self.next_epoch, "elapsed_s": self.elapsed_s, "torch_rng": self.torch_rng,
            "average": self.average,
        }

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> ResumeState:
        history, best = saved["history"], saved["best"]
        if isinstance(history, str):  # checkpoints written before the typed records: JSON strings
            history = json.loads(history)
        if isinstance(best, str):
            best = json.loads(best)
        return cls(
            optimizers=list(saved["optimizers"]), schedulers=list(saved["schedulers"]),
            history=[EpochRecord.from_dict(row) for row in history],
            best=BestEpoch(epoch=int(best["epoch"]), accuracy=float(best["accuracy"])),
            next_epoch=int(saved["next_epoch"]), elapsed_s=float(saved["elapsed_s"]), torch_rng=saved["torch_rng"],
            average=saved.get("average"),
        )


@dataclass
class Resumed:
    """A run to continue: its configuration, network weights and resume state, read from ``last.pt``."""

    config: ExperimentConfig
    state_dict: dict[str, torch.Tensor]
    state: ResumeState


def load_resumable(path: Path) -> Resumed:
    """Reads ``path`` for ``--resume``; :class:`NotResumableError` when it is a finished network instead."""
    checkpoint: LoadedCheckpoint = load_checkpoint(path)
    if checkpoint.resume is None:
        raise NotResumableError(
            f"{path} holds a trained network but no resume state (optimisers, schedules, history): it cannot be "
            f"resumed; start a new run from its weights with --init-from {path}")
    if "config" not in checkpoint.training:
        raise NotResumableError(f"{path} does not record the configuration it was trained with")
    return Resumed(config=ExperimentConfig.from_dict(checkpoint.training["config"]),
                   state_dict=checkpoint.raw["state_dict"], state=ResumeState.from_dict(checkpoint.resume))
