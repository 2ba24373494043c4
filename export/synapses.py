"""How a layer's delayed synapses turn its input into a current: the formulations, all exact but ``int8``.

Delay semantics (``model.delays``): a synapse with weight ``w`` and integer delay ``d`` adds
``w * x[t - d]`` to its target's current. With ``D`` = the layer's largest delay + 1:

- ``shift``: the input padded once; per integer delay one ``Slice`` and one ``MatMul`` with the
  matrix of the synapses that have that delay, summed. ``D`` small GEMMs.
- ``conv``: one causal ``Conv`` whose kernel holds each synapse's weight at its delay.
- ``unfold``: the input unfolded over the delay window (one ``Gather`` of time indices ``t .. t+D-1``
  of the padded input, ``(batch, T, D*in)``) and one ``MatMul`` with the unfolded weights ``(D*in, out)``.
- ``stacked``: one ``MatMul`` against every delay's matrix side by side ``(in, D*out)``, then each
  delay's block shifted by its delay and summed (a pad-and-reshape skew, no gather).
- ``int24``: ``unfold`` on spikes as ``uint8`` (they are exactly 0 and 1) with ``MatMulInteger``.
  Each output neuron's weights are rounded to 24-bit fixed point (the float32 mantissa's precision,
  relative to that neuron's largest weight) and split into three int8 digits, base 256; the
  integer accumulation is exact and the digits' sums are scaled back and added in float. Its error
  is that of float32 arithmetic (``tests/test_export.py`` compares it with the float forms' error
  against a float64 reference). Spike-fed layers only.
- ``int8``: the same with one digit, 8-bit weights: an approximation, opt-in (``kws-export --int8``).
- ``event``: event-driven, ``NonZero`` lists the spikes and ``ScatterElements(add)`` adds each
  one's fan-out at ``t + delay``. Least arithmetic, but onnxruntime's scatter is serial. Spikes only.
- ``fc``: every delay dropped, the no-delay floor (benchmark only, not the trained network).

``python -m benchmarks.inference`` times them; ``export.planner`` picks one per layer and batch size.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from export.freeze import FrozenLayer
from export.graph_builder import GraphBuilder, zeros_value
from export.signals import Context, Currents, Signal

INT24_DIGITS = 3
INT24_MAX = 127 * 65536  # the top digit stays within int8 after the carries of the lower ones


def horizon(layer: FrozenLayer) -> int:
    """``D``: the layer's largest delay among its synapses + 1."""
    used = layer.delay[layer.weight != 0]
    return int(used.max()) + 1 if used.size else 1


def delay_kernel(layer: FrozenLayer) -> np.ndarray:
    """``(out, in, D)`` causal-convolution kernel: each weight at index ``D - 1 - delay`` (taps sharing a slot add)."""
    size = horizon(layer)
    kernel = np.zeros((layer.out_features, layer.in_features, size), dtype=np.float64)
    o, i, tap = np.nonzero(layer.weight)
    np.add.at(kernel, (o, i, size - 1 - layer.delay[o, i, tap]), layer.weight[o, i, tap])
    return kernel.astype(np.float32)


def unfolded_weights(layer: FrozenLayer) -> np.ndarray:
    """``(D * in, out)``: row ``k * in + i`` holds input ``i``'s weights at delay ``D - 1 - k``."""
    kernel = delay_kernel(layer)
    return np.ascontiguousarray(kernel.transpose(2, 1, 0).reshape(-1, layer.out_features))


