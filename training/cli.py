"""``kws-train``: train a delay SNN from a TOML config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.config import load_config

EXAMPLES = """\
examples:
  kws-train --config configs/kws10.toml                       # the shipped default model
  kws-train --config configs/fsdd.toml --set model.delay_mode=random --set train.seed=1
  kws-train --config configs/kws10.toml --set train.epochs=2 --set data.limit_per_class=50 --out runs/smoke
  kws-train --config configs/kws10.toml --resume              # continue runs/kws10 from last.pt
  kws-train --config configs/kws10.toml --init-from runs/kws10/best.pt --set train.epochs=8 \\
            --set model.sigma_init=0.23 --set train.lr_weights=2e-4 --out runs/kws10-finetune   # fine-tune
  torchrun --nproc_per_node 2 -m training.cli --config configs/kws10.toml   # DDP (gloo on CPU)

Every run folder gets best.pt (self-describing checkpoint of the best epoch on
validation, rounded delays), last.pt (for --resume), metrics.csv/json, summary.json
and plots/*.png. Keys for --set are the fields of the [model], [features], [data],
[augment] and [train] sections (training/config.py).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kws-train",
        description="Train a spiking neural network with learnable synaptic delays (DCLS) on speech or spikes.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="TOML experiment file (configs/*.toml); defaults if omitted")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value, e.g. train.epochs=10 (repeatable)")
    parser.add_argument("--out", type=Path, help="run folder (default: runs/<name>)")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    parser.add_argument("--init-from", type=Path, metavar="CHECKPOINT",
                        help="start from this checkpoint's weights and delays (fine-tuning; same architecture)")
    parser.add_argument("--stop-after", type=int, metavar="N",
                        help="stop after N epochs of this invocation (time-boxed jobs); continue later with --resume")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
    except (ValueError, TypeError, OSError) as error:
        print(f"kws-train: bad configuration: {error}", file=sys.stderr)
        return 2
    from training.datasets import DatasetMissingError
    from training.resume import NotResumableError
    from training.trainer import fit
    from training.widening import IncompatibleInitError

    out = args.out or Path("runs") / config.name
    try:
        fit(config, out, resume=args.resume, progress=not args.no_progress and sys.stderr.isatty(),
            stop_after=args.stop_after, init_from=args.init_from)
    except (DatasetMissingError, NotResumableError, IncompatibleInitError) as error:
        print(f"kws-train: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
