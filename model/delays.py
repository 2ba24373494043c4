"""Synaptic delays: learnable (DCLS), fixed random, or none — and their discretisation.

Delay semantics, defined once here and used by training, export and tests: a
synapse from input ``i`` to output ``o`` with weight ``w`` and integer delay
``d`` in ``[0, max_delay - 1]`` time steps contributes ``w * x_i[t - d]`` to
``y_o[t]`` (causal; inputs before the clip are zero). With ``kernel_count``
taps per synapse, each tap has its own weight and delay and the taps add.

Learned delays follow Hammouamri et al. (ICLR 2024): each tap is a Gaussian of
width ``sigma`` centred at a real-valued position inside a temporal kernel of
``max_delay`` steps (``dcls.Dcls1d``, gauss version), applied as a causal
convolution. Training shrinks sigma until each tap is (nearly) one integer
delay (or, with ``learn_sigma``, lets the gradient set each tap's sigma);
:meth:`DelayedSynapses.integer_delays` rounds the positions and the
discretised forward puts each weight on exactly one kernel slot.

Initial positions (learned) and fixed random delays are drawn uniformly over
the middle ``init_spread`` fraction of the kernel: 1.0 (the default) is the whole
kernel, 0.0 puts every delay at ``max_delay // 2`` (the ablation of docs/ablation.md).

DCLS stores a position ``p`` centred on the kernel, ``p in [-(D//2), D//2]``,
at kernel index ``p + D//2``. Cross-correlation with ``D - 1`` steps of left
padding reads ``x[t + k - (D - 1)]`` at index ``k``, so the delay is
``d = D - 1 - (p + D//2) = D//2 - p`` for odd ``D``.
"""

from __future__ import annotations

from enum import Enum

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# DCLS's gauss kernel uses |SIG| + 0.27 as the Gaussian's standard deviation.
DCLS_SIGMA_OFFSET = 0.27


class DelayMode(str, Enum):
    LEARNED = "learned"  # positions trained with DCLS
    RANDOM = "random"  # integer delays drawn once, fixed
    NONE = "none"  # every delay 0: a plain fully connected layer


def sigma_schedule(epoch: int, sigma_init: float, sigma_final: float, decay_epochs: int) -> float:
    """The paper's exponential decay of DCLS's sigma from ``sigma_init`` to ``sigma_final``.

    ``sigma(e) = sigma_init * (sigma_final / sigma_init) ** (e / decay_epochs)``, held at
    ``sigma_final`` from ``decay_epochs`` on.
    """
    if decay_epochs <= 0 or epoch >= decay_epochs:
        return sigma_final
    return sigma_init * (sigma_final / sigma_init) ** (epoch / decay_epochs)


def connectivity_mask(out_features: int, in_features: int, fan_in: int | None, generator: torch.Generator) -> Tensor:
    """``(out, in)`` 0/1 mask with exactly ``fan_in`` inputs per output neuron (all when None)."""
    if fan_in is None or fan_in >= in_features:
        return torch.ones(out_features, in_features)
    if fan_in < 1:
        raise ValueError(f"fan_in must be >= 1, got {fan_in}")
    scores = torch.rand(out_features, in_features, generator=generator)
    chosen = scores.argsort(dim=1)[:, :fan_in]
    return torch.zeros(out_features, in_features).scatter_(1, chosen, 1.0)


def shift_kernel(weight: Tensor, delays: Tensor, max_delay: int) -> Tensor:
    """Dense ``(out, in, max_delay)`` causal-convolution kernel with each tap's weight at its delay.

    ``weight`` and ``delays`` are ``(out, in, taps)``; taps that share a delay add up.
    """
    out_features, in_features, _ = weight.shape
    kernel = weight.new_zeros(out_features, in_features, max_delay)
    return kernel.scatter_add(2, (max_delay - 1 - delays).long(), weight)


