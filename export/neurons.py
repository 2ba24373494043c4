"""The neurons of the graph: the hidden LIF recurrence and the readout's leaky integration.

The LIF of ``model.neuron`` per step: ``v = decay * v + i``; spike where ``v >= threshold``; hard reset
to 0. Two forms (``neurons=`` of :func:`export.onnx_graph.build_onnx`):

- ``"lean"`` (default). A hidden layer is a ``Scan`` whose 3-op body carries the *negated* post-reset
  potential ``n = -v``: ``u = decay * n - i`` is ``-v`` exactly (float negation is exact), and
  ``ThresholdedRelu(u, alpha=-threshold)`` keeps ``u`` where ``-v > -threshold`` (no spike) and gives 0
  where ``v >= threshold`` (the reset). The spikes are read off the emitted ``u`` for all steps at once
  (``u <= -threshold``), outside the loop. The readout never fires, so it is a linear filter of its
  current: ``v[t] = sum_s decay^(t-s) i[s]``, one ``MatMul`` with the lower-triangular Toeplitz matrix
  of the decay's powers, built for the clip's length in the graph.
- ``"reference"``: the graph as exported before (issue 14): a 5-op ``Scan`` body
  (``Mul, Add, GreaterOrEqual, Cast, Where``) for every layer, the readout included.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from export.freeze import FrozenLayer
from export.graph_builder import GraphBuilder, zeros_value
from export.signals import Context, Currents, Signal

NEURON_FORMS = ("lean", "reference")


def initial_state(b: GraphBuilder, width: int, ctx: Context) -> str:
    shape = b.op("Concat", [ctx.batch, b.ints(width)], "state_shape", axis=0)
    return b.op("ConstantOfShape", [shape], "v0", value=zeros_value())


def scan_graph(b: GraphBuilder, name: str, width: int, state_in: str, step_in: str, state_out: str, emitted: str) -> onnx.GraphProto:
    shape = ["batch", width]
    return helper.make_graph(
        b.nodes, name,
        [helper.make_tensor_value_info(state_in, TensorProto.FLOAT, shape),
         helper.make_tensor_value_info(step_in, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(state_out, TensorProto.FLOAT, shape),
         helper.make_tensor_value_info(emitted, TensorProto.FLOAT, shape)],
        initializer=b.initializers,
    )


def lean_body(layer: FrozenLayer, prefix: str) -> onnx.GraphProto:
    b = GraphBuilder(prefix=f"{prefix}_step_")
    n_in, i_t = f"{prefix}_negated_v_in", f"{prefix}_i_t"
    negated_v = b.op("Sub", [b.op("Mul", [n_in, b.const(np.float32(layer.decay), "decay")]), i_t], "negated_v")
    n_out = b.op("ThresholdedRelu", [negated_v], "negated_v_after_reset", alpha=-float(np.float32(layer.threshold)))
    return scan_graph(b, f"{prefix}_lif", layer.out_features, n_in, i_t, n_out, negated_v)


def reference_body(layer: FrozenLayer, prefix: str) -> onnx.GraphProto:
    b = GraphBuilder(prefix=f"{prefix}_step_")
    v_in, i_t = f"{prefix}_v_in", f"{prefix}_i_t"
    v = b.op("Add", [b.op("Mul", [v_in, b.const(np.float32(layer.decay), "decay")]), i_t], "v")
    if layer.is_readout:
        v_out, emitted = b.op("Identity", [v], "v_out"), b.op("Identity", [v], "potential")
    else:
        fired = b.op("GreaterOrEqual", [v, b.const(np.float32(layer.threshold), "threshold")], "fired")
        emitted = b.op("Cast", [fired], "spike", to=TensorProto.FLOAT)
        v_out = b.op("Where", [fired, b.const(np.float32(0.0), "zero"), v], "v_reset")
    return scan_graph(b, f"{prefix}_lif", layer.out_features, v_in, i_t, v_out, emitted)


def scan(b: GraphBuilder, current: Currents, body: onnx.GraphProto, width: int, ctx: Context, prefix: str) -> str:
    """Runs ``body`` over time; the emitted values come out time-major ``(T, batch, width)``."""
    _, emitted = b.op("Scan", [initial_state(b, width, ctx), current.name], f"{prefix}_scan", outputs=2, body=body,
                      num_scan_inputs=1, scan_input_axes=[current.time_axis()])
    return emitted


def hidden_spikes(b: GraphBuilder, current: Currents, layer: FrozenLayer, ctx: Context, form: str, prefix: str) -> Signal:
    """Currents → the layer's spikes, a time-major :class:`Signal` (bool for ``lean``, float for ``reference``)."""
    if form == "reference":
        spikes = scan(b, current, reference_body(layer, prefix), layer.out_features, ctx, prefix)
        return Signal(b, spikes, "TBC", "float", layer.out_features, binary=True)
    negated_v = scan(b, current, lean_body(layer, prefix), layer.out_features, ctx, prefix)
    fired = b.op("LessOrEqual", [negated_v, b.const(np.float32(-layer.threshold), "minus_threshold")], "fired")
    return Signal(b, fired, "TBC", "bool", layer.out_features, binary=True)


def decay_powers(b: GraphBuilder, decay: float, ctx: Context, transposed: bool) -> str:
    """``(T, T)`` matrix ``L[t, s] = decay^(t - s)`` for ``s <= t`` else 0 (``L`` transposed if asked)."""
    index = b.op("Cast", [b.op("Squeeze", [ctx.time_index, b.ints(1)], "steps_range")], "steps_float", to=TensorProto.FLOAT)
    rows = b.op("Unsqueeze", [index, b.ints(0 if transposed else 1)], "later")
    cols = b.op("Unsqueeze", [index, b.ints(1 if transposed else 0)], "earlier")
    lag = b.op("Sub", [rows, cols], "lag")
    powers = b.op("Pow", [b.const(np.float32(decay), "decay"), lag], "decay_powers")
    return b.op("Where", [b.op("Less", [lag, b.const(np.float32(0), "zero")], "acausal"),
                          b.const(np.float32(0), "zero"), powers], "leak_filter")


def readout_potentials(b: GraphBuilder, current: Currents, layer: FrozenLayer, ctx: Context, form: str) -> tuple[str, int, int]:
    """The readout's membrane potentials and the axes of its classes and of time."""
    if form == "reference":
        potentials = scan(b, current, reference_body(layer, "readout"), layer.out_features, ctx, "readout")
        return potentials, 2, 0
    if current.layout == "BCT":  # (batch, classes, T) @ L^T
        return b.op("MatMul", [current.name, decay_powers(b, layer.decay, ctx, transposed=True)], "potentials"), 1, 2
    batch_major = current.name if current.layout == "BTC" else b.op("Transpose", [current.name], "readout_btc", perm=[1, 0, 2])
    return b.op("MatMul", [decay_powers(b, layer.decay, ctx, transposed=False), batch_major], "potentials"), 2, 1
