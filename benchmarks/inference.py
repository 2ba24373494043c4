"""Inference cost of the delay SNN in its forms, timed in one run on the same inputs.

    python -m benchmarks.inference [--checkpoint artifacts/kws10/model.pt] [--runs 50] [--threads 2]

Forms, per network and batch size (1 and 16):
  (a) pytorch-dcls   the training-time form: DCLS kernels built from the positions + dense Conv1d (PyTorch)
  (b) onnx-shift     the exported graph: Conv for the input layer, one masked MatMul per integer delay on
                     shifted spike trains for the others
      onnx-conv      alternative: dense Conv1d with the rounded kernel in every layer
      onnx-event     alternative: event-driven, NonZero over the spikes + ScatterElements(add) of each fan-out
  (c) onnx-fc        the same layer sizes without delays: the floor
Networks: the shipped kws10 checkpoint (real validation-like inputs if the data is present), and the
paper's GSC size (140 mels → 3 x 512 LIF → 35, max delay 31, 101 steps, random positions) with batch-norm
shifts set so hidden layers fire at a trained network's rate (~5-9 %).
Prints a table of median ms per clip, ratios, ONNX size, session load time and spikes per layer per clip.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from export.freeze import FrozenNetwork, freeze
from export.onnx_graph import build_onnx
from model.checkpoint import LoadedCheckpoint, load_checkpoint
from model.features import FeatureConfig
from model.network import DelaySNN, ModelConfig, class_scores

ONNX_FORMS = ("event", "conv", "shift", "fc")


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


def median_ms(run, repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def session_for(network: FrozenNetwork, form: str, threads: int, folder: Path) -> tuple[onnxruntime.InferenceSession, dict]:
    path = folder / f"{form}.onnx"
    path.write_bytes(build_onnx(network, formulation=form).SerializeToString())
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

        clips = load_dataset(DataConfig(task="kws10", root=str(data_root), limit_per_class=8), checkpoint.feature_config).validation
        return clips.batch_inputs(np.arange(len(clips)) % len(clips))[:batch] if len(clips) >= batch else \
            clips.batch_inputs(np.arange(batch) % len(clips))
    rng = np.random.default_rng(0)
    return (rng.standard_normal((batch, checkpoint.model_config.input_size, steps)) * 2 - 6).astype(np.float32)


def benchmark(checkpoint: LoadedCheckpoint, runs: int, threads: int, data_root: Path | None, folder: Path) -> list[dict]:
    torch.set_num_threads(threads)
    network = freeze(checkpoint)
    sessions = {form: session_for(network, form, threads, folder) for form in ONNX_FORMS}
    rows = []
    for batch in (1, 16):
        features = inputs_for(checkpoint, batch, data_root)
        tensor = torch.from_numpy(features)
        row = {"network": checkpoint.name, "batch": batch}
        with torch.no_grad():
            reference = class_scores(checkpoint.model(tensor).potentials).numpy()
            row["pytorch-dcls"] = median_ms(lambda: checkpoint.model(tensor), max(5, runs // (4 if batch > 1 else 1))) / batch
        for form, (session, info) in sessions.items():
            scores, counts = session.run(None, {"features": features})
            if form == "event":
                row["spikes_per_layer_per_clip"] = counts.mean(axis=0).round(1).tolist()
                row["max_delta_vs_continuous"] = float(np.abs(scores - reference).max())
            row[f"onnx-{form}"] = median_ms(lambda: session.run(None, {"features": features}), runs) / batch
            row[f"{form}_bytes"], row[f"{form}_load_ms"] = info["bytes"], info["load_ms"]
        rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    header = f"{'network':<16}{'batch':>6}{'(a) torch DCLS':>16}{'(b) onnx shift':>16}{'onnx conv':>11}{'onnx event':>12}" \
             f"{'(c) onnx FC':>13}{'a/b':>8}{'b/c':>7}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['network']:<16}{r['batch']:>6}{r['pytorch-dcls']:>16.2f}{r['onnx-shift']:>16.2f}{r['onnx-conv']:>11.2f}"
              f"{r['onnx-event']:>12.2f}{r['onnx-fc']:>13.2f}{r['pytorch-dcls'] / r['onnx-shift']:>8.1f}"
              f"{r['onnx-shift'] / r['onnx-fc']:>7.2f}")
    print("\n(ms per clip, median; (b) is the exported default; a/b = speed-up of the exported graph over the "
          "training-time form; b/c = cost of delays over the no-delay floor)")
    for r in rows:
        if r["batch"] == 1:
            print(f"{r['network']}: exported ONNX {r['shift_bytes'] / 1e6:.2f} MB (event form {r['event_bytes'] / 1e6:.2f} MB), "
                  f"session load {r['shift_load_ms']:.0f} ms, spikes per hidden layer per clip {r['spikes_per_layer_per_clip']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("artifacts/kws10/model.pt"))
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data/gsc"))
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hidden-bias", type=float, default=-0.4, help="BN shift of the paper-size network's hidden layers")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    import tempfile

    data_root = args.data_root if args.data_root.exists() else None
    networks = [paper_gsc_network(args.hidden_bias)]
    if args.checkpoint.exists():
        networks.insert(0, load_checkpoint(args.checkpoint))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for checkpoint in networks:
            rows += benchmark(checkpoint, args.runs, args.threads, data_root, Path(folder))
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
