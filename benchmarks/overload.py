"""Overload: open-loop load at 3x the saturation rate, then back to normal, with saturation measured first.

    python -m benchmarks.overload [--factor 3] [--overload-seconds 20] [--saturation RPS]

Phases on one kws-serve (one worker), in one run: saturation (closed loop, SATURATION_CLIENTS clients back to
back, fewer than the backlog bound so nothing is shed: the most it serves per second on this machine now),
then with no gap between them: 50 % of that (baseline), FACTOR x it (overload), 50 % again (recovery).
Reports how the bounded backlog sheds (503 + Retry-After), the goodput under overload against the saturation
(the share of the machine that shedding costs), the p99 of the requests it accepted, that the server stays
up, and how many seconds after the load drops every 1-s p99 is back under the baseline's worst 1-s p99.
``--saturation`` skips the measurement (the rate is then only as right as the machine it came from). The load
generator shares the machine with the server: the cores each used during the overload are reported, since
what the generator takes at 3x is part of what the goodput figure pays.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.results import REPO, RESULTS
from loadtest.local_server import kws_serve, resident_mb
from loadtest.clips import clips_for
from loadtest.report import summarize
from loadtest.runner import Outcome, Sender, closed_loop, open_loop

SATURATION_CLIENTS = 32  # under the default KWS_MAX_QUEUE (64): the closed loop is never shed


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def p99_by_second(outcomes: list[Outcome], window: float = 1.0) -> list[float | None]:
    """p99 latency of the successful requests scheduled in each 1-s window (None: one that had an error)."""
    ends = np.arange(window, max(o.scheduled for o in outcomes) + window, window)
    series = []
    for end in ends:
        latencies = [o.latency_ms for o in outcomes if end - window <= o.scheduled < end and o.status == "200"]
        errors = [o for o in outcomes if end - window <= o.scheduled < end and o.status != "200"]
        series.append(float(np.percentile(latencies, 99)) if latencies and not errors else None)
    return series


def recovery_seconds(series: list[float | None], ceiling_ms: float, window: float = 1.0) -> float | None:
    """Seconds from the load drop until every later 1-s window has its p99 under ``ceiling_ms``: the worst 1-s p99
    of the baseline phase. (A 1-s window holds ~100 requests, so its p99 is near its maximum: it is compared with
    the same statistic of the baseline, not with the p99 of the whole baseline, which it exceeds now and then
    at any load.)"""
    healthy = [p99 is not None and p99 <= ceiling_ms for p99 in series]
    for index in range(len(series)):
        if all(healthy[index:]):
            return index * window
    return None


async def run(base: str, pid: int, clips, saturation: float | None, factor: float, overload_seconds: float) -> dict:
    async with Sender(base, clips, timeout_s=30, max_connections=2000) as sender:
        await sender.warm_up(4)
        measured = None
        if saturation is None:
            measured = summarize(await closed_loop(sender, SATURATION_CLIENTS, 10.0, warmup=2.0))
            saturation = measured["throughput_rps"]
        rss_before = resident_mb(pid)
        baseline = await open_loop(sender, 0.5 * saturation, 15.0, warmup=2.0, seed=1)
        cpu_before, wall_before = (cpu_seconds(pid), time.process_time()), time.monotonic()
        overload = await open_loop(sender, factor * saturation, overload_seconds, warmup=0.0, seed=2)
        wall = time.monotonic() - wall_before
        cores = {"server": (cpu_seconds(pid) - cpu_before[0]) / wall,
                 "load_generator": (time.process_time() - cpu_before[1]) / wall, "machine": os.cpu_count()}
        recovery = await open_loop(sender, 0.5 * saturation, 20.0, warmup=0.0, seed=3)
        rss_after = resident_mb(pid)
    async with httpx.AsyncClient(base_url=base) as client:
        ready = (await client.get("/readyz")).status_code
    recovery_p99, baseline_p99 = p99_by_second(recovery.outcomes), p99_by_second(baseline.outcomes)
    ceiling = max((p99 for p99 in baseline_p99 if p99 is not None), default=float("inf"))
    normal = summarize(baseline)
    overloaded = summarize(overload)
    recovered = summarize(recovery)
    if measured is not None:
        measured.pop("outcomes", None)
    return {
        "saturation_rps": saturation, "saturation_measured": measured, "factor": factor,
        "overload_goodput_share": overloaded["throughput_rps"] / saturation,
        "baseline": normal, "overload": overloaded, "recovery": recovered,
        "overload_503_share": overloaded["status_counts"].get("503", 0) / max(1, overloaded["requests"]),
        "overload_503_with_retry_after": overloaded["shed_with_retry_after"],
        "overload_accepted_p99_ms": overloaded["latency_ms"]["p99"],
        "recovery_seconds": recovery_seconds(recovery_p99, ceiling), "baseline_worst_second_p99_ms": ceiling,
        "baseline_p99_ms_by_second": baseline_p99, "recovery_p99_ms_by_second": recovery_p99,
        "overload_cores": cores, "ready_after": ready, "resident_mb": {"before": rss_before, "after": rss_after},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--saturation", type=float, help="saturation throughput, req/s (default: measured first)")
    parser.add_argument("--factor", type=float, default=3.0, help="overload as a multiple of saturation (default %(default)s)")
    parser.add_argument("--overload-seconds", type=float, default=20.0)
    parser.add_argument("--clips", type=Path, default=REPO.parent / "shared" / "data" / "gsc" / "yes")
    parser.add_argument("--json", type=Path, default=RESULTS / "overload.json")
    args = parser.parse_args(argv)
    clips = clips_for(args.clips)
    with kws_serve() as server:
        report = asyncio.run(run(server.base, server.pid, clips, args.saturation, args.factor, args.overload_seconds))
        report["server_alive"] = server.process.poll() is None
    over, saturation = report["overload"], report["saturation_rps"]
    how = "given" if args.saturation else f"measured: {SATURATION_CLIENTS} closed-loop clients for 10 s"
    print(f"saturation {saturation:.1f} req/s ({how}); overload at {args.factor:g}x = {over['offered_rps']:.1f} req/s "
          f"for {args.overload_seconds:g} s")
    print(f"  baseline (50 %): p50 {report['baseline']['latency_ms']['p50']:.1f} ms, p99 {report['baseline']['latency_ms']['p99']:.1f} ms")
    print(f"  overload: statuses {over['status_counts']}; {100 * report['overload_503_share']:.1f} % shed with 503, "
          f"{report['overload_503_with_retry_after']} of them with Retry-After; goodput {over['throughput_rps']:.1f} req/s "
          f"({100 * report['overload_goodput_share']:.0f} % of saturation); "
          f"p99 of accepted {report['overload_accepted_p99_ms']:.1f} ms; cores used: server "
          f"{report['overload_cores']['server']:.2f}, load generator {report['overload_cores']['load_generator']:.2f} "
          f"(of {report['overload_cores']['machine']})")
    print(f"  recovery (50 %): every 1-s p99 under the baseline's worst ({report['baseline_worst_second_p99_ms']:.1f} ms) "
          f"from {report['recovery_seconds']} s after the load dropped; "
          f"p99 {report['recovery']['latency_ms']['p99']:.1f} ms; errors {report['recovery']['status_counts']}")
    print(f"  server alive: {report['server_alive']}, /readyz {report['ready_after']}, resident "
          f"{report['resident_mb']['before']:.0f} -> {report['resident_mb']['after']:.0f} MB")
    for phase in ("baseline", "overload", "recovery"):
        report[phase].pop("outcomes", None)
    args.json.write_text(json.dumps(report, indent=1))
    return 0 if report["server_alive"] and report["ready_after"] == 200 else 1


if __name__ == "__main__":
    raise SystemExit(main())
