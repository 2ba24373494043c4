"""The training loop of Hammouamri et al. (ICLR 2024), on CPU or GPU, single- or multi-process.

Weights and delay positions sit in two Adam optimisers (``training/optimisation.py``). DCLS's sigma decays
exponentially to its floor over the first quarter of training; positions are clamped to the kernel after
every step. The loss is the cross-entropy of the sum over time of the softmax of the readout potentials.
Every epoch evaluates the *discretised* network (rounded delays, one tap per synapse: the model we ship) and
the continuous one on validation (``training/evaluation.py``); the best epoch is chosen on the discretised
validation accuracy.

:func:`fit` is the run: it sets up (:func:`start_run`: data, network, optimisers, or the state of a run to
resume), then per epoch :func:`train_epoch` (one pass over the training set) and :func:`record_epoch`
(evaluation, history, ``best.pt``/``last.pt``, kernel snapshots), and at the end ``finalise()``
(``training/outputs.py``: what a finished run leaves in its folder). Several
processes (``torchrun``) are the business of ``training/distributed.py``; what is kept for ``--resume``, of
``training/resume.py``.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from itertools import zip_longest
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from model.checkpoint import load_checkpoint, save_checkpoint
from model.delays import DelayMode, sigma_schedule
from model.network import DelaySNN, class_scores, readout_loss
from training.averaging import averaged_network, moving_average
from training.config import ExperimentConfig
from training.datasets import Dataset, load_dataset
from training.delay_diagnostics import delay_shift, initial_delays, position_grad_norms
from training.distributed import (
    Distributed, check_agreement, init_distributed, parameter_checksum, rank_batches, resolve_device, steps_per_epoch,
)
from training.environment import bf16_supported, environment_info
from training.evaluation import evaluate
from training.optimisation import build_optimizers
from training.outputs import BEST, LAST, SNAPSHOTS, finalise, kernel_snapshot, write_history
from training.resume import BestEpoch, EpochRecord, Resumed, ResumeState, load_resumable
from training.widening import IncompatibleInitError, load_widened


# -- a run --------------------------------------------------------------------------------------


@dataclass
class Run:
    """A training run in progress: what every epoch reads and what it adds to."""

    config: ExperimentConfig
    out_dir: Path
    dataset: Dataset
    device: torch.device
    dist: Distributed
    model: DelaySNN
    network: nn.Module  # the model, or its DDP wrapper
    optimizers: list[torch.optim.Optimizer]
    schedulers: list[torch.optim.lr_scheduler.LRScheduler]
    steps_per_epoch: int
    autocast: Callable[[], Any]
    log: Callable[[str], None]
    init_from: str | Path | None = None
    history: list[EpochRecord] = field(default_factory=list)
    best: BestEpoch = field(default_factory=BestEpoch)
    start_epoch: int = 0
    elapsed_before: float = 0.0  # wall time of the epochs before a resume
    snapshots: dict[str, np.ndarray] = field(default_factory=dict)
    initial_delays: list[torch.Tensor] = field(default_factory=list)  # learned layers' delays at the start
    environment: dict[str, str] = field(default_factory=environment_info)
    average: AveragedModel | None = None  # train.ema_decay: the network evaluated, chosen and saved

    def selected_network(self, sigma: float) -> DelaySNN:
        """What an epoch evaluates and ``best.pt`` holds: the moving average when there is one."""
        return averaged_network(self.average, self.model, sigma)

    @property
    def learned(self) -> bool:
        return DelayMode(self.model.config.delay_mode) is DelayMode.LEARNED

    def sigma(self, epoch: int) -> float:
        train, model_config = self.config.train, self.model.config
        sigma_init = model_config.sigma_init if model_config.sigma_init is not None else model_config.max_delay // 2
        decay_epochs = max(1, round(train.epochs * train.sigma_decay_fraction))
        return sigma_schedule(epoch, sigma_init, train.sigma_final, decay_epochs)


def start_run(
    config: ExperimentConfig, out_dir: Path, dataset: Dataset | None, device: torch.device, dist: Distributed,
    resumed: Resumed | None, init_from: str | Path | None, log: Callable[[str], None],
) -> Run:
    """Data, network, optimisers and schedules; a resumed run's weights, optimiser states and history."""
    train_cfg = config.train
    torch.set_num_threads(max(1, train_cfg.threads))
    torch.manual_seed(train_cfg.seed)
    if dataset is None:
        dataset = load_dataset(config.data, config.features, seed=train_cfg.seed)
    model_config = config.model
    if model_config.input_size != dataset.input_size or model_config.num_classes != len(dataset.labels):
        model_config = replace(model_config, input_size=dataset.input_size, num_classes=len(dataset.labels))
    model = DelaySNN(model_config).to(device)
    if init_from is not None and resumed is None:
        # Fine-tuning: start from another run's weights and positions (same architecture, or wider hidden layers).
        trained = load_checkpoint(init_from)
        if list(trained.labels) != list(dataset.labels):
            raise IncompatibleInitError(f"--init-from {init_from}: its labels {trained.labels} are not this run's {dataset.labels}")
        widened = load_widened(model, trained.raw["state_dict"], trained.model_config)
        log(f"initialised from {init_from}" + (f" (widened: {len(widened)} tensors)" if widened else ""))
    # Before restore(): a fresh network of this configuration holds the positions the run started from.
    start_delays = initial_delays(model)
    steps = steps_per_epoch(dataset.train.epoch_size, train_cfg.batch_size, dist.world_size)
    optimizers, schedulers = build_optimizers(model, config, steps)
    use_bf16 = train_cfg.bf16 and bf16_supported(device)
    run = Run(
        config=config, out_dir=out_dir, dataset=dataset, device=device, dist=dist, model=model,
        network=model, optimizers=optimizers, schedulers=schedulers, steps_per_epoch=steps,
        autocast=(lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext,
        log=log, init_from=init_from, initial_delays=start_delays,
        average=moving_average(model, train_cfg.ema_decay),
    )
    if resumed is not None:
        restore(run, resumed)
        log(f"resumed {out_dir} at epoch {run.start_epoch}")
    elif dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    run.network = dist.wrap(model, device)  # after loading the weights: DDP broadcasts rank 0's at wrapping
    if dist.is_main:
        log(f"{dataset.description}: {len(dataset.train)} train ({dataset.train.epoch_size} per epoch, "
            f"{dataset.train.silence_per_epoch} of them non-speech), "
            f"{len(dataset.validation)} validation, {len(dataset.test) if dataset.test else 0} test clips; "
            f"{len(dataset.labels)} classes; parameters {model.parameter_count()}; device {device}; bf16 {use_bf16}; "
            f"processes {dist.world_size}")
        if run.learned and "epoch_0" not in run.snapshots:
            run.snapshots["epoch_0"] = kernel_snapshot(model, train_cfg.kernel_snapshot_neurons)
    return run


def restore(run: Run, resumed: Resumed) -> None:
    state = resumed.state
    run.model.load_state_dict(resumed.state_dict)
    for optimizer, saved in zip(run.optimizers, state.optimizers):
        optimizer.load_state_dict(saved)
    for scheduler, saved in zip(run.schedulers, state.schedulers):
        scheduler.load_state_dict(saved)
    run.history, run.best = list(state.history), state.best
    run.start_epoch, run.elapsed_before = state.next_epoch, state.elapsed_s
    torch.set_rng_state(state.torch_rng)
    if run.average is not None and state.average is not None:
        run.average.load_state_dict(state.average)
    if (run.out_dir / SNAPSHOTS).exists():
        run.snapshots = dict(np.load(run.out_dir / SNAPSHOTS))


# -- one epoch ----------------------------------------------------------------------------------


@dataclass
class EpochStats:
    """This rank's training figures of one epoch (summed over its batches)."""

    loss_sum: float = 0.0
    correct: float = 0.0
    seen: int = 0
    steps: int = 0
    position_grad_norm_sum: list[float] = field(default_factory=list)  # per learned layer, over the batches

    def __add__(self, other: EpochStats) -> EpochStats:
        return EpochStats(self.loss_sum + other.loss_sum, self.correct + other.correct,
                          self.seen + other.seen, self.steps + other.steps,
                          add_lists(self.position_grad_norm_sum, other.position_grad_norm_sum))

    def add_position_grads(self, norms: list[float]) -> None:
        self.position_grad_norm_sum = add_lists(self.position_grad_norm_sum, norms)


def add_lists(a: list[float], b: list[float]) -> list[float]:
    return [x + y for x, y in zip_longest(a, b, fillvalue=0.0)]


def prefetched(batches: list, prepare):
    """``prepare(batch)`` for each batch, the next one made on a worker thread while the caller trains on this
    one (augmentation and features are numpy, mostly outside the GIL). One worker, in order: the augmentation
    generator is drawn exactly as without prefetching, so a run stays reproducible from its seed."""
    from concurrent.futures import ThreadPoolExecutor

    if not batches:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="prefetch") as pool:
        pending = pool.submit(prepare, batches[0])
        for following in batches[1:]:
            ready = pending.result()
            pending = pool.submit(prepare, following)
            yield ready
        yield pending.result()


