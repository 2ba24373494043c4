"""WebSocket messages → mono float32 samples at the model rate, for ``WS /v1/stream``.

Raw pcm16 at any rate goes through soxr's streaming resampler; WebM/Ogg chunks as MediaRecorder emits
them go through PyAV, fed by a pipe from a demuxer thread, so memory stays bounded by one message.
Blocking code: the route calls ``feed``/``finish`` off the event loop.
"""

from __future__ import annotations

import threading

import numpy as np


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