class DelayedSynapses(nn.Module):
    """Fully connected synapses with per-synapse delays, applied to ``(batch, in, T)`` → ``(batch, out, T)``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        max_delay: int,
        mode: DelayMode | str = DelayMode.LEARNED,
        kernel_count: int = 1,
        fan_in: int | None = None,
        sigma_init: float | None = None,
        generator: torch.Generator | None = None,
        init_spread: float = 1.0,
        learn_sigma: bool = False,
    ) -> None:
        super().__init__()
        self.mode = DelayMode(mode)
        if max_delay < 1 or max_delay % 2 == 0:
            raise ValueError(f"max_delay must be odd and >= 1 (DCLS centres positions), got {max_delay}")
        if not 0.0 <= init_spread <= 1.0:
            raise ValueError(f"init_spread must be in [0, 1], got {init_spread}")
        if self.mode is DelayMode.NONE:
            max_delay, kernel_count = 1, 1
        self.in_features, self.out_features = in_features, out_features
        self.max_delay, self.kernel_count = max_delay, kernel_count
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.register_buffer("mask", connectivity_mask(out_features, in_features, fan_in, generator))
        self.position_limit = max_delay // 2
        self.learn_sigma = learn_sigma and self.mode is DelayMode.LEARNED
        spread = init_spread * self.position_limit  # half-width of the initial range, in steps

        if self.mode is DelayMode.LEARNED:
            from DCLS.construct.modules import Dcls1d  # noqa: PLC0415 - imported where used: the export path needs no DCLS

            self.dcls = Dcls1d(
                in_features, out_features, kernel_count=kernel_count, dilated_kernel_size=max_delay, bias=False, version="gauss"
            )
            nn.init.kaiming_uniform_(self.dcls.weight, nonlinearity="relu")
            with torch.no_grad():
                self.dcls.P.uniform_(-spread, spread, generator=generator)
                self.dcls.SIG.fill_(sigma_init if sigma_init is not None else max_delay // 2)
            self.dcls.SIG.requires_grad_(self.learn_sigma)
        else:
            self.weight = nn.Parameter(torch.empty(out_features, in_features, kernel_count))
            nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")
            low = self.position_limit - round(spread)
            delays = torch.randint(low, max_delay - low, (out_features, in_features, kernel_count), generator=generator)
            self.register_buffer("fixed_delays", delays if self.mode is DelayMode.RANDOM else torch.zeros_like(delays))

    # -- parameters seen from outside -------------------------------------------------------------
    @property
    def synaptic_weight(self) -> Tensor:
        """``(out, in, taps)`` weights with pruned synapses zeroed."""
        weight = self.dcls.weight if self.mode is DelayMode.LEARNED else self.weight
        return weight * self.mask.unsqueeze(-1)

    @torch.no_grad()
    def integer_delays(self) -> Tensor:
        """``(out, in, taps)`` long tensor of delays in steps: rounded positions for learned delays."""
        if self.mode is not DelayMode.LEARNED:
            return self.fixed_delays.clone()
        positions = self.dcls.P[0].clamp(-self.position_limit, self.position_limit)
        return (self.position_limit - torch.round(positions)).long()

    @torch.no_grad()
    def continuous_delays(self) -> Tensor:
        """``(out, in, taps)`` real-valued delays (learned) or the fixed integer ones as floats."""
        if self.mode is not DelayMode.LEARNED:
            return self.fixed_delays.float()
        return self.position_limit - self.dcls.P[0]

    @torch.no_grad()
    def set_sigma(self, sigma: float) -> None:
        """The schedule's sigma; ignored when sigma is learned."""
        if self.mode is DelayMode.LEARNED and not self.learn_sigma:
            self.dcls.SIG.fill_(sigma)

    @torch.no_grad()
    def clamp_positions(self) -> None:
        if self.mode is DelayMode.LEARNED:
            self.dcls.clamp_parameters()

    @property
    def sigma(self) -> float | None:
        """DCLS's SIG (the mean over taps when it is learned; DCLS uses its absolute value)."""
        return float(self.dcls.SIG.detach().abs().mean()) if self.mode is DelayMode.LEARNED else None

    def synapse_count(self) -> int:
        return int(self.mask.sum().item()) * self.kernel_count

    # -- forward ---------------------------------------------------------------------------------
    def kernel(self, discrete: bool) -> Tensor:
        """The dense ``(out, in, max_delay)`` causal kernel this layer applies."""
        if self.mode is DelayMode.LEARNED and not discrete:
            return self.dcls.DCK(self.synaptic_weight, self.dcls.P, self.dcls.SIG)
        return shift_kernel(self.synaptic_weight, self.integer_delays(), self.max_delay)

    def forward(self, x: Tensor, discrete: bool = False) -> Tensor:
        if self.max_delay == 1:
            return torch.einsum("oi,bit->bot", self.synaptic_weight[..., 0], x).float()
        padded = F.pad(x, (self.max_delay - 1, 0))
        # float() keeps the neuron dynamics in fp32 when the convolution runs under bf16 autocast
        return F.conv1d(padded, self.kernel(discrete)).float()

    def extra_repr(self) -> str:
        return (
            f"{self.in_features}, {self.out_features}, mode={self.mode.value}, max_delay={self.max_delay}, "
            f"kernel_count={self.kernel_count}, synapses={self.synapse_count()}"
        )
