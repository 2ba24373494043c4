"""Self-describing checkpoints: everything needed to rebuild, evaluate and export a network.

A checkpoint is a plain dict of tensors, numbers and strings, so it loads with
``torch.load(..., weights_only=True)``::

    format_version  int      CHECKPOINT_FORMAT_VERSION
    kind            str      "delay-snn"
    name            str      experiment name
    labels          list[str]
    model_config    dict     ModelConfig.to_dict()
    feature_config  dict     FeatureConfig.to_dict()
    state_dict      dict     network weights, positions, sigma, batch-norm statistics
    training        dict     full experiment config, epoch, wall time, versions, git commit
    metrics         dict     validation / test figures of the discretised (and continuous) network
    resume          dict     optional: optimiser and scheduler states, RNG, for --resume
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model.features import FeatureConfig
from model.network import DelaySNN, ModelConfig

CHECKPOINT_FORMAT_VERSION = 1
CHECKPOINT_KIND = "delay-snn"


@dataclass
class LoadedCheckpoint:
    model: DelaySNN
    labels: list[str]
    model_config: ModelConfig
    feature_config: FeatureConfig
    name: str
    training: dict[str, Any]
    metrics: dict[str, Any]
    resume: dict[str, Any] | None
    raw: dict[str, Any]


def save_checkpoint(
    path: str | Path,
    model: DelaySNN,
    *,
    name: str,
    labels: list[str] | tuple[str, ...],
    feature_config: FeatureConfig,
    training: dict[str, Any],
    metrics: dict[str, Any],
    resume: dict[str, Any] | None = None,
) -> None:
    payload = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "kind": CHECKPOINT_KIND,
        "name": name,
        "labels": list(labels),
        "model_config": model.config.to_dict(),
        "feature_config": feature_config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "training": training,
        "metrics": metrics,
    }
    if resume is not None:
        payload["resume"] = resume
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, temporary)
    temporary.replace(path)  # never leave a half-written checkpoint behind


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> LoadedCheckpoint:
    try:
        raw = torch.load(Path(path), map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise ValueError(f"{path} is not a readable checkpoint: {str(error).splitlines()[0]}") from error
    if not isinstance(raw, dict) or raw.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{path} is not a delay-SNN checkpoint")
    version = raw.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {version}, this code reads {CHECKPOINT_FORMAT_VERSION}")
    model_config = ModelConfig.from_dict(raw["model_config"])
    model = DelaySNN(model_config)
    model.load_state_dict(raw["state_dict"])
    model.eval()
    return LoadedCheckpoint(
        model=model,
        labels=list(raw["labels"]),
        model_config=model_config,
        feature_config=FeatureConfig.from_dict(raw["feature_config"]),
        name=raw["name"],
        training=raw["training"],
        metrics=raw["metrics"],
        resume=raw.get("resume"),
        raw=raw,
    )
