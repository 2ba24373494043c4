"""``POST /v1/recognize`` and ``POST /v1/recognize/batch``: uploaded clips → recognitions."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Request, UploadFile

from service.batching import Overloaded
from service.deps import Admitted, Ready, TopK
from service.errors import ServiceError, overloaded
from service.recognizer import recognize_bytes
from service.schemas import ERROR_RESPONSES, BatchItem, BatchResponse, ErrorDetail, Recognition
from service.state import ServiceState

router = APIRouter(tags=["recognition"])


async def read_upload(state: ServiceState, upload: UploadFile) -> bytes:
    limit = state.settings.max_upload_bytes
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ServiceError(413, "upload_too_large", f"the file exceeds the {limit} byte limit")
    return data


@router.post("/v1/recognize", response_model=Recognition, responses=ERROR_RESPONSES)
async def recognize(service: Ready, top_k: TopK, admission: Admitted, request: Request,
                    file: Annotated[UploadFile, File(description="audio: WAV, FLAC, OGG, MP3, WebM/Opus, M4A")]):
    """Recognise the keyword in one uploaded clip (longer clips: the most confident window)."""
    if len((await request.form()).getlist("file")) > 1:  # the parsed form is cached: no second read
        raise ServiceError(422, "duplicate_field", "several `file` fields; send one (or use /v1/recognize/batch)")
    return await recognize_bytes(service, await read_upload(service, file), file.content_type, top_k,
                                 admission=admission)


@router.post("/v1/recognize/batch", response_model=BatchResponse, responses=ERROR_RESPONSES)
async def recognize_batch(service: Ready, top_k: TopK, admission: Admitted,
                          files: Annotated[list[UploadFile], File(description="several audio files")]):
    """Recognise several clips; a file that fails gets an error object in its place."""
    if len(files) > service.settings.max_batch_files:
        raise ServiceError(422, "too_many_files", f"{len(files)} files; at most {service.settings.max_batch_files} per request")
    # A batch is admitted (or shed) as one request costing its file count; its files never shed each other.
    try:
        if admission is None:
            admission = service.batcher.admit(len(files))
        else:
            admission.resize(len(files))
    except Overloaded as error:
        raise overloaded(error) from error

    async def one(upload: UploadFile) -> BatchItem:
        try:
            data = await read_upload(service, upload)
        except ServiceError as error:
            admission.hand_over(1)
            return BatchItem(filename=upload.filename, error=ErrorDetail(code=error.code, message=error.message))
        try:
            result = await recognize_bytes(service, data, upload.content_type, top_k, admission=admission)
            return BatchItem(filename=upload.filename, result=result)
        except ServiceError as error:
            return BatchItem(filename=upload.filename, error=ErrorDetail(code=error.code, message=error.message))

    try:
        return BatchResponse(results=list(await asyncio.gather(*(one(f) for f in files))))
    finally:
        admission.release()
