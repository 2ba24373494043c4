"""Dynamic micro-batching: concurrent requests share one forward pass, never larger than ``max_batch_size``.

Requests put their model windows on a bounded queue; one worker takes what is waiting, and while more
requests are on their way (still decoding, announced with :meth:`MicroBatcher.incoming`) keeps collecting
until ``max_batch_size`` windows or ``max_wait_ms`` have passed; then it runs the model once in a worker
thread and hands each request its rows. A lone request never waits. A request with more windows than
``max_batch_size`` (a long clip) is split into passes of at most that many, so the cap bounds the memory of
every forward pass. A full backlog (requests preparing plus windows queued) sheds load at once
(:class:`Overloaded`) instead of letting latency grow without bound.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

# The model: features (windows, ...) in, its outputs out, each with one row per window.
Model = Callable[[np.ndarray], np.ndarray | Sequence[np.ndarray]]


class Overloaded(Exception):
    """The queue is full; the client should retry later."""


class Admission:
    """Work admitted into the backlog: ``cost`` requests' worth, held until handed over to the queue or released.

    A request is admitted from its head (before its body is read: refusing it then is cheap), holds its place
    while it uploads and decodes, and hands it over once its windows are queued, where they count instead.
    """

    def __init__(self, batcher: MicroBatcher, cost: int) -> None:
        self._batcher, self.cost = batcher, cost

    def resize(self, cost: int) -> None:
        """A batch admitted as one request from its head, once its files are counted; Overloaded if they do not fit."""
        if cost > self.cost:
            self._batcher._check_room(cost, besides=self.cost)
        self._batcher._incoming += cost - self.cost
        self.cost = cost

    def hand_over(self, cost: int = 1) -> None:
        """``cost`` of it is queued now (as windows) or done."""
        given = min(cost, self.cost)
        self._batcher._incoming -= given
        self.cost -= given

    def release(self) -> None:
        self.hand_over(self.cost)


@dataclass
class BatchResult:
    outputs: tuple[np.ndarray, ...]  # the model's outputs, this request's rows
    queue_ms: float  # until its first forward pass began
    inference_ms: float  # its forward passes, together
    batch_size: int  # windows in the largest forward pass it rode

    @property
    def scores(self) -> np.ndarray:
        return self.outputs[0]


@dataclass
class _Pending:
    features: np.ndarray
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    def __init__(self, run: Model, max_batch_size: int, max_wait_ms: float, max_queue: int) -> None:
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self._waiting: deque[_Pending] = deque()
        self._arrived = asyncio.Event()
        self._queued_windows = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnx")
        self._worker: asyncio.Task | None = None
        self.batch_sizes: Counter[int] = Counter()
        self.observe_batch: Callable[[int], None] | None = None  # called with the size of every forward pass
        self._incoming = 0

    def admit(self, cost: int = 1) -> Admission:
        """Admits work that will prepare its windows and submit soon (worth waiting for), or sheds it.

        ``cost`` is how many requests it stands for (a batch: its files; 0: already admitted). Requests
        admitted and not yet queued count against ``max_queue`` (as one window each) together with the queued
        windows, so the backlog in front of the preprocessing threads is bounded too, not just the model's.
        Work larger than the bound is admitted only into an empty backlog.
        """
        self._check_room(cost)
        self._incoming += cost
        return Admission(self, cost)

    def _check_room(self, cost: int, besides: int = 0) -> None:
        others = self._incoming - besides
        backlog = others + self._queued_windows
        if cost and backlog and backlog + cost > self.max_queue:
            raise Overloaded(f"{others} requests preparing and {self._queued_windows} windows queued "
                             f"(limit {self.max_queue})")

    @contextmanager
    def incoming(self, cost: int = 1):
        """:meth:`admit` for the length of a ``with`` block."""
        admission = self.admit(cost)
        try:
            yield admission
        finally:
            admission.release()

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
        loop = asyncio.get_running_loop()
        parts = [_Pending(features[first : first + self.max_batch_size], loop.create_future())
                 for first in range(0, windows, self.max_batch_size)]
        self._queued_windows += windows
        self._waiting.extend(parts)
        self._arrived.set()
        results = [await part.future for part in parts]
        if len(results) == 1:
            return results[0]
        return BatchResult(tuple(np.concatenate(rows) for rows in zip(*(r.outputs for r in results))),
                           results[0].queue_ms, sum(r.inference_ms for r in results), max(r.batch_size for r in results))

    async def _next_arrival(self, timeout: float | None) -> bool:
        """Waits until something is queued (or ``timeout`` passes: False)."""
        while not self._waiting:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except TimeoutError:
                return False
        return True

    async def _collect(self) -> list[_Pending]:
        """The next forward pass: what waits, and what is on its way, up to ``max_batch_size`` windows."""
        await self._next_arrival(None)
        batch = [self._waiting.popleft()]
        rows = len(batch[0].features)
        deadline = time.perf_counter() + self.max_wait
        while rows < self.max_batch_size:
            if self._waiting:
                if rows + len(self._waiting[0].features) > self.max_batch_size:
                    break  # it rides the next pass, whole
                batch.append(self._waiting.popleft())
                rows += len(batch[-1].features)
                continue
            remaining = deadline - time.perf_counter()
            if remaining <= 0 or self._incoming == 0 or not await self._next_arrival(remaining):
                break
        return batch

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            started = time.perf_counter()
            self._queued_windows -= sum(len(p.features) for p in batch)
            features = np.concatenate([p.features for p in batch])
            try:
                outputs = await loop.run_in_executor(self._executor, self._run, features)
            except Exception as error:  # noqa: BLE001 - delivered to every waiting request
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                continue
            outputs = (outputs,) if isinstance(outputs, np.ndarray) else tuple(outputs)
            inference_ms = 1000 * (time.perf_counter() - started)
            self.batch_sizes[len(features)] += 1
            if self.observe_batch is not None:
                self.observe_batch(len(features))
            offset = 0
            for pending in batch:
                rows = len(pending.features)
                if not pending.future.done():
                    pending.future.set_result(BatchResult(tuple(o[offset : offset + rows] for o in outputs),
                                                          1000 * (started - pending.enqueued), inference_ms, len(features)))
                offset += rows
