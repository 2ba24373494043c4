"""The ONNX keyword model: session, metadata, and the windows a clip is scored on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import onnxruntime

from model.features import FeatureConfig, fit_to_clip, log_mel
from model.vocabulary import keywords_of


class ModelLoadError(RuntimeError):
    """The ONNX file is missing, unreadable or not a delay-SNN export."""


@dataclass
class KeywordModel:
    session: onnxruntime.InferenceSession
    path: Path
    labels: list[str]
    features: FeatureConfig
    metadata: dict[str, str]

    @classmethod
    def load(cls, path: Path, intra_op_threads: int = 2, inter_op_threads: int = 1) -> "KeywordModel":
        if not path.is_file():
            raise ModelLoadError(f"model file {path} does not exist")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        try:
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception classes
            raise ModelLoadError(f"model file {path} could not be loaded by onnxruntime: {error}") from error
        metadata = dict(session.get_modelmeta().custom_metadata_map)
        try:
            labels = json.loads(metadata["labels"])
            features = FeatureConfig.from_dict(json.loads(metadata["feature_config"]))
        except (KeyError, ValueError, TypeError) as error:
            raise ModelLoadError(f"model file {path} lacks delay-SNN metadata (labels, feature_config): {error}") from error
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if [i.name for i in inputs] != ["features"] or inputs[0].shape[1] != features.n_mels:
            raise ModelLoadError(f"model file {path}: expected input 'features' (batch, {features.n_mels}, time), "
                                 f"got {[(i.name, i.shape) for i in inputs]}")
        if outputs[0].name != "scores" or outputs[0].shape[1] != len(labels):
            raise ModelLoadError(f"model file {path}: expected output 'scores' (batch, {len(labels)})")
        return cls(session, path, labels, features, metadata)

    @property
    def name(self) -> str:
        return self.metadata.get("name", self.path.stem)

    @property
    def version(self) -> str:
        return self.metadata.get("model_version", "unknown")

    def windows(self, samples: np.ndarray, hop_seconds: float) -> np.ndarray:
        """Features ``(windows, n_mels, frames)`` of a clip: one window, or windows every hop over a longer clip."""
        size = self.features.clip_samples
        if len(samples) <= size:
            clips = [fit_to_clip(samples, self.features)]
        else:
            hop = max(1, int(hop_seconds * self.features.sample_rate))
            starts = list(range(0, len(samples) - size + 1, hop))
            if starts[-1] != len(samples) - size:
                starts.append(len(samples) - size)
            clips = [samples[s : s + size] for s in starts]
        return log_mel(np.stack(clips), self.features)

    @cached_property
    def keywords(self) -> list[str]:
        """The labels that are keywords: the metadata's ``keywords``, else every label but the non-keywords."""
        if "keywords" in self.metadata:
            return list(json.loads(self.metadata["keywords"]))
        return keywords_of(self.labels)

    def run(self, features: np.ndarray) -> np.ndarray:
        return self.session.run(["scores"], {"features": features})[0]

    def best_window(self, scores: np.ndarray) -> int:
        """The window reported for a long clip: the most confident one whose top label is a keyword, if any."""
        top = scores.argmax(axis=1)
        keywords = set(self.keywords)
        is_keyword = np.array([self.labels[i] in keywords for i in top])
        confidence = scores.max(axis=1)
        candidates = np.flatnonzero(is_keyword) if is_keyword.any() else np.arange(len(scores))
        return int(candidates[confidence[candidates].argmax()])
