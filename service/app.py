"""The FastAPI application: ``create_app(settings)`` wires state, middleware, error handlers and routes.

Endpoints (API v1): ``POST /v1/recognize``, ``POST /v1/recognize/batch``, ``GET /v1/models``,
``GET /v1/stats``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``, ``WS /v1/stream``; ``GET /`` is
the try-it page (service/static/). Errors are ``{"error": {"code", "message"}}`` with a 4xx status that
names the problem. Where things live: service/routes/ (one module per group of endpoints),
service/deps.py (their dependencies), service/state.py (what the lifespan starts and stops),
service/recognizer.py (clip → answer), service/middleware.py, service/error_handlers.py, service/schemas.py.
"""

from __future__ import annotations

import asyncio
import io
import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import FrameType

import numpy as np
from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.formparsers import MultiPartParser

from service.error_handlers import install_error_handlers
from service.middleware import LoadShedder, RequestGuard, body_limits
from service.recognizer import recognize_bytes
from service.routes import operations, recognize, stream
from service.security import add_api_key_guard, add_cors
from service.settings import Settings
from service.state import ServiceState

logger = logging.getLogger("kws.service")
STATIC_DIR = Path(__file__).resolve().parent / "static"  # the try-it page


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    state = ServiceState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.start()
        # Warm up in the background: /healthz answers at once, /readyz only once the pipeline is warm.
        warming = asyncio.get_running_loop().create_task(warm_up(state), name="warm-up")
        warming.add_done_callback(lambda task: warm_up_done(state, task))
        try:
            with readiness_drops_on_stop_signals(state):
                yield
        finally:
            warming.cancel()
            await state.stop()

    app = FastAPI(
        title="Delay-SNN keyword recognition",
        version="1.0.0",
        description="Keyword spotting with a spiking neural network whose synaptic delays were learned (DCLS), "
                    "served from a fixed-delay ONNX graph.",
        lifespan=lifespan,
    )
    app.state.service = state

    limits = body_limits(settings)
    # Uploads stay in memory (the guard already bounds every body): no request data reaches the filesystem,
    # and the service runs on a read-only root filesystem. Starlette would spool parts over 1 MB to /tmp.
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, limits("/v1/recognize/batch"))
    app.add_middleware(LoadShedder, state=state)  # innermost: an upload is admitted, or refused, from its head
    add_api_key_guard(app, settings)  # inside the request guard, so 401s are logged and counted
    app.add_middleware(RequestGuard, limit_for_path=limits, stats=state.stats,
                       body_timeout=settings.body_read_timeout_seconds)
    add_cors(app, settings)  # outermost: preflights need no key, and errors carry the CORS headers
    install_error_handlers(app)
    for module in (recognize, operations, stream):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.get("/", include_in_schema=False)(lambda: FileResponse(STATIC_DIR / "index.html"))
    return app


@contextmanager
def readiness_drops_on_stop_signals(state: ServiceState) -> Iterator[None]:
    """SIGTERM and SIGINT drop readiness at once, then reach the server's own handler (uvicorn's graceful drain).

    Installed by the lifespan, so in every process that serves the app: ``kws-serve``, each worker of
    ``kws-serve --workers N`` (which run uvicorn's own Server), and ``uvicorn service.main:app`` by hand.
    Requests still in flight during the drain see /readyz 503, and load balancers stop routing here.
    Signals are the main thread's: elsewhere (the test client runs the lifespan in a thread) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def stop(sig: int, frame: FrameType | None) -> None:
        state.ready = False
        handler = previous[sig]
        if callable(handler):
            handler(sig, frame)
        elif handler == signal.SIG_DFL:  # no server handler: the default action, as if we were not here
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)

    for sig in previous:
        signal.signal(sig, stop)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if signal.getsignal(sig) is stop:
                signal.signal(sig, handler)


def warm_up_done(state: ServiceState, task: asyncio.Task) -> None:
    """A warm-up that raised leaves the service unable to serve: fail loudly rather than stay unready for ever."""
    if not task.cancelled() and (error := task.exception()) is not None:
        state.fail(f"warm-up failed, the service cannot serve: {type(error).__name__}: {error}", error)


async def warm_up(state: ServiceState) -> None:
    """One pass through decode, features and the model, so the first client does not pay for lazy imports."""
    import soundfile

    assert state.model is not None and state.batcher is not None
    rate = state.model.features.sample_rate
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(rate, dtype=np.float32), rate, format="WAV")
    for _ in range(2):
        await recognize_bytes(state, buffer.getvalue(), "audio/wav", top_k=1, record=False)
    state.batcher.batch_sizes.clear()  # warm-up passes are not traffic: counted from here on
    state.batcher.observe_batch = state.stats.record_batch
    state.ready = True
    logger.info("ready: model %s version %s from %s", state.model.name, state.model.version, state.settings.model_path)
