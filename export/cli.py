"""``kws-export``: checkpoint → fixed-delay graph → ONNX file with its metadata; ``kws-parity`` checks it."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
import sys
import time
from pathlib import Path

import numpy as np


FORCED = ("shift", "conv", "unfold", "stacked", "int24", "event")


def export_checkpoint(checkpoint_path: Path, output: Path, version: str | None = None, formulation: str = "auto",
                      int8: bool = False, calibration_temperature: float | None = None, threads: int = 2,
                      calibrate_for: float | None = None) -> dict:
    """Writes the ONNX file. ``formulation``: ``auto`` times every layer's candidates here (``export.planner``),
    a name forces it on every layer that can take it; ``int8`` puts int8 weights on the spike-fed layers.
    ``calibrate_for`` (a false-accept rate per keyword) fits the score temperature and chooses the keyword
    thresholds on the checkpoint's validation data (export/calibration.py) instead of a given temperature."""
    import onnx

    from export.freeze import freeze
    from export.onnx_graph import Segment, build_onnx, uniform_plan
    from export.planner import measure_plan
    from model.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(checkpoint_path)
    network = freeze(checkpoint)
    metadata = {"model_version": version or checkpoint.training.get("environment", {}).get("git_commit", "")[:12] or "dev",
                "source_checkpoint": checkpoint_path.name, "formulation": formulation + ("+int8" if int8 else ""),
                "weights": "int8 on spike-fed layers (approximate)" if int8 else "float32 (exact)"}
    if formulation == "auto":
        measured = measure_plan(network, threads=threads, spike_formulations=("int8",) if int8 else None)
        plan = measured.plan
        metadata.update(measured.metadata())
    else:
        plan = uniform_plan(network, formulation)
        if int8:
            plan = [plan[0]] + [(Segment(None, "int8"),) for _ in plan[1:]]
    calibration = None
    if calibrate_for is not None:
        from export.calibration import calibrate_network, calibration_metadata

        calibration = calibrate_network(checkpoint, build_onnx(network, metadata, formulation=plan), calibrate_for)
        calibration_temperature = calibration["temperature"]
        metadata |= calibration_metadata(calibration, network.labels)
    model = build_onnx(network, metadata, formulation=plan, calibration_temperature=calibration_temperature)
    output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, output)
    return {"onnx": str(output), "bytes": output.stat().st_size, "parameters": network.parameter_count(),
            "synapses": sum(layer.synapse_count for layer in network.layers), "labels": network.labels,
            "plan": [[(s.batch_max, s.formulation) for s in layer] for layer in plan], "calibration": calibration}


def describe_plan(plan: list) -> str:
    def layer(segments: list) -> str:
        if len(segments) == 1:
            return segments[0][1]
        return ", ".join(f"{f} up to batch {b}" if b is not None else f"{f} beyond" for b, f in segments)
    return "; ".join(f"layer {index}: {layer(segments)}" for index, segments in enumerate(plan))


