"""``WS /v1/stream``: keyword spotting on a live stream; the wire protocol is in docs/api.md ("Streaming").

One connection is a pipeline: decoder (service/stream_decoders.py) → VAD (service/vad.py: windows without
speech are not scored) → detector (service/detector.py) → the shared micro-batcher → messages. PCM streams prepare their windows on the app's preprocessing
threads; a WebM/Ogg stream's ``prepare`` mostly waits for its demuxer thread, so those run on a pool of
their own (``ServiceState.stream_pool``): waiting streams cannot starve the decoding of uploads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from model.vocabulary import SILENCE
from service.detector import Detection, StreamConfig, StreamDetector, Window, window_features
from service.state import ServiceState
from service.stream_decoders import ContainerDecoder, Pcm16Decoder, TooMuchAudio, UndecodableStream
from service.vad import SUPPORTED_RATES as VAD_RATES
from service.vad import SpeechGate

logger = logging.getLogger("kws.stream")
router = APIRouter()

CLOSE_NORMAL, CLOSE_UNSUPPORTED, CLOSE_TOO_BIG, CLOSE_INTERNAL, CLOSE_TRY_LATER = 1000, 1003, 1009, 1011, 1013
CLOSE_INVALID_PARAMS, CLOSE_TIMEOUT = 4400, 4408
WALL_CLOCK_FACTOR = 2.0  # a stream may stay open twice its audio limit (KWS_STREAM_MAX_SECONDS) in wall-clock time
STREAM_FORMATS = ("pcm16", "webm", "ogg")
PCM16_RATES = (8_000, 48_000)


class StreamClosed(Exception):
    """Ends a stream with an error message and a close code."""

    def __init__(self, close_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.close_code, self.code, self.message = close_code, code, message


@dataclass
class StreamParams:
    format: str
    sample_rate: int
    threshold: float | None  # None: the model's per-keyword thresholds (and the setting for the others)
    top_k: int


def parse_stream_params(query: dict[str, str], default_threshold: float | None, label_count: int) -> StreamParams:
    """The query parameters, or :class:`StreamClosed` (4400) naming the bad one."""

    def invalid(message: str) -> StreamClosed:
        return StreamClosed(CLOSE_INVALID_PARAMS, "invalid_parameters", message)

    def number(name: str, kind: type, default: Any) -> Any:
        raw = query.get(name)
        if raw is None:
            return default
        try:
            value = kind(raw)
        except ValueError:
            raise invalid(f"{name} must be {'an integer' if kind is int else 'a number'}, got {raw!r}") from None
        if not math.isfinite(value):
            raise invalid(f"{name} must be finite, got {raw!r}")
        return value

    fmt = query.get("format", "pcm16")
    if fmt not in STREAM_FORMATS:
        raise invalid(f"format must be one of {', '.join(STREAM_FORMATS)}, got {fmt!r}")
    rate = number("sample_rate", int, 16_000)
    if not PCM16_RATES[0] <= rate <= PCM16_RATES[1]:
        raise invalid(f"sample_rate must be between {PCM16_RATES[0]} and {PCM16_RATES[1]} Hz, got {rate}")
    threshold = number("threshold", float, default_threshold)
    if threshold is not None and not 0 <= threshold <= 1:
        raise invalid(f"threshold must be between 0 and 1, got {threshold}")
    top_k = number("top_k", int, 3)
    if not 1 <= top_k <= label_count:
        raise invalid(f"top_k must be between 1 and {label_count}, got {top_k}")
    return StreamParams(fmt, rate, threshold, top_k)


@dataclass
class _Stream:
    """One connection's pipeline: decoder → detector → batcher → messages."""

    state: ServiceState
    params: StreamParams
    decoder: Pcm16Decoder | ContainerDecoder
    detector: StreamDetector
    max_samples: int
    max_pending_samples: int
    gate: SpeechGate | None = None  # None: every window is scored
    detections: int = 0
    windows_seen: int = 0
    windows_scored: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)

    def prepare(self, data: bytes | None) -> tuple[list[Window], np.ndarray | None, bool, float]:
        """Decode a message (``None``: end of stream) into windows, and the features of those that hold speech
        (all of them without a VAD); runs in a worker thread."""
        started = time.perf_counter()
        samples = self.decoder.feed(data) if data is not None else self.decoder.finish()
        if len(samples) > self.max_pending_samples:
            raise TooMuchAudio(f"one message holds {len(samples) / self.detector.config.sample_rate:.1f} s of audio; "
                               f"at most {self.max_pending_samples / self.detector.config.sample_rate:g} s may be pending")
        room = self.max_samples - self.detector.samples_seen
        over_limit = len(samples) > room
        kept = samples[:room]
        if self.gate is not None:
            self.gate.push(kept)
        windows = self.detector.push(kept)
        if data is None or over_limit:
            windows += self.detector.flush()
        speech = [w for w in windows if self.has_speech(w)]
        features = window_features(speech, self.state.model.features) if speech else None
        return windows, features, over_limit, 1000 * (time.perf_counter() - started)

    def has_speech(self, window: Window) -> bool:
        return self.gate is None or self.gate.speech_between(window.t_end - self.detector.config.window_s, window.t_end)

    async def score(self, windows: list[Window], features: np.ndarray | None, features_ms: float, received: float) -> None:
        """The speech windows through the shared batcher (in chunks a forward pass takes), then one ``scores``
        message per window in order — ``speech: false`` and no scores for those the VAD skipped, which the
        detector sees as silence — and the detections."""
        model, batcher = self.state.model, self.state.batcher
        chunk = self.state.settings.max_batch_size
        scored: list[np.ndarray] = []
        latency = {"features": round(features_ms, 3), "queue": 0.0, "inference": 0.0, "total": 0.0}
        count = 0 if features is None else len(features)
        for first in range(0, count, chunk):
            # An open stream was admitted by KWS_MAX_STREAMS and is never shed mid-utterance by a queue spike;
            # its own back-pressure (one message scored before the next is read) bounds what it queues.
            result = await batcher.submit(features[first : first + chunk], shed=False)
            latency["queue"] = round(latency["queue"] + result.queue_ms, 3)
            latency["inference"] = round(latency["inference"] + result.inference_ms, 3)
            scored.extend(result.scores)
        latency["total"] = round(1000 * (time.perf_counter() - received), 3)
        silence = np.zeros(len(model.labels))
        silence[model.labels.index(SILENCE)] = 1.0
        speech = iter(scored)
        for window in windows:
            self.windows_seen += 1
            message: dict[str, Any] = {"type": "scores", "t_end": round(window.t_end, 3), "latency_ms": latency}
            if self.has_speech(window):
                scores = next(speech)
                self.windows_scored += 1
                order = np.argsort(scores)[::-1][: self.params.top_k]
                message |= {"speech": True,
                            "top_k": [{"label": model.labels[i], "score": round(float(scores[i]), 4)} for i in order]}
            else:
                scores = silence
                message |= {"speech": False, "top_k": []}
            self.messages.append(message)
            self.emit(self.detector.observe(window, scores))

    def emit(self, detections: list[Detection]) -> None:
        self.detections += len(detections)
        self.messages.extend(d.message() for d in detections)



