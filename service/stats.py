"""Request counters and latency statistics, as JSON (/v1/stats) and Prometheus text (/metrics)."""

from __future__ import annotations

import bisect
import time
from collections import Counter, deque

import numpy as np

STAGES = ("decode", "features", "queue", "inference", "total")
LATENCY_BUCKETS_MS = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
RECENT = 10_000  # latencies kept per stage for percentiles


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def prometheus(self, name: str, labels: str, scale: float = 1.0) -> list[str]:
        lines, cumulative = [], 0
        prefix = f"{labels}," if labels else ""
        for bound, count in zip(self.buckets, self.counts):
            cumulative += count
            lines.append(f'{name}_bucket{{{prefix}le="{bound * scale:g}"}} {cumulative}')
        lines.append(f'{name}_bucket{{{prefix}le="+Inf"}} {self.count}')
        braces = f"{{{labels}}}" if labels else ""
        lines.append(f"{name}_sum{braces} {self.total * scale:.6f}")
        lines.append(f"{name}_count{braces} {self.count}")
        return lines


class ServiceStats:
    def __init__(self) -> None:
        self.started = time.time()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.recent = {stage: deque(maxlen=RECENT) for stage in STAGES}
        self.histograms = {stage: Histogram(LATENCY_BUCKETS_MS) for stage in STAGES}
        self.completions: deque[float] = deque()
        self.batch_histogram = Histogram(BATCH_BUCKETS)

    def record_request(self, endpoint: str, status: int) -> None:
        self.requests[(endpoint, status)] += 1

    def record_latency(self, latency_ms: dict[str, float]) -> None:
        now = time.monotonic()
        self.completions.append(now)
        for stage, value in latency_ms.items():
            self.recent[stage].append(value)
            self.histograms[stage].observe(value)

    def record_batch(self, size: int) -> None:
        self.batch_histogram.observe(size)

    def throughput_last_minute(self) -> float:
        now = time.monotonic()
        while self.completions and self.completions[0] < now - 60:
            self.completions.popleft()
        window = min(60.0, max(1e-9, time.time() - self.started))
        return len(self.completions) / window

    def snapshot(self, queue_depth: int, batch_sizes: Counter[int]) -> dict:
        latency = {}
        for stage, values in self.recent.items():
            if values:
                array = np.fromiter(values, dtype=np.float64)
                p50, p95, p99 = np.percentile(array, [50, 95, 99])
                latency[stage] = {"p50": round(p50, 3), "p95": round(p95, 3), "p99": round(p99, 3),
                                  "max": round(float(array.max()), 3), "count": len(values)}
        errors: Counter[str] = Counter()
        for (_, status), count in self.requests.items():
            if status >= 400:
                errors[str(status)] += count
        return {
            "uptime_s": round(time.time() - self.started, 1),
            "requests": sum(self.requests.values()),
            "requests_by_endpoint": {f"{e} {s}": c for (e, s), c in sorted(self.requests.items())},
            "errors_by_status": dict(errors),
            "latency_ms": latency,
            "throughput_last_minute_rps": round(self.throughput_last_minute(), 3),
            "queue_depth": queue_depth,
            "batch_size_histogram": {str(k): v for k, v in sorted(batch_sizes.items())},
        }

    def prometheus(self, queue_depth: int) -> str:
        lines = ["# HELP kws_requests_total Requests by endpoint and HTTP status.", "# TYPE kws_requests_total counter"]
        for (endpoint, status), count in sorted(self.requests.items()):
            lines.append(f'kws_requests_total{{endpoint="{endpoint}",status="{status}"}} {count}')
        lines += ["# HELP kws_stage_latency_seconds Latency of each processing stage.",
                  "# TYPE kws_stage_latency_seconds histogram"]
        for stage, histogram in self.histograms.items():
            lines += histogram.prometheus("kws_stage_latency_seconds", f'stage="{stage}"', scale=1e-3)
        lines += ["# HELP kws_queue_depth Model windows waiting for a forward pass.", "# TYPE kws_queue_depth gauge",
                  f"kws_queue_depth {queue_depth}",
                  "# HELP kws_batch_size Windows per forward pass.", "# TYPE kws_batch_size histogram"]
        lines += self.batch_histogram.prometheus("kws_batch_size", "")
        return "\n".join(lines) + "\n"
