"""``kws-robustness``: the figures that predict how the model does on input it has not seen."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

EXAMPLES = """\
examples:
  kws-robustness                                       # the shipped model, configs/kws10.toml's data
  kws-robustness runs/kws10/model.onnx --json runs/kws10/robustness.json
  kws-robustness --no-thresholds                       # the top label, ignoring the model's keyword thresholds
  kws-robustness --every 4                             # every 4th clip: a quick look

Every clip is answered as POST /v1/recognize answers it (windows, ONNX graph, keyword thresholds of the
model's metadata). Bars of issue 11 (printed next to each figure): validation accuracy >= 93 %, open-set
false accepts <= 10 %, worst level-sweep drop <= 3 points, noise-only clips and other non-speech >= 97 %
not answered as a keyword at every level, FSDD digits accepted <= 5 %.
"""

BARS = {
    "validation accuracy": (">=", 0.93), "open-set false accepts": ("<=", 0.10),
    "worst level-sweep drop (points)": ("<=", 3.0), "noise-only not a keyword (worst level)": (">=", 0.97),
    "other non-speech not a keyword (worst level)": (">=", 0.97), "FSDD digits accepted": ("<=", 0.05),
}


def headline(results: dict) -> dict[str, float]:
    figures = {
        "validation accuracy": results["validation"]["accuracy"],
        "open-set false accepts": results["open_set"]["false_accepts"],
        "worst level-sweep drop (points)": results["levels"]["worst_drop_points"],
        "noise-only not a keyword (worst level)": results["noise"]["worst_level"],
        "other non-speech not a keyword (worst level)": results["sounds"]["worst_level"],
    }
    if "fsdd" in results:
        figures["FSDD digits accepted"] = results["fsdd"]["false_accepts"]
    if "synthetic" in results:
        figures["synthetic keywords recall (unseen voices)"] = results["synthetic"]["keyword_recall"]
        figures["synthetic words accepted (unseen words)"] = results["synthetic"]["word_false_accepts"]
    figures["GSC other words accepted"] = results["other_words"]["false_accepts"]
    return figures


def meets(name: str, value: float) -> str:
    if name not in BARS:
        return ""
    op, bar = BARS[name]
    ok = value >= bar if op == ">=" else value <= bar
    return f"{'yes' if ok else 'NO '} ({op} {bar:g})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kws-robustness", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", type=Path, help="ONNX file (default: the shipped service/models/kws10.onnx)")
    parser.add_argument("--config", type=Path, default=Path("configs/kws10.toml"),
                        help="experiment whose data folders and held-out words apply (default %(default)s)")
    parser.add_argument("--fsdd", type=Path, help="FSDD folder (default: next to the config's GSC folder)")
    parser.add_argument("--every", type=int, default=1, help="use every Nth clip of each set (default %(default)s)")
    parser.add_argument("--no-thresholds", action="store_true", help="answer the top label (ignore the keyword thresholds)")
    parser.add_argument("--hop", type=float, default=0.25, help="window hop over clips longer than 1 s (the service's)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from threadpoolctl import threadpool_limits

    from evaluation.suite import Data, Scorer, run_suite
    from service.inference import KeywordModel, ModelLoadError
    from service.settings import SHIPPED_MODEL
    from training.config import load_config

    try:
        config = load_config(args.config)
    except (ValueError, TypeError, OSError) as error:
        print(f"kws-robustness: bad configuration: {error}", file=sys.stderr)
        return 2
    gsc = Path(config.data.root)
    if not (gsc / "manifest.csv").exists():
        print(f"kws-robustness: no Speech Commands manifest in {gsc} (set data.root in {args.config})", file=sys.stderr)
        return 2
    fsdd = args.fsdd or gsc.parent / "fsdd"
    synth = Path(config.data.synth_root) if config.data.synth_root else None
    data = Data(gsc, fsdd if fsdd.is_dir() else None, synth, config.data.held_out_words, config.data.noise_holdout,
                config.data.test_fraction or 1.0)
    try:
        model = KeywordModel.load(args.model or SHIPPED_MODEL)
    except ModelLoadError as error:
        print(f"kws-robustness: {error}", file=sys.stderr)
        return 2
    threadpool_limits(limits=1, user_api="blas")
    started = time.perf_counter()
    scorer = Scorer(model, args.hop, thresholds=not args.no_thresholds)
    results = run_suite(scorer, data, every=args.every, progress=lambda name: print(f"  {name} ...", file=sys.stderr))
    results["model"] = {"path": str(args.model or SHIPPED_MODEL), "name": model.name, "version": model.version,
                        "thresholds": {} if args.no_thresholds else dict(scorer.rule.thresholds)}
    results["command"] = " ".join(["kws-robustness", *(sys.argv[1:] if argv is None else argv)])
    results["seconds"] = round(time.perf_counter() - started, 1)
    figures = headline(results)
    results["headline"] = figures
    print(f"{'figure':<48}{'value':>10}   meets the bar")
    for name, value in figures.items():
        shown = f"{value:.2f}" if "points" in name else f"{100 * value:.1f} %"
        print(f"{name:<48}{shown:>10}   {meets(name, value)}")
    print(f"level sweep accuracy: " + ", ".join(f"{g} dB {100 * v['accuracy']:.1f}" for g, v in results['levels']['by_gain_db'].items()))
    print(f"noise-only not a keyword by level (dBFS): {results['noise']['by_level']}")
    print(f"non-speech not a keyword by level (dBFS): {results['sounds']['by_level']}")
    print(f"open set per word: {results['open_set']['per_word']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.json}")
    print(f"({results['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
