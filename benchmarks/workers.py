"""Saturation and tail latency of kws-serve with 1 and 2 uvicorn workers, measured with kws-loadtest --sweep.

    python -m benchmarks.workers [--workers 1,2] [--rates 10,20,...] [--duration 12]

For each worker count: starts ``kws-serve --workers N`` (the machine's threads split between the workers'
ONNX sessions), runs ``kws-loadtest --sweep RATES`` against it, which finds the saturation throughput and then
measures p99 at 50 % and 90 % of it, and writes benchmarks/results/loadtest-<N>-worker(s).{json,png}
(with ``--set NAME=VALUE``: loadtest-<N>-worker(s)-NAME=VALUE.{json,png}, the default-settings files kept).
The load generator runs on the same machine and takes CPU from the server: the figures are a lower bound.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.results import REPO, RESULTS, add_settings_argument, parse_settings, settings_suffix
from loadtest.local_server import kws_serve

DEFAULT_RATES = "25,50,75,100,125,150,175,200,225,250,300"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2", help="worker counts to measure (default %(default)s)")
    parser.add_argument("--rates", default=DEFAULT_RATES, help="offered rates of the sweep, req/s (default %(default)s)")
    parser.add_argument("--duration", type=float, default=12.0, help="measured seconds per rate (default %(default)s)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2,
                        help="ONNX threads in total, split between workers (default: the CPU count, %(default)s)")
    parser.add_argument("--clips", type=Path, default=REPO.parent / "shared" / "data" / "gsc" / "yes",
                        help="audio to send (default ../shared/data/gsc/yes; generated clips if absent)")
    add_settings_argument(parser)
    args = parser.parse_args(argv)
    settings = parse_settings(args.settings)
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary = []
    for workers in [int(w) for w in args.workers.split(",")]:
        threads = max(1, args.threads // workers)
        name = f"loadtest-{workers}-worker{'s' if workers > 1 else ''}{settings_suffix(settings)}"
        with kws_serve("--workers", str(workers), **{"intra_op_threads": str(threads), **settings}) as server:
            command = [sys.executable, "-m", "loadtest.cli", "--url", server.base, "--sweep", args.rates,
                       "--duration", str(args.duration), "--json", str(RESULTS / f"{name}.json"),
                       "--plot", str(RESULTS / f"{name}.png")]
            if args.clips.is_dir():
                command += ["--clips", str(args.clips)]
            print(f"== {workers} worker(s), {threads} ONNX thread(s) each: {' '.join(command[1:])}", flush=True)
            subprocess.run(command, cwd=REPO, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        report = json.loads((RESULTS / f"{name}.json").read_text())
        point = report["saturation"] or {}
        p99 = {f"p99_at_{int(100 * r['fraction'])}pct_ms": r["latency_ms"]["p99"] for r in report["at_fractions"]}
        summary.append({"workers": workers, "onnx_threads_each": threads,
                        "saturation_rps": point.get("throughput_rps"), **p99})
    print(f"\n{'workers':>8}{'saturation req/s':>18}{'p99 @ 50 %':>12}{'p99 @ 90 %':>12}")
    for row in summary:
        print(f"{row['workers']:>8}{row['saturation_rps'] or float('nan'):>18.1f}"
              f"{row.get('p99_at_50pct_ms') or float('nan'):>10.1f}ms{row.get('p99_at_90pct_ms') or float('nan'):>10.1f}ms")
    if settings:  # a run with other settings leaves the default-settings summary alone
        (RESULTS / f"loadtest-workers{settings_suffix(settings)}.json").write_text(
            json.dumps(summary, indent=1))
        return 0
    summary_path = RESULTS / "loadtest-workers.json"  # rows of other worker counts from earlier runs are kept
    earlier = json.loads(summary_path.read_text()) if summary_path.exists() else []
    measured = {row["workers"] for row in summary}
    rows = sorted([r for r in earlier if r["workers"] not in measured] + summary, key=lambda r: r["workers"])
    summary_path.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
