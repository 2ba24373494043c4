"""ONNX graph of a :class:`export.freeze.FrozenNetwork`, built from plain ops (opset 17).

Input ``features``: float32 ``(batch, n_mels, time)`` log-mel, batch-major as the feature module
produces it; batch and time are dynamic. Outputs:

- ``scores`` ``(batch, classes)``: the paper's readout, softmax of the readout potentials averaged
  over time (sums to 1; the training loss uses the sum), then the optional score transform
  (:func:`score_transform`).
- ``spike_counts`` ``(batch, hidden_layers)``: spikes emitted per hidden layer.

Per layer: its synaptic currents in one of the formulations of :mod:`export.synapses` (a *plan*
says which, possibly one per range of batch sizes: an ``If`` on the batch size picks it), then its
neurons (:mod:`export.neurons`). All formulations but ``int8`` and ``fc`` compute the trained
network exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from export.freeze import FrozenLayer, FrozenNetwork
from export.graph_builder import OPSET, GraphBuilder
from export.neurons import NEURON_FORMS, hidden_spikes, readout_potentials
from export.signals import Context, Currents, Signal, context_of
from export.synapses import FORMULATIONS, SPIKES_ONLY, currents
from model.vocabulary import keywords_of

EXPORT_FORMAT = "delay-snn-onnx/1"


@dataclass(frozen=True)
class Segment:
    """Use ``formulation`` for batches of at most ``batch_max`` windows (None: any larger batch)."""

    batch_max: int | None
    formulation: str


LayerPlan = tuple[Segment, ...]


def uniform_plan(network: FrozenNetwork, formulation: str) -> list[LayerPlan]:
    """``formulation`` for every layer that can take it; the first layer (real-valued input) falls back to ``conv``."""
    if formulation not in FORMULATIONS:
        raise ValueError(f"formulation must be one of {tuple(FORMULATIONS)}, got {formulation!r}")
    first = "conv" if formulation in SPIKES_ONLY else formulation
    return [(Segment(None, first if index == 0 else formulation),) for index in range(len(network.layers))]


def plan_to_json(plan: Sequence[LayerPlan]) -> str:
    return json.dumps([[{"batch_max": s.batch_max, "formulation": s.formulation} for s in layer] for layer in plan])


def plan_from_json(text: str) -> list[LayerPlan]:
    return [tuple(Segment(s["batch_max"], s["formulation"]) for s in layer) for layer in json.loads(text)]


def check_plan(network: FrozenNetwork, plan: Sequence[LayerPlan]) -> None:
    if len(plan) != len(network.layers):
        raise ValueError(f"plan has {len(plan)} layers, the network {len(network.layers)}")
    for index, layer in enumerate(plan):
        bounds = [s.batch_max for s in layer]
        if not layer or bounds[-1] is not None or any(b is None for b in bounds[:-1]) or bounds[:-1] != sorted(set(bounds[:-1])):
            raise ValueError(f"layer {index}: segments need rising batch_max bounds and a last open one, got {bounds}")
        for segment in layer:
            if segment.formulation not in FORMULATIONS or (index == 0 and segment.formulation in SPIKES_ONLY):
                raise ValueError(f"layer {index}: formulation {segment.formulation!r} is not possible here")


def layer_currents(b: GraphBuilder, signal: Signal, layer: FrozenLayer, ctx: Context, plan: LayerPlan) -> Currents:
    """The layer's currents; with several segments, an ``If`` on the batch size chooses (all give ``TBC``)."""
    if len(plan) == 1:
        return currents(b, signal, layer, ctx, plan[0].formulation)
    segment, rest = plan[0], plan[1:]
    branches = []
    for part in ((segment,), rest):
        inner = b.branch()
        result = layer_currents(inner, signal.within(inner), layer, ctx, part)
        time_major = result.name if result.layout == "TBC" else inner.op(
            "Transpose", [result.name], "to_TBC", perm=[result.layout.index(axis) for axis in "TBC"])
        branches.append(inner.as_branch(inner.name("branch"), time_major))
    small = b.op("LessOrEqual", [ctx.batch, b.ints(segment.batch_max)], "small_batch")
    return Currents(b.op("If", [small], "current", then_branch=branches[0], else_branch=branches[1]), "TBC")


