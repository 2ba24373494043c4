"""Which formulation each layer's synapses get: timed on this machine at export (``kws-export``'s default).

Every exact formulation of :mod:`export.synapses` computes the same currents; which is fastest depends
on the layer's shape, the batch size and the CPU (``int24`` rides on int8 matrix units — AMX, VNNI —
where there are some, ``unfold`` on one large float GEMM, ``shift`` on many small ones). So each layer
is built alone in every candidate formulation and timed at each batch size, the candidates taking turns
in blocks of runs (so a background load hits them alike); the fastest per batch size makes the plan, whose
segments an ``If`` on the batch size selects in the graph. The plan, the timings and the machine go
into the ONNX metadata (``synapse_plan``, ``synapse_timings``, ``synapse_plan_measured_on``).
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from export.freeze import FrozenLayer, FrozenNetwork
from export.graph_builder import OPSET, GraphBuilder
from export.onnx_graph import LayerPlan, Segment
from export.signals import Currents, Signal, context_of, permutation
from export.synapses import MEASURED, SPIKES_ONLY, currents
from model.features import FeatureConfig

BATCH_SIZES = (1, 2, 4, 8, 16)  # the service batches up to 16 windows (KWS_MAX_BATCH_SIZE)
KEEP_MARGIN = 0.10  # a segment keeps its formulation where another is less than 10 % faster (no flapping)
DROP_FACTOR = 3.0  # a candidate 3x slower than the best in the first round is timed no further
BLOCK = 5  # timed runs per turn


def layer_model(layer: FrozenLayer, first: bool, formulation: str, layout: str | None = None) -> onnx.ModelProto:
    """One layer's currents alone: input ``x`` as that layer gets it in the graph (features ``(batch, in, T)``,
    or spikes as bool ``(T, batch, in)``); output ``current`` in the formulation's layout, or in ``layout``."""
    b = GraphBuilder()
    source, dtype = ("BCT", TensorProto.FLOAT) if first else ("TBC", TensorProto.BOOL)
    signal = Signal(b, "x", source, "float" if first else "bool", layer.in_features, binary=not first)
    result = currents(b, signal, layer, context_of(b, "x", source), formulation)
    if layout is not None and layout != result.layout:
        result = Currents(b.op("Transpose", [result.name], perm=permutation(result.layout, layout)), layout)
    b.output("Identity", [result.name], "current")
    shape = {"BCT": ["batch", layer.in_features, "time"], "TBC": ["time", "batch", layer.in_features]}[source]
    graph = helper.make_graph(b.nodes, "layer", [helper.make_tensor_value_info("x", dtype, shape)],
                              [helper.make_tensor_value_info("current", TensorProto.FLOAT, None)], initializer=b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model


def layer_input(layer: FrozenLayer, first: bool, batch: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    if first:
        return (rng.standard_normal((batch, layer.in_features, steps)) * 2 - 6).astype(np.float32)
    return rng.random((steps, batch, layer.in_features)) < 0.15  # a trained network's firing rate, about


def time_layer(layer: FrozenLayer, first: bool, candidates: Sequence[str], batch_sizes: Sequence[int], steps: int,
               threads: int, rounds: int, block: int = BLOCK) -> dict[str, list[float]]:
    """Median ms per run of each candidate at each batch size (``inf`` where dropped as far too slow).

    The candidates take turns in blocks of runs, each block after two warm-up runs: a session's threads keep
    spinning a while after its run and would slow whichever session runs next."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    sessions = {f: onnxruntime.InferenceSession(layer_model(layer, first, f).SerializeToString(), options,
                                                providers=["CPUExecutionProvider"]) for f in candidates}
    rng = np.random.default_rng(0)
    timings: dict[str, list[float]] = {f: [] for f in candidates}
    for batch in batch_sizes:
        feed = {"x": layer_input(layer, first, batch, steps, rng)}
        runs: dict[str, list[float]] = {f: [] for f in candidates}
        alive = list(candidates)
        for round_index in range(rounds):
            for f in alive:
                for _ in range(2):
                    sessions[f].run(None, feed)
                for _ in range(block):
                    start = time.perf_counter()
                    sessions[f].run(None, feed)
                    runs[f].append(time.perf_counter() - start)
            if round_index == 0:
                best = min(statistics.median(runs[f]) for f in alive)
                alive = [f for f in alive if statistics.median(runs[f]) <= DROP_FACTOR * best]
        for f in candidates:
            timings[f].append(1000 * statistics.median(runs[f]) if f in alive else float("inf"))
    return timings


def plan_from_timings(timings: dict[str, list[float]], batch_sizes: Sequence[int]) -> LayerPlan:
    """Segments of batch sizes with the fastest formulation; batch ``b`` follows the first measured size ``>= b``."""
    chosen: list[str] = []
    for k in range(len(batch_sizes)):
        best = min(timings, key=lambda f: timings[f][k])
        if chosen and timings[chosen[-1]][k] <= (1 + KEEP_MARGIN) * timings[best][k]:
            best = chosen[-1]
        chosen.append(best)
    segments = []
    for k, formulation in enumerate(chosen):
        if k + 1 < len(chosen) and chosen[k + 1] == formulation:
            continue
        segments.append(Segment(batch_sizes[k], formulation))
    segments[-1] = Segment(None, segments[-1].formulation)
    return tuple(segments)


def machine() -> str:
    import onnxruntime

    name, flags = platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    units = [f for f in ("amx_int8", "avx512_vnni", "avx_vnni", "avx512f", "avx2") if f in flags]
    return f"{name} ({', '.join(units) or 'no SIMD flags read'}), onnxruntime {onnxruntime.__version__}"


@dataclass
class MeasuredPlan:
    plan: list[LayerPlan]
    timings: list[dict[str, list[float]]]
    batch_sizes: tuple[int, ...]
    threads: int

    def metadata(self) -> dict[str, str]:
        return {
            "synapse_timings": json.dumps({"batch_sizes": list(self.batch_sizes), "threads": self.threads,
                                           "ms_per_run": [{f: [round(v, 4) if np.isfinite(v) else None for v in ms]
                                                           for f, ms in layer.items()} for layer in self.timings]}),
            "synapse_plan_measured_on": machine(),
        }


def measure_plan(network: FrozenNetwork, batch_sizes: Sequence[int] = BATCH_SIZES, threads: int = 2, rounds: int = 3,
                 spike_formulations: Sequence[str] | None = None) -> MeasuredPlan:
    """Times every layer in every candidate formulation (spike-fed layers: ``spike_formulations``) and plans."""
    steps = FeatureConfig.from_dict(network.feature_config).num_frames  # the windows the service scores
    plan, timings = [], []
    for index, layer in enumerate(network.layers):
        first = index == 0
        candidates = [f for f in MEASURED if f not in SPIKES_ONLY] if first else list(spike_formulations or MEASURED)
        layer_timings = time_layer(layer, first, candidates, batch_sizes, steps, threads, rounds)
        timings.append(layer_timings)
        plan.append(plan_from_timings(layer_timings, batch_sizes))
    return MeasuredPlan(plan, timings, tuple(batch_sizes), threads)