def train_epoch(run: Run, epoch: int, progress: bool = False) -> EpochStats:
    """One pass over the training set: forward, backward, both optimisers and schedules, position clamping.

    The epoch's order is drawn from ``(seed, epoch)``, the same on every rank; each rank trains on its own
    share (``rank_batches``), all with the same number of batches; augmentation draws per rank.
    """
    train_cfg, dist = run.config.train, run.dist
    run.model.train()
    order = run.dataset.train.epoch_order(np.random.default_rng([train_cfg.seed, epoch]))
    batches = rank_batches(order, train_cfg.batch_size, dist)
    if len(batches) != run.steps_per_epoch:
        raise RuntimeError(f"epoch {epoch + 1} has {len(batches)} batches but the schedules were built for "
                           f"{run.steps_per_epoch}: the training set's epoch_size ({run.dataset.train.epoch_size}) "
                           f"and its epoch order ({len(order)} samples) disagree")
    augment_rng = np.random.default_rng([train_cfg.seed, epoch, dist.rank])
    bar = None
    if progress and dist.is_main:
        from tqdm import tqdm

        bar = tqdm(total=len(batches), desc=f"epoch {epoch + 1}/{train_cfg.epochs}", leave=False, unit="batch")
    stats = EpochStats()
    clips = run.dataset.train

    def prepare(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return clips.batch_inputs(batch, augment_rng, run.config.augment), clips.batch_labels(batch)

    for batch, (batch_inputs, batch_targets) in zip(batches, prefetched(batches, prepare)):
        inputs = torch.from_numpy(batch_inputs).to(run.device)
        targets = torch.from_numpy(batch_targets).to(run.device)
        with run.autocast():
            output = run.network(inputs)
        loss = readout_loss(output.potentials.float(), targets)
        for optimizer in run.optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if run.learned:
            stats.add_position_grads(position_grad_norms(run.model))
        for optimizer in run.optimizers:
            optimizer.step()
        for scheduler in run.schedulers:
            scheduler.step()
        run.model.clamp_positions()
        if run.average is not None:
            run.average.update_parameters(run.model)
        stats.loss_sum += float(loss.detach()) * len(batch)
        stats.correct += float((class_scores(output.potentials.detach()).argmax(1) == targets).sum())
        stats.seen += len(batch)
        stats.steps += 1
        if bar is not None:
            bar.update()
            bar.set_postfix(loss=f"{stats.loss_sum / stats.seen:.3f}", acc=f"{stats.correct / stats.seen:.3f}")
    if bar is not None:
        bar.close()
    return stats


def agree_after_epoch(run: Run, epoch: int, stats: EpochStats) -> EpochStats:
    """Checks that every rank took the same steps and holds the same network and schedules; the figures of
    all ranks together."""
    check_agreement(run.dist, f"epoch {epoch + 1}", {
        "steps": stats.steps,
        "schedule_steps": [scheduler.last_epoch for scheduler in run.schedulers],
        "learning_rates": [optimizer.param_groups[0]["lr"] for optimizer in run.optimizers],
        "parameters": parameter_checksum(run.model),
    })
    total = EpochStats()
    for part in run.dist.gather(stats):
        total = total + part
    return total


def record_epoch(run: Run, epoch: int, sigma: float, stats: EpochStats, epoch_seconds: float, elapsed: float) -> EpochRecord:
    """Rank 0 after each epoch: validation, the history row, ``best.pt`` when it improved, ``last.pt``,
    kernel snapshots at the middle and end, ``metrics.csv``/``metrics.json``."""
    train_cfg, model = run.config.train, run.selected_network(sigma)
    validation = evaluate(model, run.dataset.validation, train_cfg.eval_batch_size, True, run.device)
    continuous = (evaluate(model, run.dataset.validation, train_cfg.eval_batch_size, False, run.device)
                  if run.learned else validation)
    training_weights = (evaluate(run.model, run.dataset.validation, train_cfg.eval_batch_size, True, run.device).accuracy
                        if run.average is not None else float("nan"))
    shifts, changed = delay_shift(model, run.initial_delays) if run.learned else ([], [])
    record = EpochRecord(
        epoch=epoch + 1, sigma=float(sigma),
        lr_weights=run.optimizers[0].param_groups[0]["lr"],
        lr_positions=run.optimizers[1].param_groups[0]["lr"] if len(run.optimizers) > 1 else 0.0,
        train_loss=stats.loss_sum / max(1, stats.seen), train_accuracy=stats.correct / max(1, stats.seen),
        val_loss=validation.loss, val_accuracy=validation.accuracy,
        val_accuracy_continuous=continuous.accuracy, val_spikes_per_clip=validation.spikes_per_clip,
        epoch_seconds=epoch_seconds,
        position_grad_norm=[total / max(1, stats.steps) for total in stats.position_grad_norm_sum],
        delay_shift=shifts, delays_changed=changed, val_accuracy_training_weights=training_weights,
    )
    run.history.append(record)
    run.log(f"epoch {epoch + 1:3d}  sigma {sigma:6.3f}  loss {record.train_loss:.4f}  "
            f"train {record.train_accuracy:.4f}  val {validation.accuracy:.4f} "
            f"(continuous {continuous.accuracy:.4f})  {record.epoch_seconds:.0f}s"
            + (f"  training weights {training_weights:.4f}" if run.average is not None else "")
            + (f"  |Δd| {' '.join(f'{x:.2f}' for x in shifts)}" if shifts else ""))
    common = dict(name=run.config.name, labels=run.dataset.labels, feature_config=run.config.features)
    training_info = {"config": run.config.to_dict(), "epoch": epoch + 1, "elapsed_s": elapsed,
                     "environment": run.environment, "processes": run.dist.world_size,
                     "init_from": str(run.init_from) if run.init_from else ""}
    metrics = {"validation": record.to_dict()}
    if run.best.improved_by(record):
        run.best = BestEpoch(epoch=epoch + 1, accuracy=record.val_accuracy)
        save_checkpoint(run.out_dir / BEST, model, training=training_info, metrics=metrics, **common)
    if run.learned and epoch + 1 in {max(1, train_cfg.epochs // 2), train_cfg.epochs}:
        run.snapshots[f"epoch_{epoch + 1}"] = kernel_snapshot(model, train_cfg.kernel_snapshot_neurons)
        np.savez(run.out_dir / SNAPSHOTS, **run.snapshots)
    resume = ResumeState(
        optimizers=[o.state_dict() for o in run.optimizers], schedulers=[s.state_dict() for s in run.schedulers],
        history=run.history, best=run.best, next_epoch=epoch + 1, elapsed_s=elapsed, torch_rng=torch.get_rng_state(),
        average=run.average.state_dict() if run.average is not None else None,
    )
    # last.pt holds the training weights (what --resume continues), its resume state the average.
    save_checkpoint(run.out_dir / LAST, run.model, training=training_info, metrics=metrics, resume=resume.to_dict(), **common)
    write_history(run.out_dir, run.history)
    return record


# -- the run ------------------------------------------------------------------------------------


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
    """Train, keep the best epoch (discretised validation accuracy), write checkpoints, metrics and plots.

    With ``resume``, continue from ``out_dir/last.pt`` if there is one (a new run otherwise), with the
    configuration stored there; a checkpoint without resume state raises ``NotResumableError``.
    """
    out_dir = Path(out_dir)
    resumed = load_resumable(out_dir / LAST) if resume and (out_dir / LAST).exists() else None
    if resumed is not None:
        # A resumed run keeps the configuration it started with: model, schedules and data all follow from it.
        if resumed.config != config:
            log(f"resuming with the configuration stored in {LAST} (the one given differs)")
        config = resumed.config
    train_cfg = config.train
    device = resolve_device(train_cfg.device)
    dist = init_distributed(device)
    try:
        if resume and resumed is None and dist.is_main:
            log(f"nothing to resume in {out_dir} (no {LAST}): starting a new run")
        run = start_run(config, out_dir, dataset, device, dist, resumed, init_from, log)
        started = time.perf_counter()
        end_epoch = train_cfg.epochs if stop_after is None else min(train_cfg.epochs, run.start_epoch + stop_after)
        for epoch in range(run.start_epoch, end_epoch):
            epoch_start = time.perf_counter()
            sigma = run.sigma(epoch)
            run.model.set_sigma(sigma)  # ignored when sigma is learned
            stats = agree_after_epoch(run, epoch, train_epoch(run, epoch, progress))
            if run.model.config.sigma_learned and run.learned:
                sigma = run.model.mean_sigma()  # where the gradient took it by the end of the epoch
            if dist.is_main:
                record_epoch(run, epoch, sigma, stats, time.perf_counter() - epoch_start,
                             run.elapsed_before + time.perf_counter() - started)
            dist.barrier()  # the other ranks wait while rank 0 evaluates and writes

        summary: dict[str, Any] = {}
        if dist.is_main and end_epoch < train_cfg.epochs:
            log(f"stopped after epoch {end_epoch} of {train_cfg.epochs}; continue with --resume")
        elif dist.is_main:
            summary = finalise(config, run.dataset, out_dir, run.history, run.best, device, log)
            if run.learned and run.snapshots:
                np.savez(out_dir / SNAPSHOTS, **run.snapshots)
        dist.barrier()
    finally:
        dist.shutdown()
    return summary
