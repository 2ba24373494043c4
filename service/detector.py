"""Streaming keyword detection, pure: samples in, 1-s windows out; window scores in, detection events out.

No I/O, no FastAPI, no settings: ``WS /v1/stream`` (service/routes/stream.py) and
``evaluation/streaming.py`` (kws-robustness) run the same code. :class:`StreamDetector` cuts the incoming samples into
windows every hop; its :class:`ScoreSmoother` turns the model's per-window score vectors into detection
events (moving average over a few hops, a threshold only keyword labels can cross, one event per
utterance, a refractory period after each). The defaults of :class:`StreamConfig` are the service's
defaults (service/settings.py reads them from here).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.features import FeatureConfig, log_mel
from model.vocabulary import keywords_of


@dataclass(frozen=True)
class StreamConfig:
    sample_rate: int
    window_s: float = 1.0
    hop_s: float = 0.2
    smoothing_hops: int = 3
    threshold: float = 0.13  # for raw (uncalibrated) scores; keywords without a threshold of their own use it
    refractory_s: float = 0.5
    # keyword -> threshold of its smoothed score (the model's stream_keyword_thresholds metadata)
    keyword_thresholds: Mapping[str, float] = field(default_factory=dict)

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


# Windows whose raw score is within this fraction of the event's peak count as "at the peak": a calibrated
# model scores several overlapping windows ~0.999; the first of them is the first to hold the whole word
# (later ones hold less and less of its start).
NEAR_PEAK = 0.98


@dataclass
class _OpenEvent:
    label: int
    peak: float
    raw: list[tuple[float, float]]  # (t_end, raw score of the label) of every window of the event

    def window_end(self) -> float:
        best = max(score for _, score in self.raw)
        near = [t for t, score in self.raw if score >= NEAR_PEAK * best]
        return near[0]


class ScoreSmoother:
    """Per-hop score vectors → detection events.

    The scores are averaged over the last ``smoothing_hops`` hops. An event opens when the top label of
    the average is a keyword scoring at least its threshold (``thresholds[keyword]``, else ``threshold``;
    the non-keyword labels never open one), and closes when that keyword's average falls below it; then no event opens for ``refractory_s``, so a word
    whose score wobbles around the threshold still gives one event. The event is placed on the window
    where the keyword's raw score peaked (the first one when several are within 2 % of the peak, as a
    calibrated model's are): the 1-s window that best holds the word. ``keywords`` defaults
    to :func:`model.vocabulary.keywords_of` the labels; the service passes the model's own.
    """

    def __init__(self, labels: Sequence[str], smoothing_hops: int, threshold: float, refractory_s: float,
                 window_s: float = 1.0, keywords: Sequence[str] | None = None,
                 thresholds: Mapping[str, float] | None = None) -> None:
        self.labels = list(labels)
        keyword_set = set(keywords_of(self.labels) if keywords is None else keywords)
        self.is_keyword = np.array([label in keyword_set for label in self.labels])
        own = thresholds or {}
        self.thresholds = np.array([own.get(label, threshold) if label in keyword_set else np.inf for label in self.labels])
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
            if smoothed[event.label] >= self.thresholds[event.label]:
                event.peak = max(event.peak, float(smoothed[event.label]))
                event.raw.append((t_end, float(scores[event.label])))
                return None
            return self._close(t_end)
        top = int(smoothed.argmax())
        if self.is_keyword[top] and smoothed[top] >= self.thresholds[top] and t_end >= self._quiet_until:
            self._open = _OpenEvent(top, float(smoothed[top]), [(t, float(s[top])) for t, s in self._recent])
        return None

    def finish(self) -> Detection | None:
        """End of stream: the event still open, if any."""
        return self._close(self._last_t_end) if self._open is not None else None

    def _close(self, t_end: float) -> Detection:
        event, self._open = self._open, None
        assert event is not None
        self._quiet_until = t_end + self.refractory_s
        window_end = event.window_end()
        return Detection(self.labels[event.label], event.peak, max(0.0, window_end - self.window_s), window_end)


class StreamDetector:
    """Samples at the model rate in, windows out; the windows' scores in, detections out.

    Holds at most one window of audio. ``push`` returns the windows that became complete, one per hop;
    ``flush`` (end of stream) adds a last window ending at the final sample when the hops missed the
    tail, or a zero-padded one for a stream shorter than a window.
    """

    def __init__(self, labels: Sequence[str], config: StreamConfig, keywords: Sequence[str] | None = None) -> None:
        self.config = config
        self.smoother = ScoreSmoother(labels, config.smoothing_hops, config.threshold, config.refractory_s,
                                      config.window_s, keywords, config.keyword_thresholds)
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
