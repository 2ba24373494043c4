"""How well the served model rejects words that are not keywords, including recordings it never saw.

    python -m benchmarks.rejection [--data ../shared/data] [--every 3]

Runs the shipped ONNX model through the service's own decode and window selection (what
``POST /v1/recognize`` answers) on
  * GSC validation-speaker keywords (recall: label right),
  * GSC validation-speaker non-keywords (false accepts: a keyword label),
  * FSDD spoken digits (other speakers, other microphones, 8 kHz; none is a keyword): false accepts,
and sweeps a floor on the keyword score below which an answer would count as ``_unknown_``, to show what
rejecting low-confidence keywords would cost in recall. Writes benchmarks/results/rejection.json.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from service.audio import AudioLimits, decode_audio
from service.inference import KeywordModel
from service.settings import SHIPPED_MODEL, Settings

REPO = Path(__file__).resolve().parents[1]
FLOORS = (0.0, 0.12, 0.13, 0.14, 0.15, 0.16, 0.17)


def answers(model: KeywordModel, paths: list[Path]) -> list[tuple[str, float]]:
    """(label, score) as the service answers them: the best window of each clip."""
    settings = Settings()
    limits = AudioLimits(model.features.sample_rate, settings.min_audio_seconds, settings.max_audio_seconds,
                         settings.max_channels)
    result = []
    for path in paths:
        audio = decode_audio(path.read_bytes(), limits)
        scores = model.run(model.windows(audio.samples, settings.window_hop_seconds))
        best = scores[model.answer_window(scores)[0]]
        result.append((model.labels[int(np.argmax(best))], float(best.max())))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL)
    parser.add_argument("--every", type=int, default=3, help="use every Nth clip (default %(default)s)")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "rejection.json")
    args = parser.parse_args(argv)
    threadpool_limits(limits=1, user_api="blas")
    model = KeywordModel.load(args.model)
    keywords = model.keywords
    with open(args.data / "gsc" / "manifest.csv", newline="") as handle:
        gsc = [r for r in csv.DictReader(handle) if r["split"] == "validation"][:: args.every]
    with open(args.data / "fsdd" / "manifest.csv", newline="") as handle:
        fsdd = list(csv.DictReader(handle))[:: args.every * 3]
    spoken_keywords = [r for r in gsc if r["word"] in keywords]
    other_words = [r for r in gsc if r["word"] not in keywords]
    sets = {
        "gsc_keywords": (spoken_keywords, answers(model, [args.data / "gsc" / r["file"] for r in spoken_keywords])),
        "gsc_other_words": (other_words, answers(model, [args.data / "gsc" / r["file"] for r in other_words])),
        "fsdd_digits": (fsdd, answers(model, [args.data / "fsdd" / r["file"] for r in fsdd])),
    }
    rows = []
    for floor in FLOORS:
        row = {"floor": floor}
        for name, (items, results) in sets.items():
            if name == "gsc_keywords":
                row["keyword_recall"] = float(np.mean([label == r["word"] and score >= floor
                                                       for r, (label, score) in zip(items, results)]))
            else:
                row[f"{name}_false_accepts"] = float(np.mean([label in keywords and score >= floor
                                                              for label, score in results]))
        rows.append(row)
    counts = {name: len(items) for name, (items, _) in sets.items()}
    print(f"clips: {counts}")
    print(f"{'score floor':>12}{'keyword recall':>16}{'GSC other words FA':>20}{'FSDD digits FA':>16}")
    for row in rows:
        print(f"{row['floor']:>12.2f}{row['keyword_recall']:>16.3f}{row['gsc_other_words_false_accepts']:>20.3f}"
              f"{row['fsdd_digits_false_accepts']:>16.3f}")
    args.json.write_text(json.dumps({"clips": counts, "sweep": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
