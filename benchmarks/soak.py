"""Soak: steady open-loop load for a long time; errors, latency and resident memory over time.

    python -m benchmarks.soak [--minutes 10] [--fraction 0.7] [--saturation RPS]
    python -m benchmarks.soak --minutes 0.5 --warmup-minutes 0.15 --rate 20      (the short version the tests run)

One kws-serve (one worker) under Poisson arrivals at FRACTION x saturation (default rate: 70 % of the
saturation in benchmarks/results/loadtest-1-worker.json). The warm-up starts with three bursts of 64
concurrent requests (full batches, every worker thread), then steady load. The server's RSS is sampled
every 2 s; growth is measured from the end of the warm-up (allocator arenas and caches fill there: under
steady load alone RSS climbs for about a minute, then stays flat) to the end. Exit status 1 when
any request failed or memory grew by more than --max-growth-percent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.results import REPO, RESULTS, measured_saturation
from loadtest.local_server import kws_serve, resident_mb
from loadtest.clips import clips_for
from loadtest.report import summarize
from loadtest.runner import RunResult, Sender, open_loop


async def soak(base: str, pid: int, clips, rate: float, seconds: float, warmup: float) -> dict:
    samples: list[tuple[float, float]] = []
    started = time.monotonic()

    async def sample_memory() -> None:
        while True:
            samples.append((time.monotonic() - started, resident_mb(pid)))
            await asyncio.sleep(2.0)

    sampler = asyncio.create_task(sample_memory())
    async with Sender(base, clips, timeout_s=30, max_connections=1000) as sender:
        for _ in range(3):  # bursts first: full batches and every worker thread, so pools and arenas reach size
            await sender.warm_up(64)
        result: RunResult = await open_loop(sender, rate, seconds, warmup=warmup, seed=7)
    sampler.cancel()
    samples.append((time.monotonic() - started, resident_mb(pid)))
    after_warmup = [mb for t, mb in samples if t >= warmup]
    summary = summarize(result)
    minutes = []
    for start in np.arange(0, seconds, 60.0):
        chunk = [o.latency_ms for o in result.outcomes if start <= o.scheduled < start + 60 and o.status == "200"]
        if chunk:
            minutes.append({"minute": int(start // 60), "requests": len(chunk), "p50_ms": float(np.percentile(chunk, 50)),
                            "p99_ms": float(np.percentile(chunk, 99))})
    return {
        "rate_rps": rate, "seconds": seconds, "warmup_seconds": warmup, "summary": summary, "per_minute": minutes,
        "resident_mb": {"start": samples[0][1], "after_warmup": after_warmup[0], "end": after_warmup[-1],
                        "max": max(mb for _, mb in samples),
                        "growth_percent": 100 * (after_warmup[-1] - after_warmup[0]) / after_warmup[0]},
        "memory_samples": [[round(t, 1), round(mb, 1)] for t, mb in samples],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="measured minutes (default %(default)s)")
    parser.add_argument("--warmup-minutes", type=float, default=1.0, help="load before memory is measured (default %(default)s)")
    parser.add_argument("--rate", type=float, help="requests/s (default: FRACTION x saturation)")
    parser.add_argument("--fraction", type=float, default=0.7)
    parser.add_argument("--saturation", type=float, help="saturation throughput (default: from benchmarks/results/loadtest-1-worker.json)")
    parser.add_argument("--max-growth-percent", type=float, default=5.0)
    parser.add_argument("--clips", type=Path, default=REPO.parent / "shared" / "data" / "gsc" / "yes")
    parser.add_argument("--json", type=Path, help="default: benchmarks/results/soak.json for runs of 5 minutes or more")
    args = parser.parse_args(argv)
    rate = args.rate
    if rate is None:
        saturation = args.saturation or measured_saturation()
        rate = args.fraction * saturation
    clips = clips_for(args.clips)
    with kws_serve() as server:
        report = asyncio.run(soak(server.base, server.pid, clips, rate, 60 * args.minutes, 60 * args.warmup_minutes))
        report["server_alive"] = server.process.poll() is None
    summary, memory = report["summary"], report["resident_mb"]
    print(f"soak: {args.minutes:g} min at {rate:.1f} req/s after {args.warmup_minutes:g} min warm-up: "
          f"{summary['requests']} requests, statuses {summary['status_counts']}, "
          f"p50 {summary['latency_ms']['p50']:.1f} ms, p99 {summary['latency_ms']['p99']:.1f} ms, max {summary['latency_ms']['max']:.1f} ms")
    print(f"resident memory: {memory['start']:.0f} MB at start, {memory['after_warmup']:.0f} MB after warm-up, "
          f"{memory['end']:.0f} MB at the end ({memory['growth_percent']:+.2f} %), max {memory['max']:.0f} MB")
    for minute in report["per_minute"]:
        print(f"  minute {minute['minute']:>2}: {minute['requests']:>5} requests, p50 {minute['p50_ms']:.1f} ms, p99 {minute['p99_ms']:.1f} ms")
    json_path = args.json or (RESULTS / "soak.json" if args.minutes >= 5 else None)
    if json_path:
        json_path.write_text(json.dumps(report, indent=1))
    failed = summary["error_rate"] > 0 or memory["growth_percent"] >= args.max_growth_percent or not report["server_alive"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
