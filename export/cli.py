"""``kws-export``: checkpoint → fixed-delay graph → ONNX file with its metadata; ``kws-parity`` checks it."""

from __future__ import annotations

import argparse
from dataclasses import replace
import sys
import time
from pathlib import Path

import numpy as np


def export_checkpoint(checkpoint_path: Path, output: Path, version: str | None = None, formulation: str = "shift") -> dict:
    import onnx

    from export.freeze import freeze
    from export.onnx_graph import build_onnx
    from model.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(checkpoint_path)
    network = freeze(checkpoint)
    metadata = {"model_version": version or checkpoint.training.get("environment", {}).get("git_commit", "")[:12] or "dev",
                "source_checkpoint": checkpoint_path.name, "formulation": formulation}
    model = build_onnx(network, metadata, formulation=formulation)
    output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, output)
    return {"onnx": str(output), "bytes": output.stat().st_size, "parameters": network.parameter_count(),
            "synapses": sum(layer.synapse_count for layer in network.layers), "labels": network.labels}


def export_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kws-export",
        description="Freeze a trained delay-SNN checkpoint (rounded delays, batch norm folded) and write it as ONNX.",
        epilog="example: kws-export artifacts/kws10/model.pt -o service/models/kws10.onnx",
    )
    parser.add_argument("checkpoint", type=Path, help="checkpoint written by kws-train (best.pt)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="ONNX file to write")
    parser.add_argument("--version", help="model version stored in the metadata (default: the training commit)")
    parser.add_argument("--formulation", choices=("shift", "conv", "event"), default="shift",
                        help="how spike-fed layers apply their delays (all exact; speed differs, see "
                             "python -m benchmarks.inference): shift = one masked MatMul per integer delay "
                             "(default, fastest here), conv = dense integer-delay Conv, event = per-spike scatter")
    args = parser.parse_args(argv)
    try:
        report = export_checkpoint(args.checkpoint, args.output, args.version, args.formulation)
    except (OSError, ValueError) as error:
        print(f"kws-export: {error}", file=sys.stderr)
        return 2
    print(f"wrote {report['onnx']} ({report['bytes'] / 1e6:.2f} MB, {report['synapses']:,} synapses, "
          f"{len(report['labels'])} labels)")
    return 0


def parity(checkpoint_path: Path, onnx_path: Path, data_root: Path | None, batch_size: int = 64) -> dict:
    """Runs the ONNX graph and the PyTorch discretised network on every validation clip of the checkpoint's task."""
    import onnxruntime
    import torch

    from model.checkpoint import load_checkpoint
    from model.network import class_scores
    from training.config import ExperimentConfig
    from training.datasets import load_dataset

    checkpoint = load_checkpoint(checkpoint_path)
    config = ExperimentConfig.from_dict(checkpoint.training["config"])
    data = replace(config.data, test_fraction=0.0)  # every validation speaker
    if data_root is not None:
        data = replace(data, root=str(data_root))
    clips = load_dataset(data, config.features, seed=config.train.seed).validation
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    same_top1 = 0
    max_delta = 0.0
    flipped = []
    correct_onnx = correct_torch = 0
    for start in range(0, len(clips), batch_size):
        indices = np.arange(start, min(start + batch_size, len(clips)))
        features = clips.batch_inputs(indices)
        with torch.no_grad():
            output = checkpoint.model(torch.from_numpy(features), discrete_delays=True)
        reference = class_scores(output.potentials).numpy()
        reference_counts = torch.stack([s.sum(dim=(0, 2)) for s in output.hidden_spikes], dim=1).numpy()
        scores, counts = session.run(None, {"features": features})
        delta = np.abs(scores - reference).max(axis=1)
        max_delta = max(max_delta, float(delta.max()))
        agree = scores.argmax(1) == reference.argmax(1)
        same_top1 += int(agree.sum())
        targets = clips.labels[indices]
        correct_onnx += int((scores.argmax(1) == targets).sum())
        correct_torch += int((reference.argmax(1) == targets).sum())
        for row, (i, d) in enumerate(zip(indices, delta)):
            if d > 1e-4:  # explained by spikes that differ: a potential within float rounding of the threshold
                spike_delta = (counts[row] - reference_counts[row]).astype(int).tolist()
                flipped.append(f"{clips.names[i]}: |delta score| {d:.1e}, spikes onnx - pytorch per layer {spike_delta}")
    return {"clips": len(clips), "same_top1": same_top1, "same_top1_fraction": same_top1 / len(clips),
            "max_abs_score_delta": max_delta, "clips_over_1e-4": flipped,
            "accuracy_onnx": correct_onnx / len(clips), "accuracy_pytorch": correct_torch / len(clips)}


def parity_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kws-parity",
        description="Compare the ONNX graph with the PyTorch discretised network on every validation clip.",
        epilog="example: kws-parity artifacts/kws10/model.pt service/models/kws10.onnx",
    )
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("onnx", type=Path)
    parser.add_argument("--data-root", type=Path, help="dataset folder, if not where the checkpoint was trained")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    report = parity(args.checkpoint, args.onnx, args.data_root)
    print(f"clips {report['clips']}: same top-1 on {report['same_top1']} ({100 * report['same_top1_fraction']:.2f} %), "
          f"max |delta score| {report['max_abs_score_delta']:.2e}, "
          f"{len(report['clips_over_1e-4'])} clips above 1e-4; accuracy onnx {report['accuracy_onnx']:.4f} / "
          f"pytorch {report['accuracy_pytorch']:.4f}  ({time.perf_counter() - started:.0f} s)")
    for name in report["clips_over_1e-4"][:20]:
        print(f"  above 1e-4: {name}")
    return 0 if report["same_top1"] == report["clips"] else 1


if __name__ == "__main__":
    sys.exit(export_main())