def score_transform(b: GraphBuilder, probabilities: str, calibration_temperature: float | None) -> str:
    """The ``scores`` output: the mean probabilities, or ``softmax(log(p) / T)`` with a calibration temperature ``T``."""
    if calibration_temperature is None:
        return b.output("Identity", [probabilities], "scores")
    if not calibration_temperature > 0:
        raise ValueError(f"calibration_temperature must be > 0, got {calibration_temperature}")
    logits = b.op("Div", [b.op("Log", [probabilities], "log_p"), b.const(np.float32(calibration_temperature), "temperature")])
    return b.output("Softmax", [logits], "scores", axis=1)


def build_onnx(network: FrozenNetwork, metadata: dict[str, str] | None = None, formulation: str | Sequence[LayerPlan] = "shift",
               neurons: str = "lean", calibration_temperature: float | None = None) -> onnx.ModelProto:
    """The exported graph.

    ``formulation``: one name for every layer (see :func:`uniform_plan`) or a plan, one tuple of
    :class:`Segment` per layer (``export.planner.measure_plan`` makes one by timing them).
    ``neurons``: ``"lean"`` or ``"reference"`` (:mod:`export.neurons`).
    """
    plan = uniform_plan(network, formulation) if isinstance(formulation, str) else list(formulation)
    check_plan(network, plan)
    if neurons not in NEURON_FORMS:
        raise ValueError(f"neurons must be one of {NEURON_FORMS}")
    b = GraphBuilder()
    ctx = context_of(b, "features", "BCT")
    signal = Signal(b, "features", "BCT", "float", network.input_size, binary=False)
    counts = []
    for index, (layer, layer_plan) in enumerate(zip(network.layers, plan)):
        current = layer_currents(b, signal, layer, ctx, layer_plan)
        if layer.is_readout:
            potentials, class_axis, time_axis = readout_potentials(b, current, layer, ctx, neurons)
            break
        signal = hidden_spikes(b, current, layer, ctx, neurons, f"layer{index}")
        counts.append(b.op("ReduceSum", [signal.get("TBC", "float"), b.ints(0, 2)], "count", keepdims=0))
    probabilities = b.op("ReduceMean", [b.op("Softmax", [potentials], "softmax", axis=class_axis)], "probabilities",
                         axes=[time_axis], keepdims=0)
    score_transform(b, probabilities, calibration_temperature)
    b.output("Concat", [b.op("Unsqueeze", [c, b.ints(1)]) for c in counts], "spike_counts", axis=1)

    n_in, n_classes = network.input_size, network.layers[-1].out_features
    graph = helper.make_graph(
        b.nodes, "delay_snn",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n_in, "time"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", n_classes]),
         helper.make_tensor_value_info("spike_counts", TensorProto.FLOAT, ["batch", len(counts)])],
        initializer=b.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="delay-snn-kws")
    model.ir_version = 8
    props = {**network_metadata(network, calibration_temperature), "synapse_plan": plan_to_json(plan),
             "neuron_form": neurons, **(metadata or {})}
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    return model


def network_metadata(network: FrozenNetwork, calibration_temperature: float | None = None) -> dict[str, str]:
    """Everything the service needs, as ONNX metadata_props (strings; structured values as JSON)."""
    hidden = [layer for layer in network.layers if not layer.is_readout]
    scores = "mean over time of softmax(readout potentials)"
    if calibration_temperature is not None:
        scores = "softmax(log(mean over time of softmax(readout potentials)) / calibration_temperature)"
    return {
        "format": EXPORT_FORMAT,
        "labels": json.dumps(network.labels),
        "keywords": json.dumps(keywords_of(network.labels)),
        "feature_config": json.dumps(network.feature_config),
        "input_layout": "features (batch, n_mels, time): log-mel from model.features.log_mel",
        "output_scores": scores,
        **({"calibration_temperature": repr(float(calibration_temperature))} if calibration_temperature is not None else {}),
        "neurons": json.dumps({"decay": [layer.decay for layer in network.layers],
                               "threshold": hidden[0].threshold if hidden else None,
                               "reset": "hard, to 0", "readout": "membrane potential, never fires"}),
        "hidden_sizes": json.dumps([layer.out_features for layer in hidden]),
        "parameter_count": str(network.parameter_count()),
        "synapse_count": str(sum(layer.synapse_count for layer in network.layers)),
        "delay_statistics": json.dumps(network.delay_statistics()),
        **{key: str(value) for key, value in network.metadata.items()},
    }

