"""An exponential moving average of the network, the one a run evaluates, chooses and saves when it is on.

``train.ema_decay = d > 0``: after every optimiser step the average moves ``1 - d`` of the way to the
training network (``torch.optim.swa_utils``: weights, delay positions and the batch-norm statistics alike,
``use_buffers=True``, so the average is a network that runs as it is, no re-estimation pass). Its horizon is
about ``1 / (1 - d)`` steps; averaging over the last few epochs' noise of the augmented batches is
the point (Polyak averaging; Izmailov et al. 2018 for why a flatter average generalises). The positions
stay inside the kernel: an average of clamped positions is clamped. ``d = 0`` (default): off, the
training weights are what is evaluated, as before.
"""

from __future__ import annotations

from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from model.network import DelaySNN


def moving_average(model: DelaySNN, decay: float) -> AveragedModel | None:
    """The average of ``model`` (a copy of it now), or None when ``decay`` is 0."""
    if decay == 0:
        return None
    if not 0 < decay < 1:
        raise ValueError(f"train.ema_decay must be in [0, 1), got {decay}")
    average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    average.update_parameters(model)  # the first update copies: the average starts where the run starts
    return average


def averaged_network(average: AveragedModel | None, model: DelaySNN, sigma: float) -> DelaySNN:
    """The network to evaluate and save: the average at the schedule's ``sigma`` (the average of sigma
    itself lags the schedule), or the training network itself."""
    if average is None:
        return model
    network: DelaySNN = average.module
    network.set_sigma(sigma)
    return network

