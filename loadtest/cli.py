"""kws-loadtest: measure a running keyword service honestly.

Examples (a server from ``kws-serve`` or the container on :8000):

  kws-loadtest --rate 40 --duration 30                  open loop: Poisson arrivals at 40 req/s
  kws-loadtest --concurrency 8 --duration 30            closed loop: 8 clients back to back
  kws-loadtest --sweep 25,50,100,150,200,250 --plot sweep.png --json sweep.json
                                                        latency percentiles against offered load, saturation
                                                        marked, then p99 at 50 % and 90 % of saturation; stops
                                                        after two rates in a row that were not sustained
  kws-loadtest --clips ../shared/data/gsc --rate 20     send real recordings instead of generated clips

Open-loop latency runs from each request's scheduled send time, so a stalled server cannot hide its tail
(no coordinated omission). Throughput counts successful (200) responses; errors are listed by status.
Requests are encoded once and sent over a lean keep-alive HTTP/1.1 pool, so the generator itself stays
far below the server's cost per request (it still shares the machine's CPU when run beside the server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import httpx

from loadtest.clips import clips_for
from loadtest.report import (
    plot_sweep,
    saturation,
    stage_table,
    summarize,
    sustains,
    table,
)
from loadtest.runner import Sender, closed_loop, open_loop, wall_clock


def rate_list(text: str) -> list[float]:
    try:
        rates = sorted({float(part) for part in text.split(",") if part.strip()})
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated rates like 10,20,40: {error}") from error
    if not rates or rates[0] <= 0:
        raise argparse.ArgumentTypeError("rates must be positive")
    return rates


def positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kws-loadtest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="service base URL (default %(default)s)")
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--rate", type=positive(float), help="open loop: Poisson arrivals at this many requests/s")
    load.add_argument("--concurrency", type=positive(int), help="closed loop: this many clients, each waiting for its answer")
    load.add_argument("--sweep", type=rate_list, metavar="R1,R2,...", help="open loop at each rate in turn; finds saturation")
    parser.add_argument("--at-fractions", type=rate_list, default=[0.5, 0.9], metavar="F1,F2",
                        help="with --sweep: afterwards, run at these fractions of the saturation throughput (default 0.5,0.9)")
    parser.add_argument("--duration", type=positive(float), default=20.0, help="measured seconds per run (default %(default)s)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring (default %(default)s)")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds of quiet between the runs of a sweep, so one run's backlog cannot leak into the next")
    parser.add_argument("--clips", type=Path, help="folder of audio files to send (default: generated 1 s WAV clips)")
    parser.add_argument("--max-clips", type=positive(int), default=200, help="most files read from --clips (default %(default)s)")
    parser.add_argument("--timeout", type=positive(float), default=30.0, help="per-request timeout in seconds (default %(default)s)")
    parser.add_argument("--max-connections", type=positive(int), default=1000,
                        help="client connection pool size; waiting for a connection counts as latency (default %(default)s)")
    parser.add_argument("--top-k", type=positive(int), default=3)
    parser.add_argument("--api-key", default=os.environ.get("KWS_API_KEY", ""), help="sent as X-API-Key (default: $KWS_API_KEY)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the arrival times and the clip sample")
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    parser.add_argument("--plot", type=Path, help="with --sweep: PNG of latency percentiles against offered load")
    parser.add_argument("--max-error-rate", type=float,
                        help="exit with status 1 when any run's error rate exceeds this fraction (for CI)")
    return parser


async def check_ready(url: str, headers: dict[str, str]) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=10, headers=headers) as client:
        try:
            ready = await client.get("/readyz")
        except httpx.HTTPError as error:
            raise SystemExit(f"kws-loadtest: cannot reach {url}/readyz: {error}") from error
        if ready.status_code != 200:
            raise SystemExit(f"kws-loadtest: {url} is not ready ({ready.status_code}: {ready.text[:200]})")
        models = await client.get("/v1/models")
        return models.json() if models.status_code == 200 else {}


async def run(args: argparse.Namespace) -> dict:
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    model = await check_ready(args.url, headers)
    try:
        clips = clips_for(args.clips, args.max_clips, args.seed)
    except ValueError as error:
        raise SystemExit(f"kws-loadtest: {error}") from error
    report: dict = {"url": args.url, "started": wall_clock(), "model": {k: model.get(k) for k in ("name", "version")},
                    "clips": {"source": str(args.clips) if args.clips else "generated", "count": len(clips)},
                    "runs": []}

    async with Sender(args.url, clips, args.timeout, args.max_connections, headers, args.top_k) as sender:
        await sender.warm_up(4)

        async def measure(rate: float | None = None, concurrency: int | None = None) -> dict:
            label = f"open loop {rate:.1f} req/s" if rate else f"closed loop, {concurrency} clients"
            print(f"[{wall_clock()}] {label} for {args.warmup:g}+{args.duration:g} s ...", file=sys.stderr, flush=True)
            if rate:
                result = await open_loop(sender, rate, args.duration, args.warmup, args.seed)
            else:
                result = await closed_loop(sender, concurrency, args.duration, args.warmup)
            summary = summarize(result)
            report["runs"].append(summary)
            return summary

        if args.sweep:
            sweep = []
            for rate in args.sweep:
                if len(sweep) >= 2 and not any(sustains(s) for s in sweep[-2:]):
                    print(f"two rates in a row were not sustained: the sweep stops before {rate:g} req/s",
                          file=sys.stderr)
                    break
                if sweep:
                    await asyncio.sleep(args.settle)
                sweep.append(await measure(rate=rate))
            point = saturation(sweep)
            report["saturation"] = None if point is None else {
                "offered_rps": point["offered_rps"], "throughput_rps": point["throughput_rps"],
                "p99_ms": point["latency_ms"]["p99"]}
            report["at_fractions"] = []
            if point is not None:
                for fraction in args.at_fractions:
                    await asyncio.sleep(args.settle)
                    summary = await measure(rate=fraction * point["throughput_rps"])
                    report["at_fractions"].append({"fraction": fraction, **summary})
            report["sweep"] = sweep
        elif args.concurrency:
            await measure(concurrency=args.concurrency)
        else:
            await measure(rate=args.rate or 10.0)
    return report


def print_report(report: dict) -> None:
    print(table(report["runs"]))
    if "sweep" in report:
        point = report["saturation"]
        if point is None:
            print("\nsaturation: even the lowest offered rate was not sustained (errors > 1 % or goodput < 95 %)")
        else:
            print(f"\nsaturation: {point['throughput_rps']:.1f} req/s goodput at {point['offered_rps']:.1f} req/s offered "
                  "(highest rate with <= 1 % errors and >= 95 % of arrivals served)")
            for run in report["at_fractions"]:
                print(f"  at {100 * run['fraction']:.0f} % of saturation ({run['offered_rps']:.1f} req/s): "
                      f"p99 {run['latency_ms']['p99'] or float('nan'):.1f} ms, errors {100 * run['error_rate']:.2f} %")
    print()
    print(stage_table(saturation_run(report) or report["runs"][-1]))


def saturation_run(report: dict) -> dict | None:
    """The sweep's run at the saturation point (None outside a sweep or when nothing was sustained)."""
    point = report.get("saturation")
    return next((s for s in report.get("sweep", []) if point and s["offered_rps"] == point["offered_rps"]), None)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.clips is not None and not args.clips.is_dir():
        raise SystemExit(f"kws-loadtest: --clips {args.clips} is not a folder")
    report = asyncio.run(run(args))
    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    if args.sweep:
        plot = args.plot or (args.json.with_suffix(".png") if args.json else None)
        if plot is not None:
            title = f"kws-loadtest sweep against {args.url} ({report['model'].get('name')})"
            plot_sweep(report["sweep"], saturation_run(report), plot, title)
            print(f"plot: {plot}")
    if args.max_error_rate is not None and any(r["error_rate"] > args.max_error_rate for r in report["runs"]):
        print(f"kws-loadtest: a run exceeded the {args.max_error_rate:.2%} error-rate limit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
