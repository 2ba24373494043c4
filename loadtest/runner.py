"""Sending the load: open loop (Poisson arrivals at a fixed rate) and closed loop (N clients).

Open loop measures every request from the moment it was *scheduled*, not from when the client got round to
sending it. A server that stalls therefore shows its stall in the tail of every request that should have
been sent meanwhile — the client cannot hold back the next request and hide it (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Self

import numpy as np

from loadtest.clips import Clip
from loadtest.http import ConnectionPool, multipart_request

ENDPOINT = "/v1/recognize"


@dataclass
class Outcome:
    scheduled: float  # when the request was due (open loop) or sent (closed loop), seconds on the run's clock
    finished: float
    status: str  # HTTP status code, or "timeout" / "connection_error" / "invalid_json"
    server_latency_ms: dict[str, float] | None = None
    retry_after: str | None = None  # the header, on 503s

    @property
    def latency_ms(self) -> float:
        return 1000 * (self.finished - self.scheduled)


@dataclass
class RunResult:
    mode: str  # "open" or "closed"
    offered_rps: float | None  # open loop: the Poisson rate; closed loop: None
    concurrency: int | None
    duration_s: float  # the measured window (after warm-up)
    outcomes: list[Outcome] = field(default_factory=list)


def poisson_schedule(rate: float, duration: float, rng: np.random.Generator) -> np.ndarray:
    """Arrival times in [0, duration) of a Poisson process of the given rate (exponential gaps)."""
    expected = int(rate * duration)
    gaps = rng.exponential(1.0 / rate, size=expected + 10 * int(np.sqrt(expected + 1)) + 10)
    times = np.cumsum(gaps)
    while times[-1] < duration:  # astronomically rare; keeps the schedule exact
        times = np.concatenate([times, times[-1] + np.cumsum(rng.exponential(1.0 / rate, size=expected + 10))])
    return times[times < duration]


class Sender:
    """The clips as ready-made requests and a pool of connections; ``send`` posts one and classifies the answer."""

    def __init__(self, base_url: str, clips: list[Clip], timeout_s: float, max_connections: int,
                 headers: dict[str, str] | None = None, top_k: int = 3) -> None:
        self.pool = ConnectionPool(base_url, max_connections)
        self.timeout_s = timeout_s
        self.requests = [multipart_request(base_url, f"{ENDPOINT}?top_k={top_k}", "file", clip.name, clip.data,
                                           clip.content_type, headers) for clip in clips]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_) -> None:
        await self.pool.close()

    async def send(self, index: int) -> tuple[str, dict[str, float] | None, str | None]:
        """(status, the server's latency_ms on success, Retry-After if given)."""
        try:
            reply = await self.pool.exchange(self.requests[index % len(self.requests)], self.timeout_s)
        except TimeoutError:
            return "timeout", None, None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            return "connection_error", None, None
        server = None
        if reply.status == 200:
            try:
                server = json.loads(reply.body).get("latency_ms")
            except ValueError:
                return "invalid_json", None, None
        return str(reply.status), server, reply.headers.get("retry-after")

    async def warm_up(self, requests: int) -> None:
        await asyncio.gather(*(self.send(i) for i in range(requests)))


async def open_loop(sender: Sender, rate: float, duration: float, warmup: float = 2.0, seed: int = 0) -> RunResult:
    """Poisson arrivals at ``rate`` for ``warmup + duration`` seconds; outcomes scheduled in the warm-up are dropped."""
    schedule = poisson_schedule(rate, warmup + duration, np.random.default_rng(seed))
    loop = asyncio.get_running_loop()
    outcomes: list[Outcome] = []

    async def one(index: int, due: float) -> None:
        status, server, retry_after = await sender.send(index)
        if due - start >= warmup:
            outcomes.append(Outcome(due - start - warmup, loop.time() - start - warmup, status, server, retry_after))

    start = loop.time()
    tasks = []
    for index, offset in enumerate(schedule):
        delay = start + offset - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, start + offset)))
    await asyncio.gather(*tasks)
    return RunResult("open", rate, None, duration, outcomes)


async def closed_loop(sender: Sender, concurrency: int, duration: float, warmup: float = 2.0) -> RunResult:
    """``concurrency`` clients, each sending its next request as soon as the previous one is answered."""
    loop = asyncio.get_running_loop()
    outcomes: list[Outcome] = []
    start = loop.time()
    end = start + warmup + duration
    counter = iter(range(1 << 62))

    async def client() -> None:
        while (sent := loop.time()) < end:
            status, server, retry_after = await sender.send(next(counter))
            if sent - start >= warmup:
                outcomes.append(Outcome(sent - start - warmup, loop.time() - start - warmup, status, server, retry_after))

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return RunResult("closed", None, concurrency, duration, outcomes)


def wall_clock() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
