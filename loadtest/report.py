"""Turning outcomes into figures: percentiles, errors by status, the server's stage breakdown, the sweep plot."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.runner import RunResult

PERCENTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "p99.9": 99.9}
STAGES = ("decode", "features", "queue", "inference", "vad", "total")


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {**{name: None for name in PERCENTILES}, "max": None}
    array = np.asarray(values)
    figures = {name: float(np.percentile(array, q)) for name, q in PERCENTILES.items()}
    return {**figures, "max": float(array.max())}


def summarize(result: RunResult) -> dict[str, Any]:
    """Throughput counts 200s per second of the measured window; latency is over successful requests only."""
    outcomes = result.outcomes
    ok = [o for o in outcomes if o.status == "200"]
    statuses = Counter(o.status for o in outcomes)
    # Completions of an overloaded open-loop run trail past the window; goodput is over the span they took.
    span = max([result.duration_s] + [o.finished for o in outcomes])
    stages = {}
    for stage in STAGES:
        values = [o.server_latency_ms[stage] for o in ok if o.server_latency_ms and stage in o.server_latency_ms]
        if values:
            stages[stage] = {"mean": float(np.mean(values)), "p50": float(np.percentile(values, 50)),
                             "p99": float(np.percentile(values, 99))}
    return {
        "mode": result.mode,
        "offered_rps": result.offered_rps,
        "concurrency": result.concurrency,
        "duration_s": result.duration_s,
        "requests": len(outcomes),
        "arrival_rps": len(outcomes) / result.duration_s,
        "throughput_rps": len(ok) / span if span > 0 else 0.0,
        "error_rate": (len(outcomes) - len(ok)) / len(outcomes) if outcomes else 0.0,
        "status_counts": dict(sorted(statuses.items())),
        "shed_with_retry_after": sum(o.status == "503" and o.retry_after is not None for o in outcomes),
        "latency_ms": percentiles([o.latency_ms for o in ok]),
        "server_latency_ms": stages,
    }


def sustains(summary: dict[str, Any], max_error_rate: float = 0.01, min_goodput_fraction: float = 0.95) -> bool:
    """A rate is sustained when (almost) everything succeeds and the server keeps pace with the arrivals.

    Pace is judged against the arrivals this run actually drew (a Poisson count varies by sqrt(n)); a growing
    backlog stretches the span the answers take, which pulls goodput below the arrival rate.
    """
    return (summary["error_rate"] <= max_error_rate
            and summary["throughput_rps"] >= min_goodput_fraction * summary["arrival_rps"])


def saturation(summaries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The highest offered rate that is sustained, provided every lower rate was sustained too."""
    best = None
    for summary in sorted(summaries, key=lambda s: s["offered_rps"]):
        if not sustains(summary):
            break
        best = summary
    return best


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(summaries: list[dict[str, Any]]) -> str:
    head = (f"{'mode':<6}{'load':>9}{'req/s':>9}{'errors':>8}" + "".join(f"{name:>9}" for name in PERCENTILES)
            + f"{'max':>9}   statuses")
    lines = [head, "-" * len(head)]
    for s in summaries:
        load = f"{s['offered_rps']:.1f}/s" if s["mode"] == "open" else f"c={s['concurrency']}"
        latency = s["latency_ms"]
        lines.append(f"{s['mode']:<6}{load:>9}{s['throughput_rps']:>9.1f}{100 * s['error_rate']:>7.1f}%"
                     + "".join(f"{_fmt(latency[name]):>9}" for name in PERCENTILES) + f"{_fmt(latency['max']):>9}   "
                     + " ".join(f"{k}:{v}" for k, v in s["status_counts"].items()))
    lines.append("latency in ms, from the scheduled send time (open loop) to the response; successful requests only")
    return "\n".join(lines)


def stage_table(summary: dict[str, Any]) -> str:
    stages = summary["server_latency_ms"]
    if not stages:
        return "server stage breakdown: no successful responses"
    lines = ["server stage breakdown (latency_ms of the responses)", f"{'stage':<11}{'mean':>9}{'p50':>9}{'p99':>9}"]
    lines += [f"{stage:<11}{v['mean']:>9.2f}{v['p50']:>9.2f}{v['p99']:>9.2f}" for stage, v in stages.items()]
    client_p50 = summary["latency_ms"]["p50"]
    if "total" in stages and client_p50 is not None:
        lines.append(f"client p50 - server total p50 = {client_p50 - stages['total']['p50']:.2f} ms "
                     "(HTTP, the event loop, waiting for a connection)")
    return "\n".join(lines)


def plot_sweep(summaries: list[dict[str, Any]], saturation_point: dict[str, Any] | None, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [s["offered_rps"] for s in summaries]
    figure, latency_axis = plt.subplots(figsize=(8, 5))
    for name in ("p50", "p90", "p99", "p99.9"):
        values = [s["latency_ms"][name] if s["latency_ms"][name] is not None else np.nan for s in summaries]
        latency_axis.plot(rates, values, marker="o", label=f"{name} latency")
    latency_axis.set_yscale("log")
    latency_axis.set_xlabel("offered load (requests/s, Poisson arrivals)")
    latency_axis.set_ylabel("latency from scheduled send (ms)")
    throughput_axis = latency_axis.twinx()
    throughput_axis.plot(rates, [s["throughput_rps"] for s in summaries], color="black", linestyle="--", marker="s",
                         label="goodput (200/s)")
    throughput_axis.plot(rates, [100 * s["error_rate"] for s in summaries], color="red", linestyle=":", marker="x",
                         label="errors (%)")
    throughput_axis.set_ylabel("goodput (req/s) / errors (%)")
    if saturation_point is not None:
        latency_axis.axvline(saturation_point["offered_rps"], color="grey", linestyle="-.")
        latency_axis.annotate(f"saturation\n{saturation_point['throughput_rps']:.0f} req/s",
                              (saturation_point["offered_rps"], latency_axis.get_ylim()[1]), ha="right", va="top",
                              fontsize=9, xytext=(-4, -4), textcoords="offset points")
    handles = latency_axis.get_legend_handles_labels()
    extra = throughput_axis.get_legend_handles_labels()
    latency_axis.legend(handles[0] + extra[0], handles[1] + extra[1], loc="upper left", fontsize=8)
    latency_axis.set_title(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
