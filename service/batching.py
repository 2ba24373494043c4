"""Dynamic micro-batching: concurrent requests share one forward pass.

Requests put their model windows on a bounded queue; one worker takes what is
waiting, and while more requests are on their way (still decoding, announced
with :meth:`MicroBatcher.incoming`) keeps collecting until ``max_batch_size``
windows or ``max_wait_ms`` have passed; then it runs the model once in a worker
thread and hands each request its rows. A lone request never waits. A full backlog (requests preparing plus
windows queued) sheds load at once (:class:`Overloaded`) instead of letting latency grow without bound.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


class Overloaded(Exception):
    """The queue is full; the client should retry later."""


@dataclass
class BatchResult:
    scores: np.ndarray
    queue_ms: float
    inference_ms: float
    batch_size: int


@dataclass
class _Pending:
    features: np.ndarray
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_batch_size: int, max_wait_ms: float, max_queue: int) -> None:
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._queued_windows = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnx")
        self._worker: asyncio.Task | None = None
        self.batch_sizes: Counter[int] = Counter()
        self._incoming = 0

    @contextmanager
    def incoming(self, cost: int = 1):
        """Admits work that will prepare its windows and submit soon (worth waiting for), or sheds it.

        ``cost`` is how many requests it stands for (a batch: its files; 0: already admitted). Requests
        still decoding count against ``max_queue`` (as one window each) together with the queued windows,
        so the backlog in front of the preprocessing threads is bounded too, not just the model's. Work
        larger than the bound is admitted only into an empty backlog.
        """
        backlog = self._incoming + self._queued_windows
        if cost and backlog and backlog + cost > self.max_queue:
            raise Overloaded(f"{self._incoming} requests preparing and {self._queued_windows} windows queued "
                             f"(limit {self.max_queue})")
        self._incoming += cost
        try:
            yield
        finally:
            self._incoming -= cost

    @property
    def depth(self) -> int:
        """Windows waiting for the model."""
        return self._queued_windows

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._serve(), name="micro-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def submit(self, features: np.ndarray, shed: bool = True) -> BatchResult:
        windows = len(features)
        # A long clip alone still fits; the files of an admitted batch are not shed against each other.
        if shed and self._queued_windows and self._queued_windows + windows > self.max_queue:
            raise Overloaded(f"{self._queued_windows} windows already queued (limit {self.max_queue})")
        pending = _Pending(features, asyncio.get_running_loop().create_future())
        self._queued_windows += windows
        self._queue.put_nowait(pending)
        return await pending.future

    async def _collect(self) -> list[_Pending]:
        first = await self._queue.get()
        batch, rows = [first], len(first.features)
        deadline = time.perf_counter() + self.max_wait
        while rows < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            try:
                if self._queue.empty() and (remaining <= 0 or self._incoming == 0):
                    break
                pending = self._queue.get_nowait() if not self._queue.empty() else \
                    await asyncio.wait_for(self._queue.get(), remaining)
            except asyncio.TimeoutError:
                break
            batch.append(pending)
            rows += len(pending.features)
        return batch

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            started = time.perf_counter()
            self._queued_windows -= sum(len(p.features) for p in batch)
            features = np.concatenate([p.features for p in batch])
            try:
                scores = await loop.run_in_executor(self._executor, self._run, features)
            except Exception as error:  # noqa: BLE001 - delivered to every waiting request
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                continue
            inference_ms = 1000 * (time.perf_counter() - started)
            self.batch_sizes[len(features)] += 1
            offset = 0
            for pending in batch:
                rows = len(pending.features)
                if not pending.future.done():
                    pending.future.set_result(BatchResult(scores[offset : offset + rows], 1000 * (started - pending.enqueued),
                                                          inference_ms, len(features)))
                offset += rows
