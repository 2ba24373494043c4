"""The JSON shapes of API v1 (pydantic models: they validate the answers and make /docs accurate)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from model.vocabulary import SILENCE, UNKNOWN


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
    vad: float = Field(0.0, description="the speech check of a keyword answer (0 when none ran)")
    total: float


class ModelRef(BaseModel):
    name: str
    version: str


class Cost(BaseModel):
    """What the clip cost the spiking network: what a neuromorphic chip would pay, summed over its windows."""

    spikes_per_layer: list[int] = Field(description="spikes emitted by each hidden layer")
    synaptic_events: int | None = Field(description="spikes x the mean fan-out of their layer: synaptic deliveries "
                                                    "(null for a model whose metadata lacks its synapse counts)")


class Recognition(BaseModel):
    label: str = Field(description=f"the decision: a keyword only when its score clears that keyword's threshold (the "
                                   f"model's keyword_thresholds, GET /v1/models), else `{UNKNOWN}` (a word that is not a "
                                   f"keyword) or `{SILENCE}` (no speech), whichever scores higher")
    score: float = Field(description="the score of `label`: for a calibrated model (calibration_temperature in its "
                                     "metadata) about the chance that the top label is right")
    top_k: list[LabelScore] = Field(description="the raw scores of the answering window, highest first, thresholds "
                                                "not applied")
    audio: AudioInfo
    latency_ms: Latency
    model: ModelRef
    window_start_s: float = Field(0.0, description="start of the scored window (clips longer than one window)")
    speech: bool | None = Field(None, description="whether the VAD heard speech in the answering window: checked for "
                                                  "keyword answers (KWS_VERIFY_SPEECH); a keyword without speech is "
                                                  "answered with the silence label and speech false; null when nothing was checked")
    cost: Cost | None = Field(None, description="spikes and synaptic events of the windows scored "
                                                "(null for a graph without the spike_counts output)")


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
