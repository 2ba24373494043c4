"""The paper's optimisation: weights and delay positions in two Adam optimisers (positions at 100x the
learning rate, no weight decay), a one-cycle schedule for the weights and a cosine one for the positions,
both stepped once per batch."""

from __future__ import annotations

import torch
from torch import nn

from training.config import ExperimentConfig


def parameter_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Split trainable parameters by rule: DCLS positions (and learned sigmas); matrices (decayed); vectors
    (not decayed)."""
    groups: dict[str, list[nn.Parameter]] = {"positions": [], "decay": [], "no_decay": []}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue  # DCLS's SIG when the schedule sets it
        if name.endswith("dcls.P") or name.endswith("dcls.SIG"):  # SIG trains only with model.sigma_learned
            groups["positions"].append(parameter)
        elif parameter.ndim >= 2:
            groups["decay"].append(parameter)
        else:
            groups["no_decay"].append(parameter)
    return groups


def build_optimizers(model: nn.Module, config: ExperimentConfig, steps_per_epoch: int):
    """``(optimizers, schedulers)``: weights first, then the positions when the delays are learned."""
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
