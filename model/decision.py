"""From class scores to an answer: per-keyword thresholds, and the window a long clip is answered by.

The answer is the top label, except that a keyword on top must also clear its own threshold; when it
does not, the answer is the more likely of ``_unknown_`` and ``_silence_``. Without thresholds this is
the top label. Thresholds are chosen on validation data for a
target false-accept rate (``kws-export --calibrate``) and travel in the ONNX metadata as
``keyword_thresholds`` (a JSON object); a model without them answers the top label, as before.
Pure numpy: the service, the exporter and the evaluation share it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from model.vocabulary import SILENCE, UNKNOWN, is_keyword

METADATA_KEY = "keyword_thresholds"


@dataclass(frozen=True)
class DecisionRule:
    labels: tuple[str, ...]
    thresholds: Mapping[str, float] = field(default_factory=dict)  # keyword -> minimum score; absent = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        unknown = set(self.thresholds) - {label for label in self.labels if is_keyword(label)}
        if unknown:
            raise ValueError(f"thresholds for labels that are not keywords: {sorted(unknown)}")
        vector = np.array([self.thresholds.get(label, 0.0) if is_keyword(label) else np.inf for label in self.labels])
        object.__setattr__(self, "_keyword_thresholds", vector)
        fallback = [i for i, label in enumerate(self.labels) if label in (UNKNOWN, SILENCE)]
        object.__setattr__(self, "_fallback", np.array(fallback, dtype=np.int64))

    @classmethod
    def from_metadata(cls, labels: Sequence[str], metadata: Mapping[str, str]) -> "DecisionRule":
        raw = metadata.get(METADATA_KEY)
        return cls(tuple(labels), json.loads(raw) if raw else {})

    def to_metadata(self) -> dict[str, str]:
        return {METADATA_KEY: json.dumps({k: round(float(v), 6) for k, v in self.thresholds.items()})}

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """Label index per row of ``scores`` ``(N, classes)``: the top label, unless it is a keyword under its
        threshold; then the best non-keyword (if the model has one)."""
        scores = np.asarray(scores)
        top = scores.argmax(axis=1)
        rows = np.arange(len(scores))
        thresholds = np.where(np.isfinite(self._keyword_thresholds), self._keyword_thresholds, 0.0)
        rejected = self.is_keyword_index(top) & (scores[rows, top] < thresholds[top])
        if not len(self._fallback):
            return top
        fallback = self._fallback[scores[:, self._fallback].argmax(axis=1)]
        return np.where(rejected, fallback, top)

    @property
    def keyword_indices(self) -> frozenset[int]:
        return frozenset(int(i) for i in np.flatnonzero(np.isfinite(self._keyword_thresholds)))

    def is_keyword_index(self, indices: np.ndarray) -> np.ndarray:
        return np.isfinite(self._keyword_thresholds[np.asarray(indices)])

    def answer_window(self, scores: np.ndarray) -> tuple[int, int]:
        """(window, label index) answering a clip scored on several windows: among the windows decided as a
        keyword, the one whose keyword scores highest; else the most confident non-keyword window."""
        decisions = self.decide(scores)
        confidence = scores[np.arange(len(scores)), decisions]
        keyword = self.is_keyword_index(decisions)
        candidates = np.flatnonzero(keyword) if keyword.any() else np.arange(len(scores))
        window = int(candidates[confidence[candidates].argmax()])
        return window, int(decisions[window])
