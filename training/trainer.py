"""The training loop of Hammouamri et al. (ICLR 2024), on CPU or GPU, single- or multi-process.

Weights and delay positions sit in two Adam optimisers (positions at 100x the
learning rate, no weight decay); weights follow a one-cycle schedule, positions
a cosine one. DCLS's sigma decays exponentially to its floor over the first
quarter of training; positions are clamped to the kernel after every step. The
loss is the cross-entropy of the sum over time of the softmax of the readout
potentials. Every epoch evaluates the *discretised* network (rounded delays,
one tap per synapse: the model we ship) and the continuous one on validation;
the best epoch is chosen on the discretised validation accuracy.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import subprocess
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from model.checkpoint import load_checkpoint, save_checkpoint
from model.delays import DelayMode, sigma_schedule
from model.network import DelaySNN, class_scores, readout_loss
from training.config import ExperimentConfig
from training.datasets import ClipSet, Dataset, load_dataset


# -- process group ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> Distributed:
    """Joins the ``torchrun`` process group when launched by it (gloo on CPU, NCCL on GPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank=dist.get_rank(), world_size=dist.get_world_size())


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    return device


# -- optimisation -------------------------------------------------------------------------------


def parameter_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Split trainable parameters by rule: DCLS positions; matrices (decayed); vectors (not decayed)."""
    groups: dict[str, list[nn.Parameter]] = {"positions": [], "decay": [], "no_decay": []}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue  # DCLS's SIG: set by the schedule, never by gradients
        if name.endswith("dcls.P"):
            groups["positions"].append(parameter)
        elif parameter.ndim >= 2:
            groups["decay"].append(parameter)
        else:
            groups["no_decay"].append(parameter)
    return groups


def build_optimizers(model: nn.Module, config: ExperimentConfig, steps_per_epoch: int):
    train = config.train
    groups = parameter_groups(model)
    weights = torch.optim.Adam(
        [{"params": groups["decay"], "weight_decay": train.weight_decay},
         {"params": groups["no_decay"], "weight_decay": 0.0}],
        lr=train.lr_weights,
    )
    total_steps = max(1, train.epochs * steps_per_epoch)
    schedules = [torch.optim.lr_scheduler.OneCycleLR(
        weights, max_lr=train.lr_weights * train.one_cycle_max_lr_scale, total_steps=total_steps)]
    optimizers = [weights]
    if groups["positions"]:
        positions = torch.optim.Adam(groups["positions"], lr=train.lr_weights * train.lr_positions_scale)
        optimizers.append(positions)
        schedules.append(torch.optim.lr_scheduler.CosineAnnealingLR(positions, T_max=total_steps))
    return optimizers, schedules


# -- evaluation ---------------------------------------------------------------------------------


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


# -- the loop -----------------------------------------------------------------------------------


def environment_info() -> dict[str, str]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"torch": str(torch.__version__), "numpy": np.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "git_commit": commit}


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        from torch.backends import mkldnn

        return bool(mkldnn.is_available()) and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):
        return False


def kernel_snapshot(model: DelaySNN, neurons: int) -> np.ndarray:
    """Continuous delay kernels ``(neurons, inputs, max_delay)`` of the last hidden layer's first neurons."""
    layer = model.hidden[-1].synapses
    with torch.no_grad():
        kernel = layer.kernel(discrete=False)[:neurons]
    # kernel index k holds delay max_delay - 1 - k: flip so the last axis reads delay 0, 1, ...
    return kernel.flip(-1).cpu().numpy()


