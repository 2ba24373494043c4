"""``python -m evaluation.stream_choices MODEL.onnx``: the streaming choices of docs/results.md, measured.

For each smoothing length (``--hops``) and false-alarm target (``--targets``), per-keyword thresholds are
tuned on the tuning recordings (as ``kws-stream-calibrate``) and measured on both the tuning and the report
recordings (as ``kws-robustness``), next to one common threshold swept over the same recordings. The
recordings are scored once; only the detector runs again. Without the VAD gate (the service's default).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.stream_choices", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--config", type=Path, default=Path("configs/kws10.toml"))
    parser.add_argument("--hops", default="3", help="smoothing lengths, comma-separated (default %(default)s)")
    parser.add_argument("--targets", default="4,8,16", help="false alarms per hour to tune for (default %(default)s)")
    parser.add_argument("--minutes", type=int, default=60, help="minutes of negatives per half (default %(default)s)")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    from evaluation.cli import _data
    from evaluation.stream_recordings import build_recordings, keyword_minutes_for
    from evaluation.streaming import (hours, matched, operating_curve, recall_of, score_recordings, stream_config,
                                      tune_thresholds)
    from service.inference import KeywordModel

    data = _data(args.config, None)
    if isinstance(data, int):
        return data
    threadpool_limits(limits=1, user_api="blas")
    model = KeywordModel.load(args.model)
    config = stream_config(model)
    keyword_minutes = keyword_minutes_for(args.minutes)  # as kws-robustness
    halves = {half: score_recordings(model, config, *build_recordings(data, model, half, args.minutes, keyword_minutes, 0),
                                     vad=False) for half in ("tune", "report")}
    rows = []
    for hops in (int(h) for h in args.hops.split(",")):
        smoothed = replace(config, smoothing_hops=hops)
        for half, scored in halves.items():
            curve = operating_curve(model, smoothed, scored)
            print(f"hops {hops} {half:6s} common threshold: "
                  + ", ".join(f"{p['threshold']:g}: {p['false_alarms_per_hour']:g}/h {p['recall']:.3f}" for p in curve[10:]))
            rows.append({"hops": hops, "half": half, "common_threshold_curve": curve})
        for target in (float(t) for t in args.targets.split(",")):
            tune = halves["tune"]
            thresholds = tune_thresholds(model, smoothed, tune.scored_negative, hours(tune.negative, config.sample_rate), target)
            for half, scored in halves.items():
                on_negative, on_keyword = matched(model, smoothed, scored, thresholds)
                alarms = sum(on_negative["false_alarms"].values()) / hours(scored.negative, config.sample_rate)
                print(f"hops {hops} {half:6s} per-keyword thresholds tuned for {target:g}/h: "
                      f"{alarms:.1f} false alarms/h, recall {recall_of(on_keyword):.3f}")
                rows.append({"hops": hops, "half": half, "target_per_hour": target, "thresholds": thresholds,
                             "false_alarms_per_hour": round(alarms, 2), "recall": recall_of(on_keyword)})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