def export_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kws-export",
        description="Freeze a trained delay-SNN checkpoint (rounded delays, batch norm folded) and write it as ONNX.",
        epilog="example: kws-export artifacts/kws10/model.pt -o service/models/kws10.onnx",
    )
    parser.add_argument("checkpoint", type=Path, help="checkpoint written by kws-train (best.pt)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="ONNX file to write")
    parser.add_argument("--version", help="model version stored in the metadata (default: the training commit)")
    parser.add_argument("--formulation", choices=("auto", *FORCED), default="auto",
                        help="how the layers apply their delays (all exact; see docs/export.md): auto (default) times "
                             "each layer's candidates on this machine at batch sizes 1-16 and keeps the fastest per "
                             "layer and batch size; a name forces it on every layer that can take it (int24 and "
                             "event need spikes: the first layer then uses conv)")
    parser.add_argument("--int8", action="store_true",
                        help="int8 weights on the spike-fed layers (MatMulInteger): approximate, opt-in; "
                             "check it with kws-parity CHECKPOINT INT8.onnx --against FLOAT.onnx")
    calibration = parser.add_mutually_exclusive_group()
    calibration.add_argument("--calibration-temperature", type=float,
                             help="scores = softmax(log(mean over time of softmax(potentials)) / T) (default: no transform)")
    calibration.add_argument("--calibrate", type=float, metavar="RATE", nargs="?", const=0.005,
                             help="fit the temperature T and choose per-keyword thresholds on the checkpoint's validation "
                                  "data so that at most RATE of the clips that are not keywords are accepted as each "
                                  "keyword (default RATE %(const)s); both go into the ONNX file (docs/export.md)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads while timing (as the service's)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        report = export_checkpoint(args.checkpoint, args.output, args.version, args.formulation, args.int8,
                                   args.calibration_temperature, args.threads, args.calibrate)
    except (OSError, ValueError) as error:
        print(f"kws-export: {error}", file=sys.stderr)
        return 2
    print(f"wrote {report['onnx']} ({report['bytes'] / 1e6:.2f} MB, {report['synapses']:,} synapses, "
          f"{len(report['labels'])} labels) in {time.perf_counter() - started:.0f} s; {describe_plan(report['plan'])}")
    if report["calibration"] is not None:
        from export.calibration import describe

        print(describe(report["calibration"]))
    return 0


def parity(checkpoint_path: Path, onnx_path: Path, data_root: Path | None, batch_size: int = 64,
           against: Path | None = None) -> dict:
    """Runs the ONNX graph on every validation clip of the checkpoint's task against a reference: the PyTorch
    discretised network, or (``against``) another ONNX graph, e.g. the float graph for an ``--int8`` export."""
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
    clips = load_dataset(data, config.features, seed=config.train.seed, training=False).validation
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    reference_session = onnxruntime.InferenceSession(str(against), providers=["CPUExecutionProvider"]) if against else None

    temperature = session.get_modelmeta().custom_metadata_map.get("calibration_temperature")

    def reference(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if reference_session is not None:
            return tuple(reference_session.run(None, {"features": features}))
        with torch.no_grad():
            output = checkpoint.model(torch.from_numpy(features), discrete_delays=True)
            scores = class_scores(output.potentials).double()
            if temperature is not None:  # the graph's score transform (export.onnx_graph.score_transform)
                scores = torch.softmax(torch.log(scores) / float(temperature), dim=1)
        return scores.numpy(), torch.stack([s.sum(dim=(0, 2)) for s in output.hidden_spikes], dim=1).numpy()

    same_top1 = 0
    max_delta = 0.0
    flipped = []
    correct_onnx = correct_reference = 0
    for start in range(0, len(clips), batch_size):
        indices = np.arange(start, min(start + batch_size, len(clips)))
        features = clips.batch_inputs(indices)
        expected, expected_counts = reference(features)
        scores, counts = session.run(None, {"features": features})
        delta = np.abs(scores - expected).max(axis=1)
        max_delta = max(max_delta, float(delta.max()))
        same_top1 += int((scores.argmax(1) == expected.argmax(1)).sum())
        targets = clips.labels[indices]
        correct_onnx += int((scores.argmax(1) == targets).sum())
        correct_reference += int((expected.argmax(1) == targets).sum())
        for row, (i, d) in enumerate(zip(indices, delta)):
            if d > 1e-4:  # explained by spikes that differ: a potential within float rounding of the threshold
                spike_delta = (counts[row] - expected_counts[row]).astype(int).tolist()
                flipped.append(f"{clips.names[i]}: |delta score| {d:.1e}, spikes onnx - reference per layer {spike_delta}")
    return {"clips": len(clips), "reference": str(against) if against else "pytorch", "same_top1": same_top1,
            "same_top1_fraction": same_top1 / len(clips), "max_abs_score_delta": max_delta, "clips_over_1e-4": flipped,
            "accuracy_onnx": correct_onnx / len(clips), "accuracy_reference": correct_reference / len(clips)}


def parity_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kws-parity",
        description="Compare the ONNX graph with the PyTorch discretised network (or another ONNX graph) on every "
                    "validation clip; exits 1 when fewer clips than --min-agreement have the same top-1.",
        epilog="examples: kws-parity artifacts/kws10/model.pt service/models/kws10.onnx;  "
               "kws-parity artifacts/kws10/model.pt kws10-int8.onnx --against service/models/kws10.onnx --min-agreement 0.99",
    )
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("onnx", type=Path)
    parser.add_argument("--against", type=Path, help="reference ONNX graph (default: the PyTorch discretised network)")
    parser.add_argument("--min-agreement", type=float, default=1.0, help="fraction of clips with the same top-1 (default 1)")
    parser.add_argument("--data-root", type=Path, help="dataset folder, if not where the checkpoint was trained")
    parser.add_argument("--json", type=Path, help="also write the report as JSON")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    report = parity(args.checkpoint, args.onnx, args.data_root, against=args.against)
    print(f"clips {report['clips']} against {report['reference']}: same top-1 on {report['same_top1']} "
          f"({100 * report['same_top1_fraction']:.2f} %), max |delta score| {report['max_abs_score_delta']:.2e}, "
          f"{len(report['clips_over_1e-4'])} clips above 1e-4; accuracy onnx {report['accuracy_onnx']:.4f} / "
          f"reference {report['accuracy_reference']:.4f}  ({time.perf_counter() - started:.0f} s)")
    for name in report["clips_over_1e-4"][:20]:
        print(f"  above 1e-4: {name}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0 if report["same_top1_fraction"] >= args.min_agreement else 1


if __name__ == "__main__":
    sys.exit(export_main())
