"""What a run leaves in its folder: ``best.pt``, ``last.pt``, ``metrics.csv``/``metrics.json``,
``summary.json``, ``kernel_snapshots.npz`` and ``plots/``; and the final evaluation that fills ``best.pt``'s
metrics and ``summary.json``."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.delays import DelayMode
from model.network import DelaySNN
from training.config import ExperimentConfig
from training.datasets import Dataset
from training.evaluation import split_report
from training.resume import BestEpoch, EpochRecord

LAST, BEST = "last.pt", "best.pt"
SNAPSHOTS = "kernel_snapshots.npz"


def kernel_snapshot(model: DelaySNN, neurons: int) -> np.ndarray:
    """Continuous delay kernels ``(neurons, inputs, max_delay)`` of the last hidden layer's first neurons."""
    layer = model.hidden[-1].synapses
    with torch.no_grad():
        kernel = layer.kernel(discrete=False)[:neurons]
    # kernel index k holds delay max_delay - 1 - k: flip so the last axis reads delay 0, 1, ...
    return kernel.flip(-1).cpu().numpy()


def write_history(out_dir: Path, history: list[EpochRecord]) -> None:
    rows = [record.to_dict() for record in history]
    (out_dir / "metrics.json").write_text(json.dumps(rows, indent=1))
    with open(out_dir / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)


def finalise(
    config: ExperimentConfig, dataset: Dataset, out_dir: Path, history: list[EpochRecord],
    best: BestEpoch, device: torch.device, log: Callable[[str], None],
) -> dict[str, Any]:
    """Re-evaluate the best epoch on every split, store the figures in best.pt, draw the plots."""
    loaded = load_checkpoint(out_dir / BEST)
    model = loaded.model.to(device)
    learned = DelayMode(model.config.delay_mode) is DelayMode.LEARNED
    metrics: dict[str, Any] = {"best_epoch": best.epoch, "parameters": model.parameter_count()}
    evaluations = {}
    for split_name, clips in (("validation", dataset.validation), ("test", dataset.test)):
        if clips is None or len(clips) == 0:
            continue
        metrics[split_name], evaluations[split_name] = split_report(
            model, clips, list(dataset.labels), config.train.eval_batch_size, device, continuous=learned)
    metrics["training_wall_time_s"] = loaded.training["elapsed_s"]
    metrics["epochs"] = config.train.epochs
    save_checkpoint(out_dir / BEST, model.cpu(), name=loaded.name, labels=loaded.labels,
                    feature_config=loaded.feature_config, training=loaded.training, metrics=metrics)
    summary = {"name": config.name, "task": config.data.task, "delay_mode": model.config.delay_mode,
               "seed": config.train.seed, **metrics}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    try:
        from training import plots

        plots.draw_all(out_dir, [record.to_dict() for record in history], dataset.labels,
                       evaluations.get("validation"), model)
    except ImportError as error:  # matplotlib is optional at run time
        log(f"plots skipped: {error}")
    log(json.dumps({k: summary[k] for k in ("best_epoch", "parameters")} | {
        s: {"accuracy": metrics[s]["accuracy"], "accuracy_continuous": metrics[s]["accuracy_continuous"]}
        for s in ("validation", "test") if s in metrics}))
    return summary