def int24_digits(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(K, out)`` float weights → int8 digits ``(K, 3 * out)`` (high, middle, low) and float scales ``(3, out)``.

    ``weights[:, o] ≈ scale[o] * (65536 * high + 256 * middle + low)`` with ``|error| <= scale[o] / 2``,
    ``scale[o] = max |weights[:, o]| / INT24_MAX``.
    """
    peak = np.abs(weights).max(axis=0).astype(np.float64)
    scale = np.where(peak > 0, peak / INT24_MAX, 1.0).astype(np.float32)  # the scale the graph multiplies by
    value = np.rint(weights / scale.astype(np.float64)).astype(np.int64)
    digits = []
    for _ in range(INT24_DIGITS - 1):
        low = (value + 128) % 256 - 128
        digits.append(low)
        value = (value - low) // 256
    digits.append(value)
    digits.reverse()  # high first
    assert all(np.abs(d).max(initial=0) <= 128 for d in digits[1:]) and np.abs(digits[0]).max(initial=0) <= 127
    scales = np.stack([scale.astype(np.float64) * 256.0 ** (INT24_DIGITS - 1 - k) for k in range(INT24_DIGITS)])
    return np.concatenate(digits, axis=1).astype(np.int8), scales.astype(np.float32)


def int8_weights(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(K, out)`` float weights → symmetric int8 per output neuron and its float scale ``(out,)``."""
    peak = np.abs(weights).max(axis=0)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    return np.clip(np.rint(weights / scale), -127, 127).astype(np.int8), scale


def int8_layer(layer: FrozenLayer) -> FrozenLayer:
    """The layer as the ``int8`` formulation computes it (dequantised), for a numpy reference of that graph."""
    quantized, scale = int8_weights(unfolded_weights(layer))
    size = horizon(layer)
    kernel = (quantized.astype(np.float32) * scale).reshape(size, layer.in_features, layer.out_features).transpose(2, 1, 0)
    delays = np.broadcast_to(size - 1 - np.arange(size), kernel.shape).astype(np.int64)
    return FrozenLayer(np.ascontiguousarray(kernel), delays.copy(), layer.bias, layer.decay, layer.threshold)


# -- the formulations ---------------------------------------------------------------------------------

def with_bias(b: GraphBuilder, current: str, layer: FrozenLayer, layout: str) -> Currents:
    if not np.any(layer.bias):
        return Currents(current, layout)
    bias = layer.bias if layout.endswith("C") else layer.bias[:, None]
    return Currents(b.op("Add", [current, b.const(bias, "bias")], "current"), layout)


def channels_last(signal: Signal, dtype: str = "float") -> tuple[str, str]:
    """The signal with channels last, in its own layout when it already has them (else time-major)."""
    layout = signal.layout if signal.layout.endswith("C") else "TBC"
    return signal.get(layout, dtype), layout


def shift_currents(b: GraphBuilder, signal: Signal, layer: FrozenLayer, ctx: Context) -> Currents:
    x, layout = channels_last(signal)
    axis = layout.index("T")
    size = horizon(layer)
    pads = [0, 0, 0, 0, 0, 0]
    pads[axis] = size - 1
    padded = b.op("Pad", [x, b.ints(*pads)], "padded") if size > 1 else x
    total = None
    matrices = layer.delay_matrices() or {0: np.zeros((layer.in_features, layer.out_features), np.float32)}
    for d, matrix in matrices.items():
        start = size - 1 - d  # padded[start + t] = x[t - d]
        shifted = padded if size == 1 else b.op(
            "Slice", [padded, b.ints(start), b.ints(-d if d else np.iinfo(np.int64).max), b.ints(axis)], "shifted")
        term = b.op("MatMul", [shifted, b.const(matrix, f"w_delay{d}")])
        total = term if total is None else b.op("Add", [total, term])
    return with_bias(b, total, layer, layout)


def conv_currents(b: GraphBuilder, signal: Signal, layer: FrozenLayer, ctx: Context) -> Currents:
    size = horizon(layer)
    conv = b.op("Conv", [signal.get("BCT"), b.const(delay_kernel(layer), "conv_kernel"), b.const(layer.bias, "bias")],
                "conv", pads=[size - 1, 0], kernel_shape=[size])
    return Currents(conv, "BCT")


def unfold(b: GraphBuilder, signal: Signal, size: int, ctx: Context, dtype: str) -> str:
    """``(batch, T, D * in)``: row ``t`` holds ``x[t - D + 1 .. t]`` (zeros before the clip)."""
    x = signal.get("BTC", dtype)
    if size == 1:
        return x
    padded = b.op("Pad", [x, b.ints(0, size - 1, 0, 0, 0, 0)], "padded")
    window = b.op("Add", [ctx.time_index, b.const(np.arange(size, dtype=np.int64)[None, :], "window")], "window_index")
    gathered = b.op("Gather", [padded, window], "unfolded", axis=1)  # (batch, T, D, in)
    return b.op("Reshape", [gathered, b.ints(0, 0, -1)], "unfolded_rows")


def unfold_currents(b: GraphBuilder, signal: Signal, layer: FrozenLayer, ctx: Context) -> Currents:
    rows = unfold(b, signal, horizon(layer), ctx, "float")
    return with_bias(b, b.op("MatMul", [rows, b.const(unfolded_weights(layer), "w_unfolded")]), layer, "BTC")


def stacked_currents(b: GraphBuilder, signal: Signal, layer: FrozenLayer, ctx: Context) -> Currents:
    size, out = horizon(layer), layer.out_features
    x = signal.get("BTC")
    kernel = delay_kernel(layer)  # (out, in, D), index D-1-d
    stacked = np.ascontiguousarray(kernel[:, :, ::-1].transpose(1, 2, 0).reshape(layer.in_features, size * out))
    y = b.op("MatMul", [x, b.const(stacked, "w_stacked")], "per_delay")  # (batch, T, D*out), block d = delay d
    if size == 1:
        return with_bias(b, y, layer, "BTC")
    # Row d of (D, T + D) read back with width T + D - 1 starts d places later: block d delayed by d.
    blocks = b.op("Transpose", [b.op("Reshape", [y, b.ints(0, 0, size, out)])], "by_delay", perm=[0, 3, 2, 1])
    # padded as 3-D: onnxruntime 1.32's NCHWc layout pass crashes on a 4-D Pad in a graph that has a Conv
    rows = b.op("Reshape", [blocks, b.ints(0, out * size, -1)], "delay_rows")  # (batch, out * D, T)
    padded = b.op("Pad", [rows, b.ints(0, 0, 0, 0, 0, size)], "padded")  # (batch, out * D, T + D)
    flat = b.op("Slice", [b.op("Reshape", [padded, b.ints(0, out, -1)]), b.ints(0), b.ints(-size), b.ints(2)], "flat")
    skewed = b.op("Reshape", [flat, b.ints(0, 0, size, -1)], "skewed")  # (batch, out, D, T + D - 1)
    summed = b.op("ReduceSum", [skewed, b.ints(2)], "delay_sum", keepdims=0)
    current = b.op("Slice", [summed, b.ints(0), b.ints(-(size - 1)), b.ints(2)], "current")
    return with_bias(b, current, layer, "BCT")


def int24_currents(b: GraphBuilder, signal: Signal, layer: FrozenLayer, ctx: Context) -> Currents:
    digits, scales = int24_digits(unfolded_weights(layer))
    rows = unfold(b, signal, horizon(layer), ctx, "uint8")
    sums = b.op("Cast", [b.op("MatMulInteger", [rows, b.const(digits, "w_digits")], "digit_sums")], to=1)
    by_digit = b.op("Reshape", [sums, b.ints(0, 0, INT24_DIGITS, layer.out_features)], "by_digit")
    current = b.op("ReduceSum", [b.op("Mul", [by_digit, b.const(scales, "digit_scales")]), b.ints(2)], "current", keepdims=0)
    return with_bias(b, current, layer, "BTC")


def int8_currents(b: GraphBuilder, signal: Signal, layer: FrozenLayer, ctx: Context) -> Currents:
    quantized, scale = int8_weights(unfolded_weights(layer))
    rows = unfold(b, signal, horizon(layer), ctx, "uint8")
    sums = b.op("Cast", [b.op("MatMulInteger", [rows, b.const(quantized, "w_int8")], "int_sums")], to=1)
    return with_bias(b, b.op("Mul", [sums, b.const(scale, "w_scale")], "current"), layer, "BTC")


def fan_out_tables(layer: FrozenLayer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per input neuron, its synapse taps padded to the largest fan-out: weights, delays, target neurons."""
    out_idx, in_idx, tap = np.nonzero(layer.weight)
    fan_out = np.bincount(in_idx, minlength=layer.in_features)
    width = max(1, int(fan_out.max()) if fan_out.size else 1)
    weights = np.zeros((layer.in_features, width), dtype=np.float32)
    delays = np.zeros((layer.in_features, width), dtype=np.int64)
    targets = np.zeros((layer.in_features, width), dtype=np.int64)
    slot = np.zeros(layer.in_features, dtype=np.int64)
    for o, i, k in zip(out_idx, in_idx, tap):
        weights[i, slot[i]] = layer.weight[o, i, k]
        delays[i, slot[i]] = layer.delay[o, i, k]
        targets[i, slot[i]] = o
        slot[i] += 1
    return weights, delays, targets


def event_currents(b: GraphBuilder, signal: Signal, layer: FrozenLayer, ctx: Context) -> Currents:
    """Each spike ``(t, batch, input)`` scatters its fan-out at ``t + delay``."""
    weights, delays, targets = fan_out_tables(layer)
    size = horizon(layer)
    events = b.op("NonZero", [signal.get("TBC", "bool")], "events")  # (3, N): t, batch, input
    zero, one, two = (b.const(np.array(k, dtype=np.int64), f"axis{k}") for k in (0, 1, 2))
    t = b.op("Unsqueeze", [b.op("Gather", [events, zero], "t", axis=0), b.ints(1)], "t_col")
    n = b.op("Unsqueeze", [b.op("Gather", [events, one], "n", axis=0), b.ints(1)], "n_col")
    source = b.op("Gather", [events, two], "source", axis=0)
    fan_weights = b.op("Gather", [b.const(weights, "fan_weights"), source], "w", axis=0)
    fan_delays = b.op("Gather", [b.const(delays, "fan_delays"), source], "d", axis=0)
    fan_targets = b.op("Gather", [b.const(targets, "fan_targets"), source], "o", axis=0)
    width = b.const(np.array(layer.out_features, dtype=np.int64), "out_features")
    arrival = b.op("Add", [t, fan_delays], "arrival")
    flat = b.op("Add", [b.op("Mul", [b.op("Add", [b.op("Mul", [arrival, ctx.batch]), n]), width]), fan_targets], "flat")
    padded_steps = b.op("Add", [ctx.steps, b.ints(size)], "padded_steps")
    grid_shape = b.op("Concat", [padded_steps, ctx.batch, b.ints(layer.out_features)], "grid_shape", axis=0)
    grid = b.op("ConstantOfShape", [b.op("ReduceProd", [grid_shape], "grid_size", keepdims=1)], "grid", value=zeros_value())
    scattered = b.op("ScatterElements", [grid, b.op("Reshape", [flat, b.ints(-1)]), b.op("Reshape", [fan_weights, b.ints(-1)])],
                     "scattered", axis=0, reduction="add")
    current = b.op("Slice", [b.op("Reshape", [scattered, grid_shape], "grid3"), b.ints(0), ctx.steps, b.ints(0)], "current")
    return with_bias(b, current, layer, "TBC")


def fc_currents(b: GraphBuilder, signal: Signal, layer: FrozenLayer, ctx: Context) -> Currents:
    """The same layer with every delay 0: a plain MatMul (the cost floor delays are measured against)."""
    x, layout = channels_last(signal)
    matrix = layer.weight.sum(axis=2).T.astype(np.float32)
    return with_bias(b, b.op("MatMul", [x, b.const(matrix, "w")]), layer, layout)


Formulation = Callable[[GraphBuilder, Signal, FrozenLayer, Context], Currents]

FORMULATIONS: dict[str, Formulation] = {
    "shift": shift_currents, "conv": conv_currents, "unfold": unfold_currents, "stacked": stacked_currents,
    "int24": int24_currents, "int8": int8_currents, "event": event_currents, "fc": fc_currents,
}
SPIKES_ONLY = frozenset({"int24", "int8", "event"})  # need 0/1 inputs
EXACT = ("shift", "conv", "unfold", "stacked", "int24", "event")
MEASURED = ("shift", "conv", "unfold", "stacked", "int24")  # the candidates export.planner times ("event" is never close)


def currents(b: GraphBuilder, signal: Signal, layer: FrozenLayer, ctx: Context, formulation: str) -> Currents:
    if formulation not in FORMULATIONS:
        raise ValueError(f"formulation must be one of {tuple(FORMULATIONS)}, got {formulation!r}")
    if formulation in SPIKES_ONLY and not signal.binary:
        raise ValueError(f"formulation {formulation!r} needs a spike (0/1) input; the first layer reads log-mel features")
    return FORMULATIONS[formulation](b, signal, layer, ctx)