def fit(
    config: ExperimentConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    dataset: Dataset | None = None,
    log: Callable[[str], None] = print,
    stop_after: int | None = None,
    init_from: str | Path | None = None,
) -> dict[str, Any]:
    """Train, keep the best epoch (discretised validation accuracy), write checkpoints, metrics and plots."""
    out_dir = Path(out_dir)
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    state = load_checkpoint(last_path).raw if resume and last_path.exists() else None
    if state is not None:
        # A resumed run keeps the configuration it started with: model, schedules and data all follow from it.
        saved_config = ExperimentConfig.from_dict(state["training"]["config"])
        if saved_config != config:
            log("resuming with the configuration stored in last.pt (the one given differs)")
        config = saved_config
    train_cfg = config.train
    device = resolve_device(train_cfg.device)
    dist = init_distributed(device)
    torch.set_num_threads(max(1, train_cfg.threads))
    torch.manual_seed(train_cfg.seed)
    if dataset is None:
        dataset = load_dataset(config.data, config.features, seed=train_cfg.seed)
    model_config = config.model
    if model_config.input_size != dataset.input_size or model_config.num_classes != len(dataset.labels):
        from dataclasses import replace

        model_config = replace(model_config, input_size=dataset.input_size, num_classes=len(dataset.labels))
    model = DelaySNN(model_config).to(device)
    if init_from is not None and state is None:
        # Fine-tuning: start from another run's weights and positions (same architecture).
        model.load_state_dict(load_checkpoint(init_from).raw["state_dict"])
        log(f"initialised from {init_from}")
    per_rank_batch = max(1, train_cfg.batch_size // dist.world_size)
    steps_per_epoch = math.ceil(dataset.train.epoch_size / train_cfg.batch_size)
    optimizers, schedulers = build_optimizers(model, config, steps_per_epoch)
    decay_epochs = max(1, round(train_cfg.epochs * train_cfg.sigma_decay_fraction))
    sigma_init = model_config.sigma_init if model_config.sigma_init is not None else model_config.max_delay // 2
    learned = DelayMode(model_config.delay_mode) is DelayMode.LEARNED

    history: list[dict[str, Any]] = []
    best = {"epoch": -1, "accuracy": -1.0}
    start_epoch, elapsed_before = 0, 0.0
    snapshots: dict[str, np.ndarray] = {}
    if state is not None:
        model.load_state_dict(state["state_dict"])
        for optimizer, saved in zip(optimizers, state["resume"]["optimizers"]):
            optimizer.load_state_dict(saved)
        for scheduler, saved in zip(schedulers, state["resume"]["schedulers"]):
            scheduler.load_state_dict(saved)
        history = json.loads(state["resume"]["history"])
        best = json.loads(state["resume"]["best"])
        start_epoch = int(state["resume"]["next_epoch"])
        elapsed_before = float(state["resume"]["elapsed_s"])
        torch.set_rng_state(state["resume"]["torch_rng"])
        if (out_dir / "kernel_snapshots.npz").exists():
            snapshots = dict(np.load(out_dir / "kernel_snapshots.npz"))
        log(f"resumed {out_dir} at epoch {start_epoch}")
    elif dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)

    network: nn.Module = model
    if dist.enabled:
        network = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    use_bf16 = train_cfg.bf16 and bf16_supported(device)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext
    params = model.parameter_count()
    if dist.is_main:
        log(f"{dataset.description}: {len(dataset.train)} train ({dataset.train.epoch_size} per epoch, "
            f"{dataset.train.silence_per_epoch} of them non-speech), "
            f"{len(dataset.validation)} validation, {len(dataset.test) if dataset.test else 0} test clips; "
            f"{len(dataset.labels)} classes; parameters {params}; device {device}; bf16 {use_bf16}; "
            f"processes {dist.world_size}")
        if learned and "epoch_0" not in snapshots:
            snapshots["epoch_0"] = kernel_snapshot(model, train_cfg.kernel_snapshot_neurons)

    environment = environment_info()
    started = time.perf_counter()
    end_epoch = train_cfg.epochs if stop_after is None else min(train_cfg.epochs, start_epoch + stop_after)
    for epoch in range(start_epoch, end_epoch):
        epoch_start = time.perf_counter()
        sigma = sigma_schedule(epoch, sigma_init, train_cfg.sigma_final, decay_epochs)
        model.set_sigma(sigma)
        model.train()
        rng = np.random.default_rng([train_cfg.seed, epoch])
        order = dataset.train.epoch_order(rng)
        worker_rng = np.random.default_rng([train_cfg.seed, epoch, dist.rank])
        steps = range(steps_per_epoch)
        bar = None
        if progress and dist.is_main:
            from tqdm import tqdm

            bar = tqdm(steps, desc=f"epoch {epoch + 1}/{train_cfg.epochs}", leave=False, unit="batch")
        loss_sum = correct = seen = 0.0
        for step in bar if bar is not None else steps:
            batch = order[step * train_cfg.batch_size : (step + 1) * train_cfg.batch_size]
            batch = batch[dist.rank :: dist.world_size][:per_rank_batch]
            if len(batch) == 0:
                continue
            inputs = torch.from_numpy(dataset.train.batch_inputs(batch, worker_rng, config.augment)).to(device)
            targets = torch.from_numpy(dataset.train.batch_labels(batch)).to(device)
            with autocast():
                output = network(inputs)
            loss = readout_loss(output.potentials.float(), targets)
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for optimizer in optimizers:
                optimizer.step()
            for scheduler in schedulers:
                scheduler.step()
            model.clamp_positions()
            loss_sum += float(loss.detach()) * len(batch)
            correct += float((class_scores(output.potentials.detach()).argmax(1) == targets).sum())
            seen += len(batch)
            if bar is not None:
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        if bar is not None:
            bar.close()

        if dist.is_main:
            validation = evaluate(model, dataset.validation, train_cfg.eval_batch_size, True, device)
            continuous = evaluate(model, dataset.validation, train_cfg.eval_batch_size, False, device) if learned else validation
            record = {
                "epoch": epoch + 1, "sigma": sigma,
                "lr_weights": optimizers[0].param_groups[0]["lr"],
                "lr_positions": optimizers[1].param_groups[0]["lr"] if len(optimizers) > 1 else 0.0,
                "train_loss": loss_sum / max(1, seen), "train_accuracy": correct / max(1, seen),
                "val_loss": validation.loss, "val_accuracy": validation.accuracy,
                "val_accuracy_continuous": continuous.accuracy,
                "val_spikes_per_clip": validation.spikes_per_clip,
                "epoch_seconds": time.perf_counter() - epoch_start,
            }
            history.append(record)
            log(f"epoch {epoch + 1:3d}  sigma {sigma:6.3f}  loss {record['train_loss']:.4f}  "
                f"train {record['train_accuracy']:.4f}  val {validation.accuracy:.4f} "
                f"(continuous {continuous.accuracy:.4f})  {record['epoch_seconds']:.0f}s")
            elapsed = elapsed_before + time.perf_counter() - started
            common = dict(name=config.name, labels=dataset.labels, feature_config=config.features)
            training_info = {"config": config.to_dict(), "epoch": epoch + 1, "elapsed_s": elapsed,
                             "environment": environment, "processes": dist.world_size,
                             "init_from": str(init_from) if init_from else ""}
            if validation.accuracy > best["accuracy"]:
                best = {"epoch": epoch + 1, "accuracy": validation.accuracy}
                save_checkpoint(best_path, model, training=training_info, metrics={"validation": record}, **common)
            if learned and epoch + 1 in {max(1, train_cfg.epochs // 2), train_cfg.epochs}:
                snapshots[f"epoch_{epoch + 1}"] = kernel_snapshot(model, train_cfg.kernel_snapshot_neurons)
                np.savez(out_dir / "kernel_snapshots.npz", **snapshots)
            resume_state = {
                "optimizers": [o.state_dict() for o in optimizers],
                "schedulers": [s.state_dict() for s in schedulers],
                "history": json.dumps(history), "best": json.dumps(best), "next_epoch": epoch + 1,
                "elapsed_s": elapsed, "torch_rng": torch.get_rng_state(),
            }
            save_checkpoint(last_path, model, training=training_info, metrics={"validation": record},
                            resume=resume_state, **common)
            write_history(out_dir, history)
        if dist.enabled:
            torch.distributed.barrier()

    summary: dict[str, Any] = {}
    if dist.is_main and end_epoch < train_cfg.epochs:
        log(f"stopped after epoch {end_epoch} of {train_cfg.epochs}; continue with --resume")
    elif dist.is_main:
        summary = finalise(config, dataset, out_dir, history, best, device, log)
        if learned and snapshots:
            np.savez(out_dir / "kernel_snapshots.npz", **snapshots)
    if dist.enabled:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return summary


def write_history(out_dir: Path, history: list[dict[str, Any]]) -> None:
    (out_dir / "metrics.json").write_text(json.dumps(history, indent=1))
    with open(out_dir / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0].keys()))
        writer.writeheader()
        writer.writerows(history)


