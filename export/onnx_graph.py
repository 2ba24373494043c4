"""ONNX graph of a :class:`export.freeze.FrozenNetwork`, built from plain ops (opset 17).

Input ``features``: float32 ``(batch, n_mels, time)`` log-mel, batch-major as the
feature module produces it; batch and time are dynamic. Outputs:

- ``scores`` ``(batch, classes)``: the paper's readout, softmax of the readout
  potentials averaged over time (sums to 1; the training loss uses the sum).
- ``spike_counts`` ``(batch, hidden_layers)``: spikes emitted per hidden layer.

Formulations (all exact; ``python -m benchmarks.inference`` times them):

- First layer (dense real-valued input): one causal ``Conv`` whose kernel holds
  each synapse's weight at its integer delay.
- Layers fed by spikes, ``formulation="shift"`` (the default, fastest in
  onnxruntime on CPU): the spike trains padded once, then per integer delay a
  ``Slice`` and one ``MatMul`` with the weights of the synapses that have that delay.
- ``"conv"``: the dense integer-delay ``Conv`` for every layer.
- ``"event"``: event-driven. ``NonZero`` lists the (t, batch, input) spikes;
  each spike gathers its input's fan-out (weights, delays, targets) and one
  ``ScatterElements(reduction="add")`` adds the weights at ``t + delay``. Least
  arithmetic (spikes x fan-out), but onnxruntime's scatter is serial and slow.
- ``"fc"``: every delay dropped, the no-delay floor (benchmark only).
- Neurons: one ``Scan`` per layer over time (the LIF recurrence).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.freeze import FrozenLayer, FrozenNetwork
from model.vocabulary import keywords_of

OPSET = 17
EXPORT_FORMAT = "delay-snn-onnx/1"


class GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value: Any, hint: str, dtype: Any = None) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, outputs: int = 1, **attrs: Any):
        names = [self.name(hint or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, **attrs))
        return names[0] if outputs == 1 else names


def lif_scan(decay: float, threshold: float | None, width: int, prefix: str) -> onnx.GraphProto:
    """Scan body: ``v = decay * v + i_t``; spikes and hard reset unless ``threshold`` is None (readout)."""
    b = GraphBuilder()
    v_in, i_t = f"{prefix}_v_in", f"{prefix}_i_t"
    v = b.op("Add", [b.op("Mul", [v_in, b.const(np.float32(decay), "decay")]), i_t], "v")
    if threshold is None:
        v_out = b.op("Identity", [v], "v_out")
        emitted = b.op("Identity", [v], "potential")
    else:
        fired = b.op("GreaterOrEqual", [v, b.const(np.float32(threshold), "threshold")], "fired")
        emitted = b.op("Cast", [fired], "spike", to=TensorProto.FLOAT)
        v_out = b.op("Where", [fired, b.const(np.float32(0.0), "zero"), v], "v_reset")
    shape = ["batch", width]
    return helper.make_graph(
        b.nodes, f"{prefix}_lif",
        [helper.make_tensor_value_info(v_in, TensorProto.FLOAT, shape),
         helper.make_tensor_value_info(i_t, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(v_out, TensorProto.FLOAT, shape),
         helper.make_tensor_value_info(emitted, TensorProto.FLOAT, shape)],
        initializer=b.initializers,
    )


def neurons(b: GraphBuilder, current: str, layer: FrozenLayer, batch_zeros: str, prefix: str) -> str:
    """``(T, batch, out)`` current → spikes (or readout potentials) through a Scan over time."""
    body = lif_scan(layer.decay, None if layer.is_readout else layer.threshold, layer.out_features, prefix)
    _, emitted = b.op("Scan", [batch_zeros, current], f"{prefix}_scan", outputs=2, body=body,
                      num_scan_inputs=1)
    return emitted


def dense_input_currents(b: GraphBuilder, features: str, layer: FrozenLayer) -> str:
    """``features (batch, in, T)`` → ``(T, batch, out)`` via one causal Conv with the integer-delay kernel."""
    size = int(layer.delay.max()) + 1
    kernel = np.zeros((layer.out_features, layer.in_features, size), dtype=np.float32)
    out_idx, in_idx, tap = np.nonzero(layer.weight)
    np.add.at(kernel, (out_idx, in_idx, size - 1 - layer.delay[out_idx, in_idx, tap]), layer.weight[out_idx, in_idx, tap])
    conv = b.op("Conv", [features, b.const(kernel, "conv_kernel"), b.const(layer.bias, "bias")], "conv",
                pads=[size - 1, 0], kernel_shape=[size])
    return b.op("Transpose", [conv], "currents", perm=[2, 0, 1])


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


def event_driven_currents(b: GraphBuilder, spikes: str, layer: FrozenLayer, steps: str, batch: str) -> str:
    """Spikes ``(T, batch, in)`` → currents ``(T, batch, out)``: each spike scatters its fan-out at t + delay."""
    weights, delays, targets = fan_out_tables(layer)
    horizon = int(layer.delay.max()) + 1
    events = b.op("NonZero", [spikes], "events")  # (3, N): t, batch, input
    zero, one, two = (b.const(np.array(k, dtype=np.int64), f"axis{k}") for k in (0, 1, 2))
    t = b.op("Unsqueeze", [b.op("Gather", [events, zero], "t", axis=0), one], "t_col")
    n = b.op("Unsqueeze", [b.op("Gather", [events, one], "n", axis=0), one], "n_col")
    source = b.op("Gather", [events, two], "source", axis=0)
    fan_weights = b.op("Gather", [b.const(weights, "fan_weights"), source], "w", axis=0)
    fan_delays = b.op("Gather", [b.const(delays, "fan_delays"), source], "d", axis=0)
    fan_targets = b.op("Gather", [b.const(targets, "fan_targets"), source], "o", axis=0)
    width = b.const(np.array(layer.out_features, dtype=np.int64), "out_features")
    arrival = b.op("Add", [t, fan_delays], "arrival")
    flat = b.op("Add", [b.op("Mul", [b.op("Add", [b.op("Mul", [arrival, batch]), n]), width]), fan_targets], "flat")
    padded_steps = b.op("Add", [steps, b.const(np.array([horizon], dtype=np.int64), "horizon")], "padded_steps")
    grid_shape = b.op("Concat", [padded_steps, batch, b.const(np.array([layer.out_features], dtype=np.int64), "w")],
                      "grid_shape", axis=0)
    size = b.op("ReduceProd", [grid_shape], "grid_size", keepdims=1)
    grid = b.op("ConstantOfShape", [size], "grid", value=helper.make_tensor("z", TensorProto.FLOAT, [1], [0.0]))
    minus_one = b.const(np.array([-1], dtype=np.int64), "flat_shape")
    scattered = b.op("ScatterElements", [grid, b.op("Reshape", [flat, minus_one]), b.op("Reshape", [fan_weights, minus_one])],
                     "scattered", axis=0, reduction="add")
    grid3 = b.op("Reshape", [scattered, grid_shape], "grid3")
    current = b.op("Slice", [grid3, b.const(np.array([0], dtype=np.int64), "start"), steps,
                             b.const(np.array([0], dtype=np.int64), "axis")], "current")
    return b.op("Add", [current, b.const(layer.bias, "bias")], "currents")


def conv_currents(b: GraphBuilder, x: str, layer: FrozenLayer) -> str:
    """Time-major input → currents through the dense integer-delay Conv (the first layer's form, for any layer)."""
    return dense_input_currents(b, b.op("Transpose", [x], "batch_major", perm=[1, 2, 0]), layer)


def shift_matmul_currents(b: GraphBuilder, x: str, layer: FrozenLayer, steps: str) -> str:
    """One masked MatMul per integer delay on the input shifted by that delay, summed."""
    horizon = int(layer.delay.max())
    padded = b.op("Pad", [x, b.const(np.array([horizon, 0, 0, 0, 0, 0], np.int64), "pads")], "padded")
    total = None
    for d, matrix in layer.delay_matrices().items():
        start = b.const(np.array([horizon - d], np.int64), "start")
        shifted = b.op("Slice", [padded, start, b.op("Add", [start, steps]), b.const(np.array([0], np.int64), "axis")])
        term = b.op("MatMul", [shifted, b.const(matrix, f"w_delay{d}")])
        total = term if total is None else b.op("Add", [total, term])
    return b.op("Add", [total, b.const(layer.bias, "bias")], "currents")


def fully_connected_currents(b: GraphBuilder, x: str, layer: FrozenLayer) -> str:
    """The same layer with every delay 0: a plain MatMul (the cost floor delays are measured against)."""
    matrix = layer.weight.sum(axis=2).T.astype(np.float32)
    return b.op("Add", [b.op("MatMul", [x, b.const(matrix, "w")]), b.const(layer.bias, "bias")], "currents")


FORMULATIONS = ("event", "conv", "shift", "fc")


def build_onnx(network: FrozenNetwork, metadata: dict[str, str] | None = None, formulation: str = "shift") -> onnx.ModelProto:
    """The exported graph; ``formulation`` picks how spike-fed layers apply delays (all exact)."""
    if formulation not in FORMULATIONS:
        raise ValueError(f"formulation must be one of {FORMULATIONS}")
    b = GraphBuilder()
    features = "features"
    shape = b.op("Shape", [features], "features_shape")
    batch = b.op("Slice", [shape, b.const(np.array([0], np.int64), "s"), b.const(np.array([1], np.int64), "e")], "batch")
    steps = b.op("Slice", [shape, b.const(np.array([2], np.int64), "s"), b.const(np.array([3], np.int64), "e")], "steps")

    x = None
    counts = []
    for index, layer in enumerate(network.layers):
        zeros_shape = b.op("Concat", [batch, b.const(np.array([layer.out_features], np.int64), "width")], "v0_shape", axis=0)
        v0 = b.op("ConstantOfShape", [zeros_shape], "v0", value=helper.make_tensor("z", TensorProto.FLOAT, [1], [0.0]))
        if formulation == "fc":
            time_major = x if index else b.op("Transpose", [features], "time_major", perm=[2, 0, 1])
            current = fully_connected_currents(b, time_major, layer)
        elif index == 0:
            current = dense_input_currents(b, features, layer)
        elif formulation == "event":
            current = event_driven_currents(b, x, layer, steps, batch)
        elif formulation == "conv":
            current = conv_currents(b, x, layer)
        else:
            current = shift_matmul_currents(b, x, layer, steps)
        x = neurons(b, current, layer, v0, f"layer{index}")
        if not layer.is_readout:
            counts.append(b.op("ReduceSum", [x, b.const(np.array([0, 2], np.int64), "axes")], "count", keepdims=0))
    probabilities = b.op("Softmax", [x], "softmax", axis=-1)
    b.nodes.append(helper.make_node("ReduceMean", [probabilities], ["scores"], axes=[0], keepdims=0))
    b.nodes.append(helper.make_node("Concat", [b.op("Unsqueeze", [c, b.const(np.array([1], np.int64), "ax")]) for c in counts],
                                    ["spike_counts"], axis=1))

    n_in, n_classes = network.input_size, network.layers[-1].out_features
    graph = helper.make_graph(
        b.nodes, "delay_snn",
        [helper.make_tensor_value_info(features, TensorProto.FLOAT, ["batch", n_in, "time"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", n_classes]),
         helper.make_tensor_value_info("spike_counts", TensorProto.FLOAT, ["batch", len(counts)])],
        initializer=b.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="delay-snn-kws")
    model.ir_version = 8
    props = {**network_metadata(network), **(metadata or {})}
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    return model


def network_metadata(network: FrozenNetwork) -> dict[str, str]:
    """Everything the service needs, as ONNX metadata_props (strings; structured values as JSON)."""
    hidden = [layer for layer in network.layers if not layer.is_readout]
    return {
        "format": EXPORT_FORMAT,
        "labels": json.dumps(network.labels),
        "keywords": json.dumps(keywords_of(network.labels)),
        "feature_config": json.dumps(network.feature_config),
        "input_layout": "features (batch, n_mels, time): log-mel from model.features.log_mel",
        "output_scores": "mean over time of softmax(readout potentials)",
        "neurons": json.dumps({"decay": [layer.decay for layer in network.layers],
                               "threshold": hidden[0].threshold if hidden else None,
                               "reset": "hard, to 0", "readout": "membrane potential, never fires"}),
        "hidden_sizes": json.dumps([layer.out_features for layer in hidden]),
        "parameter_count": str(network.parameter_count()),
        "synapse_count": str(sum(layer.synapse_count for layer in network.layers)),
        "delay_statistics": json.dumps(network.delay_statistics()),
        **{key: str(value) for key, value in network.metadata.items()},
    }