def executor_for(state: ServiceState, params: StreamParams) -> ThreadPoolExecutor:
    return state.preprocess if params.format == "pcm16" else state.stream_pool


async def send_all(websocket: WebSocket, stream: _Stream) -> None:
    messages, stream.messages = stream.messages, []
    for message in messages:
        await websocket.send_text(json.dumps(message))


async def close_with(websocket: WebSocket, close_code: int, code: str, message: str) -> None:
    try:
        await websocket.send_text(json.dumps({"type": "error", "code": code, "message": message}))
        await websocket.close(close_code, message[:120])  # a close reason is at most 123 bytes
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client is gone already


async def next_message(state: ServiceState, websocket: WebSocket, closes_at: float) -> bytes | None:
    """The next audio message, or ``None`` for ``{"type": "end"}``; anything else ends the stream.

    ``closes_at`` (monotonic time) bounds how long a stream may stay open at all, so a client trickling
    a few samples before each idle timeout cannot hold one of the ``max_streams`` slots for ever.
    """
    settings = state.settings
    left = closes_at - time.monotonic()
    try:
        message = await asyncio.wait_for(websocket.receive(), min(settings.stream_idle_seconds, max(0.0, left)))
    except TimeoutError:
        if left <= settings.stream_idle_seconds:
            raise StreamClosed(CLOSE_TIMEOUT, "max_duration", f"the stream was open for its wall-clock limit of "
                               f"{WALL_CLOCK_FACTOR * settings.stream_max_seconds:g} s") from None
        raise StreamClosed(CLOSE_TIMEOUT, "idle_timeout", f"no message for {settings.stream_idle_seconds:g} s") from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    data = message.get("bytes")
    if data is not None:
        if len(data) > settings.stream_max_message_bytes:
            raise StreamClosed(CLOSE_TOO_BIG, "message_too_big",
                               f"a message of {len(data)} bytes; at most {settings.stream_max_message_bytes}")
        return data
    try:
        control = json.loads(message.get("text") or "")
    except ValueError:
        control = None
    if not isinstance(control, dict) or control.get("type") != "end":
        raise StreamClosed(CLOSE_UNSUPPORTED, "unsupported_data",
                           'text messages must be the JSON control message {"type": "end"}')
    return None


