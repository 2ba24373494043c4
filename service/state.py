"""What the service holds while it runs: the model, the micro-batcher, the worker pools, statistics, readiness.

Created by ``create_app``; :meth:`ServiceState.start` and :meth:`ServiceState.stop` are the lifespan's two
halves, so everything started is also shut down. Routes reach it through ``service/deps.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from service.audio import AudioLimits
from service.batching import MicroBatcher
from service.inference import KeywordModel
from service.settings import Settings
from service.stats import ServiceStats

logger = logging.getLogger("kws.service")


class ServiceState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stats = ServiceStats()
        self.model: KeywordModel | None = None
        self.batcher: MicroBatcher | None = None
        self.preprocess: ThreadPoolExecutor | None = None
        self.stream_pool: ThreadPoolExecutor | None = None  # WebM/Ogg streams wait for their demuxer here
        self.open_streams = 0
        self.ready = False
        self.failure: str | None = None  # why the service can never become ready: /healthz then answers 503
        self.on_failure: Callable[[], None] | None = None  # kws-serve stops the server here (exit status 1)

    def fail(self, reason: str, error: BaseException | None = None) -> None:
        """The service cannot serve (e.g. the warm-up raised): log the cause, fail liveness, tell kws-serve."""
        logger.error("%s", reason, exc_info=error)
        self.ready = False
        self.failure = reason
        if self.on_failure is not None:
            self.on_failure()

    @property
    def limits(self) -> AudioLimits:
        assert self.model is not None
        s = self.settings
        return AudioLimits(self.model.features.sample_rate, s.min_audio_seconds, s.max_audio_seconds, s.max_channels)

    def start(self) -> None:
        """Loads the model and starts the batcher and the decoding threads (inside the event loop)."""
        from threadpoolctl import threadpool_limits

        # numpy's BLAS gets one thread per caller: the service already runs requests in parallel
        # (preprocessing threads, the ONNX session), and OpenBLAS's own spinning pool on top of them
        # oversubscribed the cores: features took 11 ms instead of 0.7 and throughput collapsed under overload.
        threadpool_limits(limits=1, user_api="blas")
        s = self.settings
        self.model = KeywordModel.load(s.model_path, s.intra_op_threads, s.inter_op_threads)
        self.preprocess = ThreadPoolExecutor(s.preprocess_threads, thread_name_prefix="preprocess")
        # one thread per allowed stream (started on first use): waiting streams never starve upload decoding
        self.stream_pool = ThreadPoolExecutor(s.max_streams, thread_name_prefix="stream-demux")
        self.batcher = MicroBatcher(self.model.infer, s.max_batch_size, s.max_wait_ms, s.max_queue)
        self.batcher.start()

    async def stop(self) -> None:
        self.ready = False
        if self.batcher is not None:
            await self.batcher.stop()
        for pool in (self.preprocess, self.stream_pool):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
