"""Streaming keyword spotting: ``WS /v1/stream`` and the I/O-free detector behind it.

The first half is pure and shared with ``benchmarks/detection.py``: :class:`StreamDetector` cuts
the incoming samples into 1-s windows every hop, and its :class:`ScoreSmoother` turns the model's
per-window score vectors into detection events (moving average over a few hops, a threshold that
only keyword labels can cross, one event per utterance, a refractory period after each). The
decoders turn WebSocket messages into samples at the model rate: raw pcm16 at any rate (soxr's
streaming resampler), and WebM/Ogg chunks as MediaRecorder emits them (PyAV fed through a pipe, so
memory stays bounded by one message). The second half is the route, registered by
:func:`add_stream_routes`; the wire protocol is described in README.md ("Streaming").
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import WebSocket, WebSocketDisconnect

from model.features import FeatureConfig, log_mel
from service.inference import NON_KEYWORDS
from service.settings import Settings

if TYPE_CHECKING:  # app.py imports this module: annotations only
    from fastapi import FastAPI

    from service.app import ServiceState

logger = logging.getLogger("kws.stream")


# -- the detector (pure) -----------------------------------------------------------------------------


def _setting(name: str):
    return Settings.model_fields[name].default  # one definition of every default: service/settings.py


@dataclass(frozen=True)
class StreamConfig:
    sample_rate: int
    window_s: float = 1.0
    hop_s: float = _setting("stream_hop_seconds")
    smoothing_hops: int = _setting("stream_smoothing_hops")
    threshold: float = _setting("stream_threshold")
    refractory_s: float = _setting("stream_refractory_seconds")

    @property
    def window_samples(self) -> int:
        return round(self.window_s * self.sample_rate)

    @property
    def hop_samples(self) -> int:
        return max(1, round(self.hop_s * self.sample_rate))


@dataclass(frozen=True)
class Window:
    t_end: float  # where the window ends, in seconds of stream audio
    samples: np.ndarray


@dataclass(frozen=True)
class Detection:
    label: str
    score: float  # peak smoothed score while the event was open
    t_start: float
    t_end: float

    def message(self) -> dict[str, Any]:
        return {"type": "detection", "label": self.label, "score": round(self.score, 4),
                "t_start": round(self.t_start, 3), "t_end": round(self.t_end, 3)}


@dataclass
class _OpenEvent:
    label: int
    peak: float
    best_raw: float
    best_t_end: float


class ScoreSmoother:
    """Per-hop score vectors → detection events.

    The scores are averaged over the last ``smoothing_hops`` hops. An event opens when the top label of
    the average is a keyword scoring at least ``threshold`` (``_unknown_``/``_silence_`` never open one),
    and closes when that keyword's average falls below it; then no event opens for ``refractory_s``, so
    a word whose score wobbles around the threshold still gives one event. The event is placed on the
    window where the keyword's raw score peaked: the 1-s window that best holds the word.
    """

    def __init__(self, labels: Sequence[str], smoothing_hops: int, threshold: float, refractory_s: float,
                 window_s: float = 1.0) -> None:
        self.labels = list(labels)
        self.is_keyword = np.array([label not in NON_KEYWORDS for label in self.labels])
        self.threshold, self.refractory_s, self.window_s = threshold, refractory_s, window_s
        self._recent: deque[tuple[float, np.ndarray]] = deque(maxlen=max(1, smoothing_hops))
        self._open: _OpenEvent | None = None
        self._quiet_until = -math.inf
        self._last_t_end = 0.0

    def update(self, t_end: float, scores: np.ndarray) -> Detection | None:
        """Feed the scores of the window ending at ``t_end``; returns the event this hop closed, if any."""
        scores = np.asarray(scores, dtype=np.float64)
        self._recent.append((t_end, scores))
        self._last_t_end = t_end
        smoothed = np.mean([s for _, s in self._recent], axis=0)
        event = self._open
        if event is not None:
            if smoothed[event.label] >= self.threshold:
                event.peak = max(event.peak, float(smoothed[event.label]))
                if scores[event.label] > event.best_raw:
                    event.best_raw, event.best_t_end = float(scores[event.label]), t_end
                return None
            return self._close(t_end)
        top = int(smoothed.argmax())
        if self.is_keyword[top] and smoothed[top] >= self.threshold and t_end >= self._quiet_until:
            best_t_end, best_raw = max(((t, float(s[top])) for t, s in self._recent), key=lambda item: item[1])
            self._open = _OpenEvent(top, float(smoothed[top]), best_raw, best_t_end)
        return None

    def finish(self) -> Detection | None:
        """End of stream: the event still open, if any."""
        return self._close(self._last_t_end) if self._open is not None else None

    def _close(self, t_end: float) -> Detection:
        event, self._open = self._open, None
        assert event is not None
        self._quiet_until = t_end + self.refractory_s
        return Detection(self.labels[event.label], event.peak, max(0.0, event.best_t_end - self.window_s), event.best_t_end)


class StreamDetector:
    """Samples at the model rate in, windows out; the windows' scores in, detections out.

    Holds at most one window of audio. ``push`` returns the windows that became complete, one per hop;
    ``flush`` (end of stream) adds a last window ending at the final sample when the hops missed the
    tail, or a zero-padded one for a stream shorter than a window.
    """

    def __init__(self, labels: Sequence[str], config: StreamConfig) -> None:
        self.config = config
        self.smoother = ScoreSmoother(labels, config.smoothing_hops, config.threshold, config.refractory_s, config.window_s)
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = 0  # stream position (samples) of _buffer[0]
        self._next_end = config.window_samples  # stream position where the next window ends
        self._last_end = 0
        self.samples_seen = 0

    @property
    def duration_s(self) -> float:
        return self.samples_seen / self.config.sample_rate

    def push(self, samples: np.ndarray) -> list[Window]:
        self._buffer = np.concatenate([self._buffer, np.asarray(samples, dtype=np.float32)])
        self.samples_seen += len(samples)
        windows = []
        size, hop = self.config.window_samples, self.config.hop_samples
        while self._next_end <= self.samples_seen:
            start = self._next_end - size - self._buffer_start
            windows.append(self._window(self._buffer[start : start + size], self._next_end))
            self._next_end += hop
        self._buffer = self._buffer[-size:]  # the next window, and the last one flush may need
        self._buffer_start = self.samples_seen - len(self._buffer)
        return windows

    def flush(self) -> list[Window]:
        if self.samples_seen == 0 or self._last_end == self.samples_seen:
            return []
        tail = self._buffer[-self.config.window_samples :]
        padded = np.pad(tail, (self.config.window_samples - len(tail), 0))
        return [self._window(padded, self.samples_seen)]

    def observe(self, window: Window, scores: np.ndarray) -> list[Detection]:
        detection = self.smoother.update(window.t_end, scores)
        return [detection] if detection is not None else []

    def finish(self) -> list[Detection]:
        detection = self.smoother.finish()
        return [detection] if detection is not None else []

    def _window(self, samples: np.ndarray, end: int) -> Window:
        self._last_end = end
        return Window(end / self.config.sample_rate, samples)


def window_features(windows: Sequence[Window], config: FeatureConfig) -> np.ndarray:
    """``(windows, n_mels, frames)`` model input, the same front end as every other path."""
    return log_mel(np.stack([w.samples for w in windows]), config)


# -- decoders: WebSocket messages → samples at the model rate -----------------------------------------


class UndecodableStream(Exception):
    """The bytes are not audio in the announced format."""


class TooMuchAudio(Exception):
    """One message decodes to more audio than may be pending at once."""


class Pcm16Decoder:
    """Raw little-endian signed 16-bit mono; an odd trailing byte waits for the next message."""

    def __init__(self, sample_rate: int, target_rate: int) -> None:
        import soxr

        self._carry = b""
        self._resampler = soxr.ResampleStream(sample_rate, target_rate, 1, dtype="float32", quality="HQ") \
            if sample_rate != target_rate else None

    def feed(self, data: bytes) -> np.ndarray:
        data = self._carry + data
        usable = len(data) - len(data) % 2
        self._carry = data[usable:]
        samples = np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0
        return self._resampler.resample_chunk(samples) if self._resampler is not None else samples

    def finish(self) -> np.ndarray:
        if self._resampler is None:
            return np.zeros(0, np.float32)
        return self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)

    def close(self) -> None:
        pass


class _Pipe:
    """A blocking file object between the WebSocket handler and FFmpeg's demuxer thread.

    ``read`` blocks until bytes arrive or the pipe closes; ``starved`` says the demuxer has taken
    everything and waits for more, which is how :meth:`ContainerDecoder.feed` knows a message is done.
    """

    def __init__(self) -> None:
        self.pending = bytearray()
        self.closed = False
        self.starved = False
        self.condition = threading.Condition()

    def read(self, size: int = -1) -> bytes:
        with self.condition:
            while not self.pending and not self.closed:
                self.starved = True
                self.condition.notify_all()
                self.condition.wait()
            self.starved = False
            size = len(self.pending) if size < 0 else size
            chunk = bytes(self.pending[:size])
            del self.pending[:size]
            return chunk


class ContainerDecoder:
    """WebM/Opus or Ogg chunks (MediaRecorder's, concatenated they form one file) → mono samples.

    A demuxer thread reads the container through a :class:`_Pipe`; ``feed`` hands it one message
    and returns the samples decoded once it asks for more. Blocking: call it off the event loop.
    """

    def __init__(self, container_format: str, target_rate: int, max_pending_samples: int | None = None,
                 timeout_s: float = 10.0) -> None:
        self.container_format, self.target_rate, self.timeout_s = container_format, target_rate, timeout_s
        self.max_pending_samples = max_pending_samples
        self._pipe = _Pipe()
        self._decoded: list[np.ndarray] = []
        self._pending_samples = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._demux, name=f"{container_format}-decoder", daemon=True)
        self._thread.start()

    def _demux(self) -> None:
        import av

        try:
            # Tiny probe: Opus needs no probing (its header says it all), and a large probe would hold back
            # the first seconds of a live stream.
            with av.open(self._pipe, mode="r", format=self.container_format, buffer_size=4096,
                         options={"probesize": "32", "analyzeduration": "0"}, metadata_errors="ignore") as container:
                if not container.streams.audio:
                    raise UndecodableStream(f"the {self.container_format} stream has no audio track")
                resampler = av.AudioResampler(format="flt", layout="mono", rate=self.target_rate)
                for frame in container.decode(container.streams.audio[0]):
                    for out in resampler.resample(frame):
                        self._emit(out.to_ndarray().reshape(-1))
                for out in resampler.resample(None):
                    self._emit(out.to_ndarray().reshape(-1))
        except Exception as error:  # noqa: BLE001 - FFmpeg raises many error types for garbage input
            self._error = error
        finally:
            with self._pipe.condition:
                self._pipe.closed = True  # nothing reads any more: later feeds fail at once
                self._pipe.condition.notify_all()

    def _emit(self, samples: np.ndarray) -> None:
        with self._pipe.condition:
            self._decoded.append(samples)
            self._pending_samples += len(samples)
            if self.max_pending_samples is not None and self._pending_samples > self.max_pending_samples:
                # Stop decoding here: a few compressed bytes can hold minutes of audio.
                raise TooMuchAudio(f"one message holds more than {self.max_pending_samples / self.target_rate:g} s of audio")

    def _raise_error(self) -> None:
        if isinstance(self._error, TooMuchAudio):
            raise self._error
        if self._error is not None:
            raise UndecodableStream(f"not a {self.container_format} audio stream: {self._error}") from self._error

    def _take(self) -> np.ndarray:
        with self._pipe.condition:
            decoded, self._decoded, self._pending_samples = self._decoded, [], 0
        if not decoded:
            self._raise_error()
        return np.concatenate(decoded).astype(np.float32) if decoded else np.zeros(0, np.float32)

    def feed(self, data: bytes) -> np.ndarray:
        pipe = self._pipe
        with pipe.condition:
            if not pipe.closed:
                pipe.pending += data
                pipe.condition.notify_all()
                done = pipe.condition.wait_for(lambda: pipe.closed or (pipe.starved and not pipe.pending), self.timeout_s)
                if not done:
                    raise UndecodableStream(f"the {self.container_format} decoder did not keep up")
        self._raise_error()
        return self._take()

    def finish(self) -> np.ndarray:
        self.close()
        self._thread.join(self.timeout_s)
        return self._take()

    def close(self) -> None:
        with self._pipe.condition:
            self._pipe.closed = True
            self._pipe.condition.notify_all()


# -- the route ------------------------------------------------------------------------------------------

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
    threshold: float
    top_k: int


def parse_stream_params(query: dict[str, str], default_threshold: float, label_count: int) -> StreamParams:
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
    if not 0 <= threshold <= 1:
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
    detections: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)

    def prepare(self, data: bytes | None) -> tuple[list[Window], np.ndarray | None, bool, float]:
        """Decode a message (``None``: end of stream) into scored-to-be windows; runs in a worker thread."""
        started = time.perf_counter()
        samples = self.decoder.feed(data) if data is not None else self.decoder.finish()
        if len(samples) > self.max_pending_samples:
            raise TooMuchAudio(f"one message holds {len(samples) / self.detector.config.sample_rate:.1f} s of audio; "
                               f"at most {self.max_pending_samples / self.detector.config.sample_rate:g} s may be pending")
        room = self.max_samples - self.detector.samples_seen
        over_limit = len(samples) > room
        windows = self.detector.push(samples[:room])
        if data is None or over_limit:
            windows += self.detector.flush()
        features = window_features(windows, self.state.model.features) if windows else None
        return windows, features, over_limit, 1000 * (time.perf_counter() - started)

    async def score(self, windows: list[Window], features: np.ndarray, features_ms: float, received: float) -> None:
        """Windows through the shared batcher (in chunks a forward pass takes), then scores and detections out."""
        model, batcher = self.state.model, self.state.batcher
        chunk = self.state.settings.max_batch_size
        for first in range(0, len(windows), chunk):
            # An open stream was admitted by KWS_MAX_STREAMS and is never shed mid-utterance by a queue spike;
            # its own back-pressure (one message scored before the next is read) bounds what it queues.
            result = await batcher.submit(features[first : first + chunk], shed=False)
            self.state.stats.record_batch(result.batch_size)
            latency = {"features": round(features_ms, 3), "queue": round(result.queue_ms, 3),
                       "inference": round(result.inference_ms, 3),
                       "total": round(1000 * (time.perf_counter() - received), 3)}
            for window, scores in zip(windows[first : first + chunk], result.scores):
                order = np.argsort(scores)[::-1][: self.params.top_k]
                self.messages.append({"type": "scores", "t_end": round(window.t_end, 3), "latency_ms": latency,
                                      "top_k": [{"label": model.labels[i], "score": round(float(scores[i]), 4)} for i in order]})
                self.emit(self.detector.observe(window, scores))

    def emit(self, detections: list[Detection]) -> None:
        self.detections += len(detections)
        self.messages.extend(d.message() for d in detections)


def add_stream_routes(app: FastAPI, state: ServiceState) -> None:
    """Registers ``WS /v1/stream``; streams share the app's model and batcher.

    PCM streams prepare their windows on the app's preprocessing threads. A WebM/Ogg stream's ``prepare``
    mostly waits for its demuxer thread, so those run on a pool of their own (one thread per allowed
    stream, created on first use): waiting streams cannot starve the decoding of uploads.
    """
    active = 0
    container_pool: ThreadPoolExecutor | None = None

    def executor_for(params: StreamParams) -> ThreadPoolExecutor:
        nonlocal container_pool
        if params.format == "pcm16":
            return state.preprocess
        if container_pool is None:
            container_pool = ThreadPoolExecutor(state.settings.max_streams, thread_name_prefix="stream-demux")
        return container_pool

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

    async def next_message(websocket: WebSocket, closes_at: float) -> bytes | None:
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

    @app.websocket("/v1/stream")
    async def stream_endpoint(websocket: WebSocket) -> None:
        nonlocal active
        await websocket.accept()
        settings = state.settings
        if not state.ready or state.model is None:
            await close_with(websocket, CLOSE_TRY_LATER, "not_ready", "the model is loading or the service is shutting down")
            return
        if active >= settings.max_streams:
            await close_with(websocket, CLOSE_TRY_LATER, "too_many_streams",
                             f"{active} streams are open (limit {settings.max_streams}); try again later")
            return
        model = state.model
        try:
            params = parse_stream_params(dict(websocket.query_params), settings.stream_threshold, len(model.labels))
        except StreamClosed as closing:
            await close_with(websocket, closing.close_code, closing.code, closing.message)
            return
        rate = model.features.sample_rate
        config = StreamConfig(rate, model.features.clip_seconds, settings.stream_hop_seconds,
                              settings.stream_smoothing_hops, params.threshold, settings.stream_refractory_seconds)
        loop = asyncio.get_running_loop()
        active += 1
        decoder: Pcm16Decoder | ContainerDecoder | None = None
        try:
            max_pending = int(settings.stream_max_pending_seconds * rate)
            decoder = Pcm16Decoder(params.sample_rate, rate) if params.format == "pcm16" else \
                ContainerDecoder(params.format, rate, max_pending)
            stream = _Stream(state, params, decoder, StreamDetector(model.labels, config),
                             int(settings.stream_max_seconds * rate), max_pending)
            await websocket.send_text(json.dumps({
                "type": "ready", "sample_rate": rate, "window_s": config.window_s, "hop_s": config.hop_s,
                "threshold": params.threshold, "labels": model.labels,
                "keywords": model.keywords,
                "max_duration_s": settings.stream_max_seconds}))
            closes_at = time.monotonic() + WALL_CLOCK_FACTOR * settings.stream_max_seconds
            while True:
                data = await next_message(websocket, closes_at)  # back-pressure: read only once the last one is scored
                received = time.perf_counter()
                try:
                    windows, features, over_limit, features_ms = await loop.run_in_executor(
                        executor_for(params), stream.prepare, data)
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
                                                          "detections": stream.detections}))
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
            active -= 1
            if decoder is not None:
                decoder.close()
