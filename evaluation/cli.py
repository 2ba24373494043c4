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
  kws-robustness --curve-plot stream_curve.png         # and draw the streaming operating curve

Every clip is answered as POST /v1/recognize answers it (windows, ONNX graph, keyword thresholds of the
model's metadata). Bars of issue 11 (printed next to each figure): validation accuracy >= 93 %, open-set
false accepts <= 10 %, worst level-sweep drop <= 3 points, noise-only clips and other non-speech >= 97 %
not answered as a keyword at every level, FSDD digits accepted <= 5 %, streaming <= 5 false alarms per hour
at keyword recall >= 0.85 (as served, and at the best common threshold of the operating curve).

  kws-stream-calibrate MODEL.onnx                      # per-keyword stream thresholds into the model's metadata
"""

def streaming_results(model, data, minutes: int, seed: int) -> dict:
    """The service's detector as configured (per-keyword thresholds of the model, the VAD as KWS_STREAM_VAD
    defaults), and what each of the two does: the other VAD setting, and one common threshold instead."""
    from dataclasses import replace

    from evaluation.stream_recordings import build_recordings, keyword_minutes_for
    from evaluation.streaming import false_alarms_at_recall, operating_curve, report, score_recordings, stream_config

    from service.settings import Settings

    config, vad = stream_config(model), Settings().stream_vad
    negative, keyword = build_recordings(data, model, "report", minutes, keyword_minutes_for(minutes), seed)
    served = score_recordings(model, config, negative, keyword, vad)
    other = score_recordings(model, config, negative, keyword, not vad)
    results = {"service": report(model, config, served), "without_vad" if vad else "with_vad": report(model, config, other)}
    if config.keyword_thresholds:
        results["common_threshold"] = report(model, replace(config, keyword_thresholds={}), served)
        results["thresholds"] = dict(config.keyword_thresholds)
    results["common_threshold_value"] = config.threshold
    without_vad = other if vad else served
    curve = operating_curve(model, config, without_vad)
    results["curve"] = {"vad": False, "points": curve,
                        "false_alarms_per_hour_at_recall": {str(r): false_alarms_at_recall(curve, r) for r in (0.5, 0.7, 0.85, 0.9)}}
    return results


BARS = {
    "validation accuracy": (">=", 0.93), "open-set false accepts": ("<=", 0.10),
    "open-set false accepts, mean over words": ("<=", 0.10),
    "worst level-sweep drop (points)": ("<=", 3.0), "noise-only not a keyword (worst level)": (">=", 0.97),
    "other non-speech not a keyword (worst level)": (">=", 0.97), "FSDD digits accepted": ("<=", 0.05),
    "streaming false alarms per hour": ("<=", 5.0), "streaming keyword recall": (">=", 0.85),
    "streaming false alarms per hour at recall 0.85 (common threshold)": ("<=", 5.0),
}


def headline(results: dict) -> dict[str, float]:
    figures = {
        "validation accuracy": results["validation"]["accuracy"],
        "open-set false accepts": results["open_set"]["false_accepts"],
        "open-set false accepts, mean over words": results["open_set"]["word_mean_false_accepts"],
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
    if "streaming" in results:
        shipped = results["streaming"]["service"]
        figures["streaming false alarms per hour"] = shipped["false_alarms_per_hour"]
        figures["streaming keyword recall"] = shipped["recall"]
        at_bar = results["streaming"]["curve"]["false_alarms_per_hour_at_recall"]["0.85"]
        if at_bar is not None:  # else no common threshold reaches that recall
            figures["streaming false alarms per hour at recall 0.85 (common threshold)"] = at_bar
        figures["streaming recall ceiling (lowest common threshold)"] = results["streaming"]["curve"]["points"][0]["recall"]
    return figures


def meets(name: str, value: float) -> str:
    if name not in BARS:
        return ""
    op, bar = BARS[name]
    ok = value >= bar if op == ">=" else value <= bar
    return f"{'yes' if ok else 'NO '} ({op} {bar:g})"


def _data(config_path: Path, fsdd: Path | None):
    """The evaluation's data folders from an experiment config, or exit status 2 with the reason printed."""
    from evaluation.suite import Data
    from training.config import load_config

    try:
        config = load_config(config_path)
    except (ValueError, TypeError, OSError) as error:
        print(f"bad configuration: {error}", file=sys.stderr)
        return 2
    gsc = Path(config.data.root)
    if not (gsc / "manifest.csv").exists():
        print(f"no Speech Commands manifest in {gsc} (set data.root in {config_path})", file=sys.stderr)
        return 2
    fsdd = fsdd or gsc.parent / "fsdd"
    synth = Path(config.data.synth_root) if config.data.synth_root else None
    return Data(gsc, fsdd if fsdd.is_dir() else None, synth, config.data.held_out_words, config.data.noise_holdout,
                config.data.test_fraction or 1.0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kws-robustness", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", type=Path, help="ONNX file (default: the shipped service/models/kws10.onnx)")
    parser.add_argument("--config", type=Path, default=Path("configs/kws10.toml"),
                        help="experiment whose data folders and held-out words apply (default %(default)s)")
    parser.add_argument("--fsdd", type=Path, help="FSDD folder (default: next to the config's GSC folder)")
    parser.add_argument("--every", type=int, default=1, help="use every Nth clip of each set (default %(default)s)")
    parser.add_argument("--no-thresholds", action="store_true", help="answer the top label (ignore the keyword thresholds)")
    parser.add_argument("--no-speech-check", action="store_true",
                        help="no VAD check of keyword answers (the service with KWS_VERIFY_SPEECH=false)")
    parser.add_argument("--hop", type=float, default=0.25, help="window hop over clips longer than 1 s (the service's)")
    parser.add_argument("--streaming-minutes", type=int, default=60,
                        help="minutes of negative audio for the streaming false alarms (0: no streaming; default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="draws the streaming recordings (default %(default)s)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--curve-plot", type=Path, metavar="PNG",
                        help="draw the streaming operating curve (false alarms per hour against recall) here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from threadpoolctl import threadpool_limits

    from evaluation.suite import Scorer, run_suite
    from service.inference import KeywordModel, ModelLoadError
    from service.settings import SHIPPED_MODEL

    data = _data(args.config, args.fsdd)
    if isinstance(data, int):
        return data
    try:
        model = KeywordModel.load(args.model or SHIPPED_MODEL)
    except ModelLoadError as error:
        print(f"kws-robustness: {error}", file=sys.stderr)
        return 2
    threadpool_limits(limits=1, user_api="blas")
    started = time.perf_counter()
    scorer = Scorer(model, args.hop, thresholds=not args.no_thresholds, verify_speech=not args.no_speech_check)
    results = run_suite(scorer, data, every=args.every, progress=lambda name: print(f"  {name} ...", file=sys.stderr))
    if args.streaming_minutes > 0:
        results["streaming"] = streaming_results(model, data, args.streaming_minutes, args.seed)
    results["model"] = {"path": str(args.model or SHIPPED_MODEL), "name": model.name, "version": model.version,
                        "thresholds": {} if args.no_thresholds else dict(scorer.rule.thresholds)}
    results["speech_check"] = {"on": scorer.verify_speech, "keyword_answers_checked": scorer.checked,
                               "turned_to_silence": scorer.overruled,
                               "ms_per_check": round(1000 * scorer.vad_seconds / max(1, scorer.checked), 2)}
    results["command"] = " ".join(["kws-robustness", *(sys.argv[1:] if argv is None else argv)])
    results["seconds"] = round(time.perf_counter() - started, 1)
    figures = headline(results)
    results["headline"] = figures
    print(f"{'figure':<66}{'value':>10}   meets the bar")
    for name, value in figures.items():
        shown = f"{value:.2f}" if "points" in name or "per hour" in name else f"{100 * value:.1f} %"
        print(f"{name:<66}{shown:>10}   {meets(name, value)}")
    print(f"level sweep accuracy: " + ", ".join(f"{g} dB {100 * v['accuracy']:.1f}" for g, v in results['levels']['by_gain_db'].items()))
    print(f"noise-only not a keyword by level (dBFS): {results['noise']['by_level']}")
    print(f"non-speech not a keyword by level (dBFS): {results['sounds']['by_level']}")
    print(f"open set per word: {results['open_set']['per_word']} (clips {results['open_set']['clips_per_word']})")
    print(f"speech check of keyword answers: {results['speech_check']}")
    for name, row in results.get("streaming", {}).items():
        if isinstance(row, dict) and "recall" in row:
            print(f"streaming, {name}: {row['false_alarms_per_hour']} false alarms/hour on {row['negative_hours']} h, "
                  f"recall {row['recall']}, {100 * row['windows_scored_fraction']:.0f} % of windows scored, "
                  f"VAD {row['vad_ms_per_audio_second']} ms + model {row['model_ms_per_audio_second']} ms per second of audio")
            print(f"  false alarms on: {row['false_alarms_by_source']}")
            print(f"  recall per keyword: {row['per_keyword_recall']}; by SNR (dB): {row['recall_by_snr_db']}")
    if "streaming" in results:
        curve = results["streaming"]["curve"]
        print("streaming operating curve, one common threshold (FA/h at recall): "
              + ", ".join(f"{r}: {v}" for r, v in curve["false_alarms_per_hour_at_recall"].items()))
        if args.curve_plot:
            from evaluation.plots import plot_operating_curve

            plot_operating_curve(curve["points"], results["streaming"]["service"], args.curve_plot)
            print(f"wrote {args.curve_plot}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.json}")
    print(f"({results['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def calibrate_stream_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kws-stream-calibrate",
        description="Choose per-keyword thresholds for WS /v1/stream on tuning recordings (the validation speakers "
                    "that chose the epoch, the synthetic words that chose the clip thresholds, over held-out noise) "
                    "and store them in the ONNX file's metadata as stream_keyword_thresholds.",
        epilog="example: kws-stream-calibrate service/models/kws10.onnx --target-per-hour 2")
    parser.add_argument("model", type=Path)
    parser.add_argument("--config", type=Path, default=Path("configs/kws10.toml"))
    parser.add_argument("--target-per-hour", type=float, default=2.0,
                        help="false alarms per hour allowed on the tuning negatives, all keywords together (default %(default)s)")
    parser.add_argument("--minutes", type=int, default=60, help="minutes of tuning negatives (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    from evaluation.streaming import calibrate_stream, write_stream_thresholds
    from service.inference import KeywordModel, ModelLoadError

    data = _data(args.config, None)
    if isinstance(data, int):
        return data
    try:
        model = KeywordModel.load(args.model)
    except ModelLoadError as error:
        print(f"kws-stream-calibrate: {error}", file=sys.stderr)
        return 2
    threadpool_limits(limits=1, user_api="blas")
    started = time.perf_counter()
    thresholds = calibrate_stream(model, data, args.target_per_hour, args.minutes, args.seed)
    write_stream_thresholds(args.model, thresholds, {"target_false_alarms_per_hour": args.target_per_hour,
                                                     "tuning_minutes": args.minutes, "seed": args.seed})
    print("stream thresholds: " + ", ".join(f"{k} {v:.2f}" for k, v in thresholds.items()))
    print(f"wrote them into {args.model} ({time.perf_counter() - started:.0f} s)")
    return 0
