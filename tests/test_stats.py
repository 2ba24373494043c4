"""service/stats.py on its own: what it keeps stays bounded however long it runs and whatever is read."""

from __future__ import annotations

import pytest

from service.stats import RECENT, ServiceStats

LATENCY = {"decode": 1.0, "features": 1.0, "queue": 0.5, "inference": 2.0, "total": 5.0}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_throughput_window_stays_bounded_when_only_metrics_are_scraped():
    """Ten minutes at 10 req/s with /v1/stats never read (a deployment scraped through /metrics alone)."""
    clock = FakeClock()
    stats = ServiceStats(clock=clock)
    for _ in range(600 * 10):
        stats.record_latency(LATENCY)
        clock.now += 0.1
        if int(clock.now * 10) % 600 == 0:
            stats.prometheus(queue_depth=0)
    assert len(stats.completions) <= 61  # one counter per second of the last minute, not one entry per request
    assert all(len(values) <= RECENT for values in stats.recent.values())
    assert stats.throughput_last_minute() == pytest.approx(10.0, rel=0.02)
    clock.now += 120  # two quiet minutes: the window empties
    assert stats.throughput_last_minute() == 0.0 and len(stats.completions) == 0


def test_throughput_over_a_young_process_counts_from_its_start():
    clock = FakeClock()
    stats = ServiceStats(clock=clock)
    for _ in range(20):
        stats.record_latency(LATENCY)
    clock.now += 10
    assert stats.throughput_last_minute() == pytest.approx(2.0)
