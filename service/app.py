"""The FastAPI application: ``create_app(settings)``.

Endpoints (API v1): ``POST /v1/recognize``, ``POST /v1/recognize/batch``, ``GET /v1/models``,
``GET /v1/stats``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``; ``GET /`` is the try-it
page (service/static/). Errors are
``{"error": {"code", "message"}}`` with a 4xx status that names the problem.
"""

import asyncio
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.audio import AudioLimits, decode_audio
from service.batching import MicroBatcher, Overloaded
from service.errors import ServiceError
from service.inference import KeywordModel
from service.security import add_api_key_guard, add_cors
from service.settings import Settings
from service.stats import ServiceStats
from service.streaming import add_stream_routes

logger = logging.getLogger("kws.service")
access_logger = logging.getLogger("kws.access")
MULTIPART_OVERHEAD = 64 * 1024
STATIC_DIR = Path(__file__).resolve().parent / "static"  # the try-it page


# -- response schemas (they make /docs accurate) ---------------------------------------------


class LabelScore(BaseModel):
    label: str
    score: float


class AudioInfo(BaseModel):
    duration_s: float
    sample_rate: int
    channels: int
    format: str


class Latency(BaseModel):
    decode: float
    features: float
    queue: float
    inference: float
    total: float


class ModelRef(BaseModel):
    name: str
    version: str


class Recognition(BaseModel):
    label: str = Field(description="top-1 label; `_unknown_` for words that are not keywords, `_silence_` for no speech")
    score: float = Field(description="mean over time of the softmax of the readout potentials")
    top_k: list[LabelScore]
    audio: AudioInfo
    latency_ms: Latency
    model: ModelRef
    window_start_s: float = Field(0.0, description="start of the scored window (clips longer than one window)")


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class BatchItem(BaseModel):
    filename: str | None = None
    result: Recognition | None = None
    error: ErrorDetail | None = None


class BatchResponse(BaseModel):
    results: list[BatchItem]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "empty or undecodable audio, non-finite samples, malformed multipart",
        401: "missing or wrong API key (when KWS_API_KEY is set)",
        408: "the request head or body did not arrive in time",
        413: "upload too large",
        415: "not an audio file",
        422: "bad parameters; audio too long, too short, or with an unsupported rate or channel count",
        503: "overloaded (see Retry-After) or not ready",
    }.items()
}


# -- middleware --------------------------------------------------------------------------------


class BodyRejected(Exception):
    """The guard stopped reading the body (too large, or too slow); ``error`` is the answer."""

    def __init__(self, error: ServiceError) -> None:
        super().__init__(error.message)
        self.error = error


class RequestGuard:
    """Request id, access log, and the body-size and body-time limits enforced while the body is read.

    A declared Content-Length over the limit is refused before reading; a body without one
    (chunked) is counted as it streams and refused as soon as it passes the limit. The whole body
    must arrive within ``body_timeout`` seconds (408 otherwise), so a client trickling bytes
    (slow loris) cannot hold a request open.
    """

    def __init__(self, app: ASGIApp, limit_for_path, stats: ServiceStats, body_timeout: float = 30.0) -> None:
        self.app, self.limit_for_path, self.stats, self.body_timeout = app, limit_for_path, stats, body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        request_id = headers.get("x-request-id", "")[:64] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status_holder = {"status": 500, "started": False}
        limit = self.limit_for_path(scope["path"])

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"], status_holder["started"] = message["status"], True
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        received, body_complete = 0, False
        too_large = ServiceError(413, "upload_too_large", f"the request body exceeds the {limit} byte limit")
        deadline = asyncio.get_running_loop().time() + self.body_timeout

        def reject(error: ServiceError) -> BodyRejected:
            scope["state"]["body_error"] = error  # the app's error handlers answer with this
            return BodyRejected(error)

        async def receive_wrapper() -> Message:
            nonlocal received, body_complete
            if body_complete:  # e.g. a disconnect listener: no deadline once the body is in
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):  # no task per chunk, unlike wait_for
                    message = await receive()
            except TimeoutError:
                raise reject(ServiceError(408, "body_timeout", f"the request body did not arrive within "
                                                               f"{self.body_timeout:g} s")) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_complete = not message.get("more_body", False)
                if limit is not None and received > limit:
                    raise reject(too_large)
            return message

        try:
            declared = headers.get("content-length")
            if limit is not None and declared is not None and declared.isdigit() and int(declared) > limit:
                raise reject(too_large)
            await self.app(scope, receive_wrapper, send_wrapper)
        except BodyRejected as rejected:
            if status_holder["started"]:
                raise
            response = JSONResponse(rejected.error.body(), status_code=rejected.error.status, headers={"connection": "close"})
            await response(scope, receive, send_wrapper)
        finally:
            elapsed = 1000 * (time.perf_counter() - started)
            path = scope["path"]
            if path.startswith("/v1/recognize"):
                self.stats.record_request(path, status_holder["status"])
            access_logger.info("%s %s %s %d %.1fms", request_id, scope["method"], path, status_holder["status"], elapsed,
                               extra={"request_id": request_id, "status": status_holder["status"], "duration_ms": elapsed})


