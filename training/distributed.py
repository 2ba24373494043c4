"""Several training processes (``torchrun``, DistributedDataParallel): the process group, the device of each
rank, and what keeps the ranks in step.

DDP all-reduces the gradients inside ``backward()``: every rank must run the same number of forward/backward
passes in every epoch, or the ranks that still have a batch wait for the others for ever. So each epoch's
sample order (the same on every rank: the order is drawn from a seed they share) is padded by repeating its
first samples until it divides among the ranks, then dealt out round-robin: every rank gets the same number
of samples, hence the same number of batches, none of them empty. The learning-rate schedules step once per
batch, so they stay equal too; :func:`check_agreement` proves it once per epoch, and fails loudly if not.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn


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

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module to train: ``model`` itself, or its DDP wrapper when there are several processes."""
        if not self.enabled:
            return model
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def shutdown(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def gather(self, value: Any) -> list[Any]:
        """``value`` of every rank, in rank order (a list of one without a process group)."""
        if not self.enabled:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, value)
        return gathered


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
    """``auto`` → CUDA when available; under ``torchrun`` each rank takes the GPU of its ``LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    return device


def per_rank_batch_size(batch_size: int, world_size: int) -> int:
    """The configured batch is the global one; each rank takes its share (at least one sample)."""
    return max(1, batch_size // world_size)


def steps_per_epoch(epoch_size: int, batch_size: int, world_size: int) -> int:
    """Batches each rank runs in an epoch of ``epoch_size`` samples (the same on every rank)."""
    shard = math.ceil(epoch_size / world_size)
    return math.ceil(shard / per_rank_batch_size(batch_size, world_size))


def rank_batches(order: np.ndarray, batch_size: int, dist: Distributed) -> list[np.ndarray]:
    """This rank's batches of one epoch: ``steps_per_epoch(len(order), ...)`` of them, none empty.

    ``order`` must be the same on every rank. With one process this is ``order`` cut into batches of
    ``batch_size``, as a plain loop would.
    """
    world = dist.world_size
    padded = np.resize(order, len(order) + (-len(order)) % world)  # repeats the first samples as padding
    shard = padded[dist.rank :: world]
    size = per_rank_batch_size(batch_size, world)
    return [shard[start : start + size] for start in range(0, len(shard), size)]


def check_agreement(dist: Distributed, what: str, values: dict[str, float]) -> None:
    """Raises on every rank unless all ranks report the same ``values`` (step counts, learning rates,
    a checksum of the parameters): ranks that drift apart train different networks without any error."""
    reports = dist.gather(values)
    if any(report != reports[0] for report in reports[1:]):
        lines = "; ".join(f"rank {rank}: {report}" for rank, report in enumerate(reports))
        raise RuntimeError(f"the training processes disagree after {what}: {lines}")


def parameter_checksum(model: nn.Module) -> float:
    """A float64 sum over every parameter (weights, delay positions, DCLS's sigma): equal on ranks whose
    networks are equal. Not the buffers: batch norm's running statistics follow each rank's own batches
    between DDP's broadcasts from rank 0, and only rank 0's are saved."""
    with torch.no_grad():
        return float(sum(p.detach().double().sum().item() for p in model.parameters()))
