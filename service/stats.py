"""Request counts, latencies and batch sizes, as JSON (``/v1/stats``) and Prometheus metrics (``/metrics``).

Everything kept here is bounded whatever is read, and however long the process runs: request counts are
labelled by route template (a fixed set) and status, latency percentiles come from the last
``RECENT`` values per stage, and "throughput over the last minute" from one counter per second.
``/metrics`` is rendered by ``prometheus_client`` (escaping and the text format are the library's), from a
registry of this instance's own, so several apps in one process (the tests) never share series.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable

import numpy as np
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client import Counter as PrometheusCounter

STAGES = ("decode", "features", "queue", "inference", "vad", "total")
LATENCY_BUCKETS_MS = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
RECENT = 10_000  # latencies kept per stage for percentiles
THROUGHPUT_WINDOW_S = 60


class ThroughputWindow:
    """Completions over the last ``seconds``: one ``[second, count]`` pair per second, at most ``seconds + 1``."""

    def __init__(self, seconds: int = THROUGHPUT_WINDOW_S) -> None:
        self.seconds = seconds
        self.buckets: deque[list[int]] = deque()

    def __len__(self) -> int:
        """Pairs held (not completions): at most ``seconds + 1``."""
        return len(self.buckets)

    def record(self, now: float) -> None:
        second = int(now)
        if self.buckets and self.buckets[-1][0] == second:
            self.buckets[-1][1] += 1
        else:
            self.buckets.append([second, 1])
        self._prune(second)

    def count(self, now: float) -> int:
        self._prune(int(now))
        return sum(count for _, count in self.buckets)

    def _prune(self, second: int) -> None:
        while self.buckets and self.buckets[0][0] <= second - self.seconds:
            self.buckets.popleft()


class PrometheusMetrics:
    """The series ``/metrics`` exports; all label values come from fixed sets."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = PrometheusCounter("kws_requests", "Requests by endpoint (route template) and HTTP status.",
                                          ["endpoint", "status"], registry=r)
        self.stage_latency = Histogram("kws_stage_latency_seconds", "Latency of each processing stage.", ["stage"],
                                       buckets=[b / 1000 for b in LATENCY_BUCKETS_MS], registry=r)
        self.queue_depth = Gauge("kws_queue_depth", "Model windows waiting for a forward pass.", registry=r)
        self.batch_size = Histogram("kws_batch_size", "Windows per forward pass.", buckets=BATCH_BUCKETS, registry=r)
        self.open_streams = Gauge("kws_open_streams", "WebSocket streams open now (WS /v1/stream).", registry=r)
        self.spikes = PrometheusCounter("kws_spikes", "Spikes emitted by each hidden layer, over all recognitions.",
                                        ["layer"], registry=r)
        self.synaptic_events = PrometheusCounter("kws_synaptic_events", "Synaptic events (spikes x fan-out), over all "
                                                 "recognitions: what a neuromorphic chip would pay.", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ServiceStats:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.recent = {stage: deque(maxlen=RECENT) for stage in STAGES}
        self.completions = ThroughputWindow()
        self.metrics = PrometheusMetrics()
        self.costed = 0  # recognitions whose cost is in the totals below
        self.spikes_per_layer: list[int] = []
        self.synaptic_events = 0

    def record_request(self, endpoint: str, status: int) -> None:
        """``endpoint`` is a route template (``/v1/recognize``), never a raw path: the label set stays fixed."""
        self.requests[(endpoint, status)] += 1
        self.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()

    def record_latency(self, latency_ms: dict[str, float]) -> None:
        self.completions.record(self.clock())
        for stage, value in latency_ms.items():
            self.recent[stage].append(value)
            self.metrics.stage_latency.labels(stage=stage).observe(value / 1000)

    def record_cost(self, spikes_per_layer: list[int], synaptic_events: int | None) -> None:
        if len(self.spikes_per_layer) != len(spikes_per_layer):
            self.spikes_per_layer = [0] * len(spikes_per_layer)  # the model's layer count, fixed for its lifetime
        self.costed += 1
        for layer, spikes in enumerate(spikes_per_layer):
            self.spikes_per_layer[layer] += spikes
            self.metrics.spikes.labels(layer=str(layer)).inc(spikes)
        if synaptic_events is not None:
            self.synaptic_events += synaptic_events
            self.metrics.synaptic_events.inc(synaptic_events)

    def cost_snapshot(self) -> dict:
        mean = (lambda total: round(total / self.costed, 1)) if self.costed else (lambda total: None)
        return {"recognitions": self.costed, "spikes_per_layer": list(self.spikes_per_layer),
                "synaptic_events": self.synaptic_events,
                "mean_per_request": {"spikes_per_layer": [mean(s) for s in self.spikes_per_layer],
                                     "synaptic_events": mean(self.synaptic_events)}}

    def record_batch(self, size: int) -> None:
        self.metrics.batch_size.observe(size)

    def throughput_last_minute(self) -> float:
        now = self.clock()
        window = min(float(THROUGHPUT_WINDOW_S), max(1e-9, now - self.started))
        return self.completions.count(now) / window

    def snapshot(self, queue_depth: int, batch_sizes: Counter[int], open_streams: int = 0) -> dict:
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
            "uptime_s": round(self.clock() - self.started, 1),
            "requests": sum(self.requests.values()),
            "requests_by_endpoint": {f"{e} {s}": c for (e, s), c in sorted(self.requests.items())},
            "errors_by_status": dict(errors),
            "latency_ms": latency,
            "throughput_last_minute_rps": round(self.throughput_last_minute(), 3),
            "queue_depth": queue_depth,
            "open_streams": open_streams,
            "batch_size_histogram": {str(k): v for k, v in sorted(batch_sizes.items())},
            "cost": self.cost_snapshot(),
        }

    def prometheus(self, queue_depth: int, open_streams: int = 0) -> bytes:
        self.metrics.queue_depth.set(queue_depth)
        self.metrics.open_streams.set(open_streams)
        return self.metrics.render()
