"""Inference cost of the delay SNN in its forms, timed in one run on the same inputs, with a per-op breakdown.

    python -m benchmarks.inference [--checkpoint artifacts/kws10/model.pt] [--runs 50] [--threads 2] [--json F]

Forms, per network and batch size (1 and 16):
  pytorch-dcls   the training-time form: DCLS kernels built from the positions + dense Conv1d (PyTorch)
  reference      the graph exported before issue 14, re-exported here: Conv for the input layer, one masked
                 MatMul per integer delay on shifted spikes for the others, a 5-op Scan per layer (readout too)
  exported       what kws-export writes: lean neurons (3-op Scan, readout as one Toeplitz MatMul) and the
                 synapse plan measured in this run on this machine (export.planner, per layer and batch size)
  lean-<f>       lean neurons with formulation <f> on every layer (shift, conv, unfold, int24): the plan's parts
  int8           opt-in: the exported plan's first layer, int8 weights on the spike-fed layers (approximate)
  fc             the same layer sizes without delays: the floor
Networks: the shipped kws10 checkpoint (validation clips if the data is present), and the paper's GSC size
(140 mels → 3 x 512 LIF → 35, max delay 31, 101 steps, random positions) with batch-norm shifts set so hidden
layers fire at a trained network's rate (~5-9 %).
Prints median ms per clip (the ONNX forms take turns in blocks of runs), exported / reference, max |Δ score|
of every ONNX form against the PyTorch discretised network, and onnxruntime's profile of the reference and
the exported graph: time per op type (a profiled run is slower, each node, also inside a Scan, is logged).
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from export.freeze import FrozenNetwork, freeze
from export.onnx_graph import Segment, build_onnx
from export.planner import measure_plan
from model.checkpoint import LoadedCheckpoint, load_checkpoint
from model.features import FeatureConfig
from model.network import DelaySNN, ModelConfig, class_scores

BATCHES = (1, 16)
LEAN_FORMS = ("shift", "conv", "unfold", "int24")
PROFILED = ("reference", "exported")


def paper_gsc_network(hidden_bias: float) -> LoadedCheckpoint:
    config = ModelConfig(input_size=140, hidden_sizes=(512, 512, 512), num_classes=35, max_delay=31)
    torch.manual_seed(0)
    model = DelaySNN(config)
    model.set_sigma(0.23)
    calibration = torch.randn(16, 140, 101) * 2 - 6
    with torch.no_grad():
        for layer in model.hidden:
            layer.norm.bias.fill_(hidden_bias)  # lowers firing to a trained network's sparse rate
            layer.norm.momentum = None  # cumulative statistics over the calibration passes
        model.train()
        for _ in range(3):
            model(calibration)
    model.eval()
    return LoadedCheckpoint(model=model, labels=[str(i) for i in range(35)], model_config=config,
                            feature_config=FeatureConfig(n_mels=140), name="paper-gsc-size", training={},
                            metrics={}, resume=None, raw={})


def graphs(network: FrozenNetwork, threads: int, plan_batches: tuple[int, ...]) -> tuple[dict, dict]:
    """Every ONNX form of the network, and the measured plan's metadata."""
    measured = measure_plan(network, batch_sizes=plan_batches, threads=threads)
    models = {"reference": build_onnx(network, formulation="shift", neurons="reference"),
              "exported": build_onnx(network, formulation=measured.plan)}
    for form in LEAN_FORMS:
        models[f"lean-{form}"] = build_onnx(network, formulation=form)
    models["int8"] = build_onnx(network, formulation=[measured.plan[0]] + [(Segment(None, "int8"),)] * (len(network.layers) - 1))
    models["fc"] = build_onnx(network, formulation="fc")
    return models, {"plan": [[(s.batch_max, s.formulation) for s in layer] for layer in measured.plan],
                    "plan_ms_per_run": measured.timings, "plan_batch_sizes": list(plan_batches)}