# -- application --------------------------------------------------------------------------------


class ServiceState:
    """What the lifespan creates: the model, the batcher, statistics and readiness."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stats = ServiceStats()
        self.model: KeywordModel | None = None
        self.batcher: MicroBatcher | None = None
        self.ready = False
        self.preprocess: Any = None

    @property
    def limits(self) -> AudioLimits:
        assert self.model is not None
        s = self.settings
        return AudioLimits(self.model.features.sample_rate, s.min_audio_seconds, s.max_audio_seconds, s.max_channels)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    state = ServiceState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from concurrent.futures import ThreadPoolExecutor

        from threadpoolctl import threadpool_limits

        # numpy's BLAS gets one thread per caller: the service already runs requests in parallel
        # (preprocessing threads, the ONNX session), and OpenBLAS's own spinning pool on top of them
        # oversubscribed the cores: features took 11 ms instead of 0.7 and throughput collapsed under overload.
        threadpool_limits(limits=1, user_api="blas")

        state.model = KeywordModel.load(settings.model_path, settings.intra_op_threads, settings.inter_op_threads)
        state.preprocess = ThreadPoolExecutor(settings.preprocess_threads, thread_name_prefix="preprocess")
        state.batcher = MicroBatcher(state.model.run, settings.max_batch_size, settings.max_wait_ms, settings.max_queue)
        state.batcher.start()
        # Warm up in the background: /healthz answers at once, /readyz only once the pipeline is warm.
        warming = asyncio.get_running_loop().create_task(warm_up(state), name="warm-up")
        try:
            yield
        finally:
            state.ready = False
            warming.cancel()
            await state.batcher.stop()
            state.preprocess.shutdown(wait=True)

    app = FastAPI(
        title="Delay-SNN keyword recognition",
        version="1.0.0",
        description="Keyword spotting with a spiking neural network whose synaptic delays were learned (DCLS), "
                    "served from a fixed-delay ONNX graph.",
        lifespan=lifespan,
    )
    app.state.service = state

    def body_limit(path: str) -> int | None:
        if path == "/v1/recognize":
            return settings.max_upload_bytes + MULTIPART_OVERHEAD
        if path == "/v1/recognize/batch":
            return settings.max_upload_bytes * settings.max_batch_files + MULTIPART_OVERHEAD
        return MULTIPART_OVERHEAD

    # Uploads stay in memory (the guard already bounds every body): no request data reaches the filesystem,
    # and the service runs on a read-only root filesystem. Starlette would spool parts over 1 MB to /tmp.
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, body_limit("/v1/recognize/batch"))
    add_api_key_guard(app, settings)  # inside the request guard, so 401s are logged and counted
    app.add_middleware(RequestGuard, limit_for_path=body_limit, stats=state.stats,
                       body_timeout=settings.body_read_timeout_seconds)
    add_cors(app, settings)  # outermost: preflights need no key, and errors carry the CORS headers
    install_error_handlers(app)
    add_routes(app, state)
    add_stream_routes(app, state)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.get("/", include_in_schema=False)(lambda: FileResponse(STATIC_DIR / "index.html"))
    return app


async def warm_up(state: ServiceState) -> None:
    """One pass through decode, features and the model, so the first client does not pay for lazy imports."""
    import io

    import soundfile

    assert state.model is not None
    rate = state.model.features.sample_rate
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(rate, dtype=np.float32), rate, format="WAV")
    for _ in range(2):
        await recognize_bytes(state, buffer.getvalue(), "audio/wav", top_k=1, record=False)
    state.batcher.batch_sizes.clear()  # warm-up passes are not traffic
    state.ready = True
    logger.info("ready: model %s version %s from %s", state.model.name, state.model.version, state.settings.model_path)


def body_rejected(request: Request) -> JSONResponse | None:
    """413/408 when the guard stopped the body mid-stream (the body parser then fails with its own error)."""
    error = request.scope.get("state", {}).get("body_error")
    if error is None:
        return None
    return JSONResponse(error.body(), status_code=error.status, headers={"connection": "close"})


def multipart_error(error: StarletteHTTPException) -> ServiceError | None:
    """The form parser's refusals (too many parts, no boundary, broken framing), with their own codes."""
    if not isinstance(error.__context__, MultiPartException):
        return None
    if str(error.detail).startswith("Too many"):
        return ServiceError(422, "too_many_parts", str(error.detail))
    return ServiceError(400, "malformed_multipart", str(error.detail))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_: Request, error: ServiceError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        if (rejected := body_rejected(request)) is not None:
            return rejected
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p not in ('body', 'query'))}: {e['msg']}" for e in error.errors()
        )
        return JSONResponse(ServiceError(422, "invalid_request", problems or "invalid request").body(), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if (rejected := body_rejected(request)) is not None:
            return rejected
        if (refused := multipart_error(error)) is not None:
            return JSONResponse(refused.body(), status_code=refused.status)
        codes = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}
        return JSONResponse(ServiceError(error.status_code, codes.get(error.status_code, "http_error"), str(error.detail)).body(),
                            status_code=error.status_code, headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        if (rejected := body_rejected(request)) is not None:
            return rejected
        logger.exception("unexpected error")
        return JSONResponse(ServiceError(500, "internal_error", "internal error").body(), status_code=500)


def overloaded(error: Overloaded) -> ServiceError:
    return ServiceError(503, "overloaded", f"the service is at capacity: {error}", {"Retry-After": "1"})


async def recognize_bytes(
    state: ServiceState, data: bytes, content_type: str | None, top_k: int, record: bool = True, admitted: bool = False
) -> Recognition:
    """Decode, features, model. ``admitted`` for the files of a batch that was admitted as a whole."""
    assert state.model is not None and state.batcher is not None
    model = state.model
    loop = asyncio.get_running_loop()
    started = time.perf_counter()

    def prepare() -> tuple[Any, np.ndarray, float, float]:  # one thread hop for both CPU stages
        audio = decode_audio(data, state.limits, content_type)
        decoded = time.perf_counter()
        return audio, model.windows(audio.samples, state.settings.window_hop_seconds), decoded, time.perf_counter()

    try:
        with state.batcher.incoming(cost=0 if admitted else 1):  # admission: refused at once when the backlog is full
            audio, features, decoded, featured = await loop.run_in_executor(state.preprocess, prepare)
        result = await state.batcher.submit(features, shed=not admitted)
    except Overloaded as error:
        raise overloaded(error) from error
    if record:
        state.stats.record_batch(result.batch_size)
    window = model.best_window(result.scores)
    scores = result.scores[window]
    order = np.argsort(scores)[::-1][:top_k]
    total = 1000 * (time.perf_counter() - started)
    latency = {"decode": 1000 * (decoded - started), "features": 1000 * (featured - decoded), "queue": result.queue_ms,
               "inference": result.inference_ms, "total": total}
    if record:
        state.stats.record_latency(latency)
    return Recognition(
        label=model.labels[order[0]], score=float(scores[order[0]]),
        top_k=[LabelScore(label=model.labels[i], score=float(scores[i])) for i in order],
        audio=AudioInfo(duration_s=round(audio.duration_s, 4), sample_rate=audio.sample_rate, channels=audio.channels,
                        format=audio.format),
        latency_ms=Latency(**{k: round(v, 3) for k, v in latency.items()}),
        model=ModelRef(name=model.name, version=model.version),
        window_start_s=round(window * state.settings.window_hop_seconds, 3) if len(result.scores) > 1 else 0.0,
    )


def add_routes(app: FastAPI, state: ServiceState) -> None:
    # Dependencies are async on purpose: FastAPI runs plain `def` dependencies in a worker thread, two
    # thread hops per request that, under load, compete with the event loop for the GIL.
    async def ready_state() -> ServiceState:
        if not state.ready or state.model is None:
            raise ServiceError(503, "not_ready", "the model is loading or the service is shutting down", {"Retry-After": "1"})
        return state

    Ready = Annotated[ServiceState, Depends(ready_state)]

    async def top_k_param(top_k: Annotated[int, Query(ge=1, description="how many labels to return (1..number of labels)")] = 3) -> int:
        if state.model is not None and top_k > len(state.model.labels):
            raise ServiceError(422, "invalid_top_k", f"top_k must be between 1 and {len(state.model.labels)}, got {top_k}")
        return top_k

    TopK = Annotated[int, Depends(top_k_param)]

    async def read_upload(upload: UploadFile) -> bytes:
        data = await upload.read(state.settings.max_upload_bytes + 1)
        if len(data) > state.settings.max_upload_bytes:
            raise ServiceError(413, "upload_too_large", f"the file exceeds the {state.settings.max_upload_bytes} byte limit")
        return data

    @app.post("/v1/recognize", response_model=Recognition, responses=ERROR_RESPONSES, tags=["recognition"])
    async def recognize(service: Ready, top_k: TopK, request: Request,
                        file: Annotated[UploadFile, File(description="audio: WAV, FLAC, OGG, MP3, WebM/Opus, M4A")]):
        """Recognise the keyword in one uploaded clip (longer clips: the most confident window)."""
        if len((await request.form()).getlist("file")) > 1:  # the parsed form is cached: no second read
            raise ServiceError(422, "duplicate_field", "several `file` fields; send one (or use /v1/recognize/batch)")
        return await recognize_bytes(service, await read_upload(file), file.content_type, top_k)

    @app.post("/v1/recognize/batch", response_model=BatchResponse, responses=ERROR_RESPONSES, tags=["recognition"])
    async def recognize_batch(service: Ready, top_k: TopK,
                              files: Annotated[list[UploadFile], File(description="several audio files")]):
        """Recognise several clips; a file that fails gets an error object in its place."""
        if len(files) > service.settings.max_batch_files:
            raise ServiceError(422, "too_many_files", f"{len(files)} files; at most {service.settings.max_batch_files} per request")
        async def one(upload: UploadFile) -> BatchItem:
            try:
                result = await recognize_bytes(service, await read_upload(upload), upload.content_type, top_k,
                                               admitted=True)
                return BatchItem(filename=upload.filename, result=result)
            except ServiceError as error:
                return BatchItem(filename=upload.filename, error=ErrorDetail(code=error.code, message=error.message))

        try:  # a batch is admitted (or shed) as one request costing its file count; its files never shed each other
            with service.batcher.incoming(cost=len(files)):
                return BatchResponse(results=list(await asyncio.gather(*(one(f) for f in files))))
        except Overloaded as error:
            raise overloaded(error) from error

    @app.get("/v1/models", tags=["model"])
    async def models(service: Ready) -> dict:
        """Labels, feature parameters and model metadata, read from the ONNX file."""
        model = service.model
        metadata = {}
        for key, value in model.metadata.items():
            try:
                metadata[key] = json.loads(value)
            except ValueError:
                metadata[key] = value
        return {"name": model.name, "version": model.version, "path": str(model.path), "labels": model.labels,
                "keywords": model.keywords,
                "features": model.features.to_dict(), "metadata": metadata}

    @app.get("/v1/stats", tags=["operations"])
    async def stats() -> dict:
        """Requests, errors by status, latency percentiles per stage, throughput, queue depth, batch sizes."""
        batcher = state.batcher
        return state.stats.snapshot(batcher.depth if batcher else 0, batcher.batch_sizes if batcher else {})

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses={503: {"model": ErrorBody}})
    async def readyz(service: Ready) -> dict:
        """The model is loaded and warmed up (503 before that and during shutdown)."""
        return {"status": "ready", "model": service.model.name}

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        """Prometheus text format."""
        depth = state.batcher.depth if state.batcher else 0
        return PlainTextResponse(state.stats.prometheus(depth), media_type="text/plain; version=0.0.4")