def finalise(
    config: ExperimentConfig, dataset: Dataset, out_dir: Path, history: list[dict[str, Any]],
    best: dict[str, Any], device: torch.device, log: Callable[[str], None],
) -> dict[str, Any]:
    """Re-evaluate the best epoch on every split, store the figures in best.pt, draw the plots."""
    loaded = load_checkpoint(out_dir / "best.pt")
    model = loaded.model.to(device)
    batch = config.train.eval_batch_size
    learned = DelayMode(model.config.delay_mode) is DelayMode.LEARNED
    metrics: dict[str, Any] = {"best_epoch": best["epoch"], "parameters": model.parameter_count()}
    evaluations = {}
    for split_name, clips in (("validation", dataset.validation), ("test", dataset.test)):
        if clips is None or len(clips) == 0:
            continue
        discrete = evaluate(model, clips, batch, True, device)
        evaluations[split_name] = discrete
        metrics[split_name] = {
            "accuracy": discrete.accuracy,
            "accuracy_continuous": evaluate(model, clips, batch, False, device).accuracy if learned else discrete.accuracy,
            "loss": discrete.loss,
            "clips": len(clips),
            "per_class_accuracy": discrete.per_class_accuracy(list(dataset.labels)),
            "spikes_per_clip": discrete.spikes_per_clip,
        }
    metrics["training_wall_time_s"] = loaded.training["elapsed_s"]
    metrics["epochs"] = config.train.epochs
    save_checkpoint(out_dir / "best.pt", model.cpu(), name=loaded.name, labels=loaded.labels,
                    feature_config=loaded.feature_config, training=loaded.training, metrics=metrics)
    summary = {"name": config.name, "task": config.data.task, "delay_mode": model.config.delay_mode,
               "seed": config.train.seed, **metrics}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    try:
        from training import plots

        plots.draw_all(out_dir, history, dataset.labels, evaluations.get("validation"), model)
    except ImportError as error:  # matplotlib is optional at run time
        log(f"plots skipped: {error}")
    log(json.dumps({k: summary[k] for k in ("best_epoch", "parameters")} | {
        s: {"accuracy": metrics[s]["accuracy"], "accuracy_continuous": metrics[s]["accuracy_continuous"]}
        for s in ("validation", "test") if s in metrics}))
    return summary
