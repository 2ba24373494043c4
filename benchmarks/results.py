"""Where the benchmarks write their figures (benchmarks/results/), and the saturation figure they share."""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def measured_saturation() -> float:
    """The one-worker saturation throughput that ``python -m benchmarks.workers`` measured last."""
    path = RESULTS / "loadtest-1-worker.json"
    if not path.exists():
        raise SystemExit(f"no {path}: run python -m benchmarks.workers first, or pass --saturation")
    return json.loads(path.read_text())["saturation"]["throughput_rps"]


def add_settings_argument(parser, help_extra: str = "") -> None:
    """``--set NAME=VALUE``: a kws-serve setting (KWS_NAME) for the server a benchmark starts."""
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="settings",
                        help=f"a kws-serve setting (KWS_NAME), e.g. verify_speech=false{help_extra}")


def parse_settings(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def settings_suffix(settings: dict[str, str]) -> str:
    """What a results file name gets for non-default settings ("" for the defaults)."""
    return "".join(f"-{k}={v}" for k, v in sorted(settings.items()))