@router.websocket("/v1/stream")
async def stream_endpoint(websocket: WebSocket) -> None:
    """Streams share the app's model and batcher; ``KWS_MAX_STREAMS`` bounds how many are open."""
    state: ServiceState = websocket.app.state.service
    await websocket.accept()
    settings = state.settings
    if not state.ready or state.model is None:
        await close_with(websocket, CLOSE_TRY_LATER, "not_ready", "the model is loading or the service is shutting down")
        return
    if state.open_streams >= settings.max_streams:
        await close_with(websocket, CLOSE_TRY_LATER, "too_many_streams",
                         f"{state.open_streams} streams are open (limit {settings.max_streams}); try again later")
        return
    model = state.model
    try:
        params = parse_stream_params(dict(websocket.query_params), None, len(model.labels))
    except StreamClosed as closing:
        await close_with(websocket, closing.close_code, closing.code, closing.message)
        return
    rate = model.features.sample_rate
    # A threshold in the query applies to every keyword; else the model's own, the setting for the rest.
    config = StreamConfig(rate, model.features.clip_seconds, settings.stream_hop_seconds,
                          settings.stream_smoothing_hops,
                          settings.stream_threshold if params.threshold is None else params.threshold,
                          settings.stream_refractory_seconds, model.stream_thresholds if params.threshold is None else {})
    use_vad = settings.stream_vad and rate in VAD_RATES
    loop = asyncio.get_running_loop()
    state.open_streams += 1
    decoder: Pcm16Decoder | ContainerDecoder | None = None
    try:
        max_pending = int(settings.stream_max_pending_seconds * rate)
        decoder = Pcm16Decoder(params.sample_rate, rate) if params.format == "pcm16" else \
            ContainerDecoder(params.format, rate, max_pending)
        stream = _Stream(state, params, decoder, StreamDetector(model.labels, config, model.keywords),
                         int(settings.stream_max_seconds * rate), max_pending,
                         SpeechGate(rate, settings.stream_vad_threshold) if use_vad else None)
        await websocket.send_text(json.dumps({
            "type": "ready", "sample_rate": rate, "window_s": config.window_s, "hop_s": config.hop_s,
            "threshold": config.threshold, "keyword_thresholds": dict(config.keyword_thresholds), "vad": use_vad,
            "labels": model.labels, "keywords": model.keywords, "max_duration_s": settings.stream_max_seconds}))
        closes_at = time.monotonic() + WALL_CLOCK_FACTOR * settings.stream_max_seconds
        while True:
            data = await next_message(state, websocket, closes_at)  # back-pressure: read only once the last one is scored
            received = time.perf_counter()
            try:
                windows, features, over_limit, features_ms = await loop.run_in_executor(
                    executor_for(state, params), stream.prepare, data)
            except UndecodableStream as error:
                raise StreamClosed(CLOSE_UNSUPPORTED, "undecodable_audio", str(error)) from error
            except TooMuchAudio as error:
                raise StreamClosed(CLOSE_TOO_BIG, "message_too_big", str(error)) from error
            if windows:
                await stream.score(windows, features, features_ms, received)
            if data is None or over_limit:
                stream.emit(stream.detector.finish())
            await send_all(websocket, stream)
            if over_limit:
                raise StreamClosed(CLOSE_TIMEOUT, "max_duration",
                                   f"the stream reached its {settings.stream_max_seconds:g} s limit")
            if data is None:
                await websocket.send_text(json.dumps({"type": "end", "duration_s": round(stream.detector.duration_s, 3),
                                                      "detections": stream.detections, "windows": stream.windows_seen,
                                                      "windows_scored": stream.windows_scored}))
                await websocket.close(CLOSE_NORMAL)
                return
    except StreamClosed as closing:
        await close_with(websocket, closing.close_code, closing.code, closing.message)
    except WebSocketDisconnect:
        pass
    except Exception:  # the client gets 1011, the log gets the traceback
        logger.exception("stream failed")
        await close_with(websocket, CLOSE_INTERNAL, "internal_error", "internal error")
    finally:
        state.open_streams -= 1
        if decoder is not None:
            decoder.close()