def session_for(model, threads: int, folder: Path, name: str) -> tuple[onnxruntime.InferenceSession, dict]:
    path = folder / f"{name}.onnx"
    path.write_bytes(model.SerializeToString())
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    start = time.perf_counter()
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session, {"bytes": path.stat().st_size, "load_ms": 1000 * (time.perf_counter() - start)}


def inputs_for(checkpoint: LoadedCheckpoint, batch: int, data_root: Path | None) -> np.ndarray:
    steps = checkpoint.feature_config.num_frames
    if data_root is not None and checkpoint.name == "kws10":
        from training.config import DataConfig
        from training.datasets import load_dataset

        clips = load_dataset(DataConfig(task="kws10", root=str(data_root), limit_per_class=8), checkpoint.feature_config,
                             training=False).validation
        return clips.batch_inputs(np.arange(batch) % len(clips))
    rng = np.random.default_rng(0)
    return (rng.standard_normal((batch, checkpoint.model_config.input_size, steps)) * 2 - 6).astype(np.float32)


def round_robin_ms(sessions: dict, features: np.ndarray, runs: int, rounds: int = 5) -> dict[str, float]:
    """Median ms per run of every session, the sessions taking turns in blocks of runs (so drift and background
    load hit them alike), each block after two warm-up runs: a session's intra-op threads keep spinning a
    while after its run and would slow whichever session runs next."""
    feed = {"features": features}
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, session in sessions.items():
            for _ in range(2):
                session.run(None, feed)
            for _ in range(max(2, runs // rounds)):
                start = time.perf_counter()
                session.run(None, feed)
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def median_ms(run, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def op_profile(model, features: np.ndarray, threads: int, folder: Path, name: str, runs: int) -> dict:
    """onnxruntime's profiler over ``runs`` runs: ms per run by op type of the nodes of the optimised graph
    (a Scan or an If includes its body), and the profiled run's length (the profiler's own cost included)."""
    import onnx

    path = folder / f"{name}.onnx"
    path.write_bytes(model.SerializeToString())
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / f"profile-{name}")
    options.optimized_model_filepath = str(folder / f"{name}-optimised.onnx")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    warmup = 5
    for _ in range(warmup + runs):
        session.run(None, {"features": features})
    events = json.loads(Path(session.end_profiling()).read_text())
    nodes: dict[str, bool] = {}  # name -> inside an If branch (Scan bodies are left inside their Scan)

    def collect(graph, in_branch: bool) -> None:
        for node in graph.node:
            nodes[node.name] = in_branch
            if node.op_type == "If":
                for attribute in node.attribute:
                    collect(attribute.g, True)

    collect(onnx.load(options.optimized_model_filepath).graph, False)
    run_events = [e for e in events if e.get("name") == "model_run"][warmup:]
    by_op: dict[str, float] = collections.defaultdict(float)
    for event in events:
        name = event.get("name", "")[: -len("_kernel_time")]
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= run_events[0]["ts"] \
                and name in nodes:
            ms = event["dur"] / 1000 / len(run_events)
            by_op[event["args"]["op_name"]] += ms
            if nodes[name]:
                by_op["If"] -= ms  # the If's own time: its branch's nodes are counted by their op
    return {"profiled_run_ms": statistics.median(e["dur"] / 1000 for e in run_events),
            "ms_by_op": {op: round(ms, 4) for op, ms in sorted(by_op.items(), key=lambda kv: -kv[1])}}


def benchmark(checkpoint: LoadedCheckpoint, runs: int, threads: int, data_root: Path | None, folder: Path,
              plan_batches: tuple[int, ...]) -> tuple[list[dict], dict]:
    torch.set_num_threads(threads)
    network = freeze(checkpoint)
    models, plan = graphs(network, threads, plan_batches)
    sessions, info = {}, {}
    for name, model in models.items():
        sessions[name], info[name] = session_for(model, threads, folder, f"{checkpoint.name}-{name}")
    rows, profiles = [], {}
    for batch in BATCHES:
        features = inputs_for(checkpoint, batch, data_root)
        tensor = torch.from_numpy(features)
        row = {"network": checkpoint.name, "batch": batch}
        with torch.no_grad():
            output = checkpoint.model(tensor, discrete_delays=True)
            discretised = class_scores(output.potentials).numpy()
            row["spikes_per_layer_per_clip"] = [round(float(s.sum()) / batch, 1) for s in output.hidden_spikes]
            row["pytorch-dcls"] = median_ms(lambda: checkpoint.model(tensor), max(5, runs // (4 if batch > 1 else 1))) / batch
        for name, session in sessions.items():
            row[f"max_delta_{name}"] = float(np.abs(session.run(None, {"features": features})[0] - discretised).max())
        for name, ms in round_robin_ms(sessions, features, max(10, runs // (2 if batch > 1 else 1))).items():
            row[name] = ms / batch
        row["exported_over_reference"] = row["exported"] / row["reference"]
        rows.append(row)
        for name in PROFILED:
            profiles[f"{name}@{batch}"] = op_profile(models[name], features, threads, folder,
                                                     f"{checkpoint.name}-{name}-profiled-{batch}", max(10, runs // 5))
    summary = {"network": checkpoint.name, **plan, "profiles": profiles,
               "bytes": {name: i["bytes"] for name, i in info.items()},
               "load_ms": {name: round(i["load_ms"], 1) for name, i in info.items()}}
    return rows, summary


def print_report(rows: list[dict], summaries: list[dict]) -> None:
    forms = ["pytorch-dcls", "reference", "exported", *(f"lean-{f}" for f in LEAN_FORMS), "int8", "fc"]
    header = f"{'network':<16}{'batch':>6}" + "".join(f"{f:>14}" for f in forms) + f"{'exported/ref':>14}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['network']:<16}{r['batch']:>6}" + "".join(f"{r[f]:>14.3f}" for f in forms)
              + f"{r['exported_over_reference']:>14.3f}")
    print("\n(ms per clip, median; the ONNX forms took turns in blocks of runs, in one run)")
    for r in rows:
        deltas = ", ".join(f"{f} {r[f'max_delta_{f}']:.1e}" for f in forms[1:])
        print(f"{r['network']} batch {r['batch']}: max |Δ score| vs PyTorch discretised: {deltas}; "
              f"spikes per hidden layer per clip {r['spikes_per_layer_per_clip']}")
    for s in summaries:
        print(f"\n{s['network']}: plan (batch_max, formulation) per layer, measured at batch sizes {s['plan_batch_sizes']}: "
              f"{s['plan']}")
        print(f"  exported ONNX {s['bytes']['exported'] / 1e6:.2f} MB (reference {s['bytes']['reference'] / 1e6:.2f} MB), "
              f"session load {s['load_ms']['exported']:.0f} ms (reference {s['load_ms']['reference']:.0f} ms)")
        for key, profile in s["profiles"].items():
            ops = ", ".join(f"{op} {ms:.3f}" for op, ms in list(profile["ms_by_op"].items())[:8])
            print(f"  profile {key}: profiled run {profile['profiled_run_ms']:.2f} ms; ms per run by op: {ops}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("artifacts/kws10/model.pt"))
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data/gsc"))
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hidden-bias", type=float, default=-0.4, help="BN shift of the paper-size network's hidden layers")
    parser.add_argument("--skip-paper-size", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the rows and summaries as JSON")
    args = parser.parse_args(argv)

    data_root = args.data_root if args.data_root.exists() else None
    networks = [] if args.skip_paper_size else [(paper_gsc_network(args.hidden_bias), BATCHES)]
    if args.checkpoint.exists():
        networks.insert(0, (load_checkpoint(args.checkpoint), (1, 2, 4, 8, 16)))  # kws-export's default sizes
    rows, summaries = [], []
    with tempfile.TemporaryDirectory() as folder:
        for checkpoint, plan_batches in networks:
            network_rows, summary = benchmark(checkpoint, args.runs, args.threads, data_root, Path(folder), plan_batches)
            rows += network_rows
            summaries.append(summary)
    print_report(rows, summaries)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summaries": summaries}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
