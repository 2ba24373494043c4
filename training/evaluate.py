"""``kws-evaluate``: accuracy of a checkpoint on a split, with rounded (shipped) and continuous delays."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kws-evaluate",
        description="Evaluate a checkpoint on its task's validation or test split (the data config stored in "
                    "the checkpoint, with --set overrides): accuracy with rounded and continuous delays, per class.",
        epilog="example: kws-evaluate artifacts/kws10/model.pt --split validation --set data.test_fraction=0.0",
    )
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--split", choices=("validation", "test"), default="validation")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="data.KEY=VALUE",
                        help="override the stored data config, e.g. data.root=... or data.test_fraction=0.0")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)

    import torch

    from model.checkpoint import load_checkpoint
    from training.config import ExperimentConfig, parse_override
    from training.datasets import load_dataset
    from training.evaluation import split_report

    checkpoint = load_checkpoint(args.checkpoint)
    config = ExperimentConfig.from_dict(checkpoint.training["config"])
    data = config.data
    for text in args.overrides:
        keys, value = parse_override(text)
        if keys[0] != "data" or len(keys) != 2:
            print(f"kws-evaluate: only data.KEY overrides are accepted, got {text!r}", file=sys.stderr)
            return 2
        data = replace(data, **{keys[1]: value})
    torch.set_num_threads(config.train.threads)
    dataset = load_dataset(data, checkpoint.feature_config, seed=config.train.seed, training=False)
    clips = dataset.validation if args.split == "validation" else dataset.test
    if clips is None:
        print(f"kws-evaluate: the {args.split} split is empty for this data config", file=sys.stderr)
        return 2
    device = torch.device("cpu")
    figures, rounded = split_report(checkpoint.model, clips, checkpoint.labels, 256, device, continuous=True)
    report = {"checkpoint": str(args.checkpoint), "split": args.split, **figures,
              "confusion": rounded.confusion(len(checkpoint.labels)).tolist(), "labels": checkpoint.labels}
    print(f"{args.split}: {len(clips)} clips, accuracy {100 * figures['accuracy']:.2f} % with rounded delays "
          f"({100 * figures['accuracy_continuous']:.2f} % continuous)")
    for label, accuracy in figures["per_class_accuracy"].items():
        print(f"  {label:<10} {100 * accuracy:6.2f} %")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
