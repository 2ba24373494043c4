"""The ONNX keyword model: session, metadata, and the windows a clip is scored on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import onnxruntime

from model.decision import DecisionRule
from model.features import FeatureConfig, fit_to_clip, log_mel
from model.vocabulary import SILENCE, keywords_of

STREAM_THRESHOLDS_KEY = "stream_keyword_thresholds"  # written by kws-stream-calibrate


class ModelLoadError(RuntimeError):
    """The ONNX file is missing, unreadable or not a delay-SNN export."""


def open_session(path: Path, intra_op_threads: int, inter_op_threads: int) -> onnxruntime.InferenceSession:
    """The one place the service creates an onnxruntime session (its options are chosen here).

    The intra-op threads do not spin: onnxruntime's default keeps them busy-waiting for the next op after
    each one and after every run, which on 2 cores takes the CPU from the event loop, the preprocessing
    threads and any neighbour (and from a pod's CPU quota). ``python -m benchmarks.threads --served``: on a
    quiet machine it costs 0.25 ms of inference at concurrency 1 and gives 6 % more throughput at
    saturation; next to a busy neighbour, spinning made the same graph 4x slower (docs/results.md)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class SpikeCost:
    """What a neuromorphic chip would pay for some windows: the spikes each hidden layer emitted, and the synaptic
    events they cause (each spike is delivered over every outgoing synapse of its neuron: spikes x fan-out)."""

    spikes_per_layer: list[int]
    synaptic_events: int | None  # None for a model whose metadata does not tell its synapses per layer


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
        try:
            session = open_session(path, intra_op_threads, inter_op_threads)
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

    def window_audio(self, samples: np.ndarray, hop_seconds: float) -> list[np.ndarray]:
        """The model windows of a clip: the clip fitted to one window, or windows every hop over a longer clip
        (the last one ending at the clip's end)."""
        size = self.features.clip_samples
        if len(samples) <= size:
            return [fit_to_clip(samples, self.features)]
        hop = max(1, int(hop_seconds * self.features.sample_rate))
        starts = list(range(0, len(samples) - size + 1, hop))
        if starts[-1] != len(samples) - size:
            starts.append(len(samples) - size)
        return [samples[s : s + size] for s in starts]

    def windows(self, samples: np.ndarray, hop_seconds: float) -> np.ndarray:
        """Features ``(windows, n_mels, frames)`` of a clip's :meth:`window_audio`."""
        return log_mel(np.stack(self.window_audio(samples, hop_seconds)), self.features)

    def speech_check(self, samples: np.ndarray, hop_seconds: float, window: int, label: int) -> tuple[int, bool | None]:
        """A keyword answer stands only if the VAD hears speech in its window; else the answer is ``_silence_``.
        Returns (label, whether speech was heard; None when the answer was no keyword and nothing was checked)."""
        if label not in self.decision.keyword_indices:
            return label, None
        from service.vad import SUPPORTED_RATES, clip_has_speech

        if self.features.sample_rate not in SUPPORTED_RATES:
            return label, None
        heard = clip_has_speech(self.window_audio(samples, hop_seconds)[window], self.features.sample_rate)
        return (label if heard else self.labels.index(SILENCE)), heard

    @cached_property
    def keywords(self) -> list[str]:
        """The labels that are keywords: the metadata's ``keywords``, else every label but the non-keywords."""
        if "keywords" in self.metadata:
            return list(json.loads(self.metadata["keywords"]))
        return keywords_of(self.labels)

    def run(self, features: np.ndarray) -> np.ndarray:
        return self.session.run(["scores"], {"features": features})[0]

    @cached_property
    def outputs(self) -> list[str]:
        """``scores``, then ``spike_counts`` (batch, hidden layers) when the graph has it (every kws-export does)."""
        names = [output.name for output in self.session.get_outputs()]
        return ["scores", *(["spike_counts"] if "spike_counts" in names else [])]

    def infer(self, features: np.ndarray) -> list[np.ndarray]:
        """The outputs of :attr:`outputs`, one row per window: what the micro-batcher runs."""
        return self.session.run(self.outputs, {"features": features})

    @cached_property
    def fan_out(self) -> list[float] | None:
        """Mean outgoing synapses of a neuron of each hidden layer: the next layer's synapses over this layer's
        neurons (from the metadata's ``hidden_sizes`` and ``delay_statistics``); None when they are missing."""
        try:
            sizes = json.loads(self.metadata["hidden_sizes"])
            synapses = [int(layer["synapses"]) for layer in json.loads(self.metadata["delay_statistics"])]
        except (KeyError, ValueError, TypeError):
            return None
        if len(synapses) != len(sizes) + 1:
            return None
        return [synapses[index + 1] / size for index, size in enumerate(sizes)]

    def cost(self, spike_counts: np.ndarray) -> SpikeCost:
        """The cost of the windows whose ``spike_counts`` rows (windows, hidden layers) are given, summed."""
        spikes = np.asarray(spike_counts, dtype=np.float64).sum(axis=0)
        fan_out = self.fan_out
        events = None if fan_out is None or len(fan_out) != len(spikes) else int(round(float(spikes @ np.array(fan_out))))
        return SpikeCost([int(round(value)) for value in spikes], events)

    @cached_property
    def decision(self) -> DecisionRule:
        """Scores → answer: the keyword thresholds of the metadata (``kws-export --calibrate``); none: the top label."""
        return DecisionRule.from_metadata(self.labels, self.metadata)

    @cached_property
    def stream_thresholds(self) -> dict[str, float]:
        """Per-keyword thresholds of the streaming detector's smoothed scores (empty: the service's common one)."""
        raw = self.metadata.get(STREAM_THRESHOLDS_KEY)
        return {str(k): float(v) for k, v in json.loads(raw).items()} if raw else {}

    def answer_window(self, scores: np.ndarray) -> tuple[int, int]:
        """(window, label index) answering a clip scored on ``scores`` (windows, labels): see ``model.decision``."""
        return self.decision.answer_window(scores)
