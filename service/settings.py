"""Service settings from the environment (prefix ``KWS_``), overridable by ``kws-serve`` flags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.detector import StreamConfig

SHIPPED_MODEL = Path(__file__).resolve().parent / "models" / "kws10.onnx"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KWS_", protected_namespaces=())

    model_path: Path = Field(SHIPPED_MODEL, description="ONNX file written by kws-export (default: the shipped kws10 model)")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    max_upload_bytes: int = Field(5 * 1024 * 1024, ge=1024, description="largest accepted audio file")
    max_batch_files: int = Field(16, ge=1, description="most files in one /v1/recognize/batch request")
    min_audio_seconds: float = Field(0.1, gt=0)
    max_audio_seconds: float = Field(10.0, gt=0)
    window_hop_seconds: float = Field(0.25, gt=0, description="hop between model windows over clips longer than one window")
    verify_speech: bool = Field(True, description="a keyword answer needs speech in its window (Silero VAD, "
                                                  "service/vad.py); without, the answer is the silence label")
    max_channels: int = Field(8, ge=1)
    body_read_timeout_seconds: float = Field(
        30.0, gt=0, description="a request body must arrive within this long (slow-loris uploads get 408)")
    header_read_timeout_seconds: float = Field(
        10.0, gt=0, description="a request line and headers must arrive within this long (else 408 and the connection closes)")

    max_batch_size: int = Field(16, ge=1, description="most model windows in one forward pass")
    max_wait_ms: float = Field(2.0, ge=0, description="how long a forward pass waits to fill its batch")
    max_queue: int = Field(64, ge=1, description="backlog (requests being decoded + windows waiting for the model) "
                                                 "beyond which requests are shed with 503 + Retry-After")
    intra_op_threads: int = Field(2, ge=1)
    inter_op_threads: int = Field(1, ge=1)
    preprocess_threads: int = Field(4, ge=1, description="threads for decoding and features, off the event loop")

    # WS /v1/stream (service/routes/stream.py); the defaults are the detector's (service/detector.py).
    stream_hop_seconds: float = Field(StreamConfig.hop_s, gt=0, le=1.0, description="hop between the scored 1-s windows of a stream")
    stream_smoothing_hops: int = Field(StreamConfig.smoothing_hops, ge=1, description="moving average of the scores over this many hops")
    stream_threshold: float = Field(StreamConfig.threshold, ge=0, le=1,
                                    description="smoothed keyword score that opens a detection, for keywords the model "
                                                "has no stream threshold of its own for (stream_keyword_thresholds)")
    stream_vad: bool = Field(False, description="score only the stream windows in which the VAD (Silero) hears speech; "
                                                "off: in noisy streams it misses a third of the keywords (docs/recognition.md#streaming)")
    stream_vad_threshold: float = Field(0.5, ge=0, le=1, description="VAD speech probability that counts as speech")
    stream_refractory_seconds: float = Field(StreamConfig.refractory_s, ge=0, description="no new detection this long after one ends")
    stream_max_seconds: float = Field(600.0, gt=0, description="longest stream (seconds of audio); then close 4408")
    stream_max_message_bytes: int = Field(1024 * 1024, ge=1024, description="largest binary message; more closes 1009")
    stream_max_pending_seconds: float = Field(10.0, gt=0, description="most audio one message may add; more closes 1009")
    stream_idle_seconds: float = Field(30.0, gt=0, description="a stream silent this long is closed (4408)")
    max_streams: int = Field(16, ge=1, description="concurrent streams; more are closed with 1013")

    # Security (service/security.py): both off by default.
    api_key: SecretStr = Field(SecretStr(""), description="required on /v1/* as X-API-Key or Authorization: Bearer (empty: no key)")
    cors_origins: str = Field("", description="origins allowed by CORS: comma list or JSON list (empty: CORS off)")

    @field_validator("cors_origins")
    @classmethod
    def _origins_parse(cls, value: str) -> str:
        parse_origins(value)  # a malformed list fails at start-up, as a settings error
        return value

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    json_logs: bool = False


def parse_origins(value: str) -> list[str]:
    """``KWS_CORS_ORIGINS``: ``https://a.example,https://b.example`` or ``["https://a.example"]``."""
    value = value.strip()
    if value.startswith("["):
        try:
            origins = json.loads(value)
        except ValueError as error:
            raise ValueError(f"not a JSON list: {error}") from None
        if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
            raise ValueError("must be a JSON list of strings")
        return [o.strip() for o in origins if o.strip()]
    return [o.strip() for o in value.split(",") if o.strip()]
