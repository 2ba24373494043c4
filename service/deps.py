"""Dependencies of the routes (FastAPI's ``Annotated`` style): the service state, readiness, ``top_k``.

They are ``async`` on purpose: FastAPI runs plain ``def`` dependencies in a worker thread, two thread hops
per request that, under load, compete with the event loop for the GIL.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from service.batching import Admission
from service.errors import ServiceError
from service.state import ServiceState


async def service_state(request: Request) -> ServiceState:
    return request.app.state.service


State = Annotated[ServiceState, Depends(service_state)]


async def ready_state(state: State) -> ServiceState:
    if not state.ready or state.model is None:
        raise ServiceError(503, "not_ready", "the model is loading or the service is shutting down", {"Retry-After": "1"})
    return state


Ready = Annotated[ServiceState, Depends(ready_state)]


async def top_k_param(state: State, top_k: Annotated[
        int, Query(ge=1, description="how many labels to return (1..number of labels)")] = 3) -> int:
    if state.model is not None and top_k > len(state.model.labels):
        raise ServiceError(422, "invalid_top_k", f"top_k must be between 1 and {len(state.model.labels)}, got {top_k}")
    return top_k


TopK = Annotated[int, Depends(top_k_param)]


async def head_admission(request: Request) -> Admission | None:
    """The backlog place the request was admitted under from its head (service/middleware.py's LoadShedder)."""
    return request.scope.get("state", {}).get("admission")


Admitted = Annotated[Admission | None, Depends(head_admission)]
