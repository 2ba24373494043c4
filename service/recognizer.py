"""The recogniser: an uploaded clip in, a :class:`Recognition` out (decode → features → batcher → answer).

Kept apart from the HTTP layer (as sherpa-onnx keeps its recogniser apart from its server): the routes
and the warm-up call :func:`recognize_bytes`, and :func:`answer` is the one place scores become a label.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from service.audio import DecodedAudio, decode_audio
from service.batching import Admission, Overloaded
from service.errors import overloaded
from service.inference import KeywordModel
from service.schemas import AudioInfo, Cost, LabelScore, Latency, ModelRef, Recognition
from service.state import ServiceState


def answer(model: KeywordModel, scores: np.ndarray, top_k: int, hop_seconds: float, audio: DecodedAudio,
           latency: dict[str, float], cost: Cost | None = None, decided: tuple[int, int, bool | None] | None = None
           ) -> Recognition:
    """Per-window scores ``(windows, labels)`` of one clip → the answer: the decision of its answering window
    (a keyword only when it clears its threshold and, with ``decided`` (window, label, speech heard) from the
    speech check, holds speech), with that window's raw top labels."""
    window, label, speech = decided if decided is not None else (*model.answer_window(scores), None)
    best = scores[window]
    order = np.argsort(best)[::-1][:top_k]
    return Recognition(
        label=model.labels[label], score=float(best[label]),
        top_k=[LabelScore(label=model.labels[i], score=float(best[i])) for i in order],
        audio=AudioInfo(duration_s=round(audio.duration_s, 4), sample_rate=audio.sample_rate, channels=audio.channels,
                        format=audio.format),
        latency_ms=Latency(**{k: round(v, 3) for k, v in latency.items()}),
        model=ModelRef(name=model.name, version=model.version),
        window_start_s=round(window * hop_seconds, 3) if len(scores) > 1 else 0.0,
        speech=speech,
        cost=cost,
    )



async def recognize_bytes(
    state: ServiceState, data: bytes, content_type: str | None, top_k: int, record: bool = True,
    admission: Admission | None = None,
) -> Recognition:
    """Decode, features, model. ``admission``: the backlog place this clip was admitted under (its request's,
    taken from the request head, or its batch's); without one it is admitted here, or refused (503)."""
    assert state.model is not None and state.batcher is not None
    model = state.model
    hop = state.settings.window_hop_seconds
    loop = asyncio.get_running_loop()
    started = time.perf_counter()

    def prepare() -> tuple[Any, np.ndarray, float, float]:  # one thread hop for both CPU stages
        audio = decode_audio(data, state.limits, content_type)
        decoded = time.perf_counter()
        return audio, model.windows(audio.samples, hop), decoded, time.perf_counter()

    if admission is None:
        try:
            admission = state.batcher.admit(1)
        except Overloaded as error:
            raise overloaded(error) from error
    try:
        audio, features, decoded, featured = await loop.run_in_executor(state.preprocess, prepare)
    finally:
        admission.hand_over(1)  # from here its windows count, queued
    # Admitted work is served: refusing it now would throw away the decoding it already cost.
    result = await state.batcher.submit(features, shed=False)
    checked = time.perf_counter()
    window, label = model.answer_window(result.scores)
    speech = None
    if state.settings.verify_speech and label in model.decision.keyword_indices:  # only keyword answers pay for it
        label, speech = await loop.run_in_executor(state.preprocess, model.speech_check, audio.samples, hop, window, label)
    decided = (window, label, speech)
    latency = {"decode": 1000 * (decoded - started), "features": 1000 * (featured - decoded), "queue": result.queue_ms,
               "inference": result.inference_ms, "vad": 1000 * (time.perf_counter() - checked),
               "total": 1000 * (time.perf_counter() - started)}
    cost = None
    if len(result.outputs) > 1:  # spike_counts: every window the clip was scored on
        spent = model.cost(result.outputs[1])
        cost = Cost(spikes_per_layer=spent.spikes_per_layer, synaptic_events=spent.synaptic_events)
    if record:
        state.stats.record_latency(latency)
        if cost is not None:
            state.stats.record_cost(cost.spikes_per_layer, cost.synaptic_events)
    return answer(model, result.scores, top_k, hop, audio, latency, cost, decided)
