"""Figures of ``kws-robustness``: the streaming operating curve."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def plot_operating_curve(points: Sequence[Mapping], shipped: Mapping, path: Path) -> None:
    """False alarms per hour (log) against keyword recall, one point per common threshold; the service's
    per-keyword thresholds as one marked point, and the issue's bar as a box."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = 0.5  # zero alarms drawn here, on a log axis
    recall = [p["recall"] for p in points]
    alarms = [max(p["false_alarms_per_hour"], floor) for p in points]
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(alarms, recall, marker=".", label="one threshold for every keyword")
    axis.plot([max(shipped["false_alarms_per_hour"], floor)], [shipped["recall"]], "r*", markersize=12,
              label="per-keyword thresholds (served)")
    axis.fill_between([floor, 5.0], 0.85, 1.0, color="green", alpha=0.12, label="bar: ≤ 5 per hour at ≥ 0.85")
    axis.set_xscale("log")
    axis.set_xlabel("false alarms per hour (negative audio; 0 drawn at 0.5)")
    axis.set_ylabel("keyword recall")
    axis.set_ylim(0.0, 1.0)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    axis.set_title("WS /v1/stream operating curve (kws-robustness)")
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
