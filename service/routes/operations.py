"""Operations endpoints: ``GET /v1/models``, ``/v1/stats``, ``/healthz``, ``/readyz``, ``/metrics``."""

from __future__ import annotations

import json

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4

from service.deps import Ready, State
from service.errors import ServiceError
from service.schemas import ErrorBody

router = APIRouter()


@router.get("/v1/models", tags=["model"])
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
            "keywords": model.keywords, "features": model.features.to_dict(), "metadata": metadata}


@router.get("/v1/stats", tags=["operations"])
async def stats(state: State) -> dict:
    """Requests, errors by status, latency percentiles per stage, throughput, queue depth, open streams, batch sizes."""
    batcher = state.batcher
    return state.stats.snapshot(batcher.depth if batcher else 0, batcher.batch_sizes if batcher else {},
                                state.open_streams)


@router.get("/healthz", tags=["operations"], responses={503: {"model": ErrorBody}})
async def healthz(state: State) -> dict:
    """The process is alive (503 once it knows it can never serve, e.g. its warm-up failed: restart it)."""
    if state.failure is not None:
        raise ServiceError(503, "unhealthy", state.failure)
    return {"status": "ok"}


@router.get("/readyz", tags=["operations"], responses={503: {"model": ErrorBody}})
async def readyz(service: Ready) -> dict:
    """The model is loaded and warmed up (503 before that and during shutdown)."""
    return {"status": "ready", "model": service.model.name}


@router.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
async def metrics(state: State) -> Response:
    """Prometheus text format (rendered by prometheus_client)."""
    depth = state.batcher.depth if state.batcher else 0
    return Response(state.stats.prometheus(depth, state.open_streams), media_type=CONTENT_TYPE_PLAIN_0_0_4)
