"""Streaming: false alarms per hour on long negative audio, and keyword recall, as ``WS /v1/stream`` answers.

The recordings (``evaluation.stream_recordings``) hold, for the report, nothing that training or
calibration used: negative audio, where every detection is a false alarm, and keyword audio of the
validation speakers that chose neither the epoch nor the thresholds (recall, and the false alarms there);
the tuning recordings for the per-keyword stream thresholds come from the other halves. Every window goes
through the service's detector (``service.detector``), front end and graph; with the VAD
(``service.vad``) windows without speech are not scored at all.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.stream_recordings import SNR_DB, Recording, build_recordings
from evaluation.suite import Data
from model.vocabulary import SILENCE

SNR_BAND_DB = 5.0  # keyword recall is also given per band of SNR_DB this wide
SNR_BANDS = tuple(f"{low:g}-{low + SNR_BAND_DB:g}" for low in np.arange(SNR_DB[0], SNR_DB[1], SNR_BAND_DB))
TOLERANCE_S = 0.25
BATCH = 64


@dataclass
class Scored:
    t_end: list[float]
    scores: np.ndarray  # (windows, classes); VAD-skipped windows hold a one-hot _silence_
    scored: int  # windows that went through the model
    vad_seconds: float
    model_seconds: float


def score_recording(model, config, samples: np.ndarray, vad: bool, chunk_s: float = 0.2) -> Scored:
    """The windows a stream of ``chunk_s`` messages produces, and what the detector is given for each."""
    from service.detector import StreamDetector, window_features
    from service.vad import SpeechGate

    detector = StreamDetector(model.labels, config, model.keywords)
    gate = SpeechGate(config.sample_rate) if vad else None
    chunk = int(chunk_s * config.sample_rate)
    windows, speech, vad_time = [], [], 0.0
    for first in range(0, len(samples), chunk):
        piece = samples[first : first + chunk]
        if gate is not None:
            started = time.perf_counter()
            gate.push(piece)
            vad_time += time.perf_counter() - started
        for window in detector.push(piece):
            windows.append(window)
            speech.append(gate is None or gate.speech_between(window.t_end - config.window_s, window.t_end))
    silence = np.zeros(len(model.labels))
    silence[model.labels.index(SILENCE)] = 1.0
    scores = np.tile(silence, (len(windows), 1))
    chosen = [w for w, s in zip(windows, speech) if s]
    started = time.perf_counter()
    if chosen:
        features = window_features(chosen, model.features)
        result = np.concatenate([model.run(features[i : i + BATCH]) for i in range(0, len(features), BATCH)])
        scores[np.flatnonzero(speech)] = result
    return Scored([w.t_end for w in windows], scores, len(chosen), vad_time, time.perf_counter() - started)


def detect(model, config, scored: Scored, thresholds: Mapping[str, float] | None) -> list:
    from service.detector import ScoreSmoother

    smoother = ScoreSmoother(model.labels, config.smoothing_hops, config.threshold, config.refractory_s,
                             config.window_s, model.keywords, thresholds)
    found = [d for t, s in zip(scored.t_end, scored.scores) if (d := smoother.update(t, s)) is not None]
    last = smoother.finish()
    return found + ([last] if last is not None else [])


def match(recordings: Sequence[Recording], detections: Sequence[Sequence], keywords: Sequence[str]) -> dict:
    """Hits (a detection of a placed keyword's label overlapping it ± the tolerance; each counts once) and
    false alarms (every other detection), per keyword."""
    hits, false_alarms, placed = 0, {k: 0 for k in keywords}, 0
    found = {k: [0, 0] for k in keywords}
    by_snr = {band: [0, 0] for band in SNR_BANDS}
    by_source: dict[str, int] = {}
    for recording, found_here in zip(recordings, detections):
        matched: set[int] = set()
        for detection in found_here:
            near = [i for i, p in enumerate(recording.placed)
                    if p.start < detection.t_end + TOLERANCE_S and p.end > detection.t_start - TOLERANCE_S]
            candidates = [i for i in near if recording.placed[i].label == detection.label and i not in matched]
            if candidates:
                matched.add(candidates[0])
                hits += 1
            else:
                false_alarms[detection.label] += 1
                source = recording.placed[near[0]].source if near else "background noise"
                by_source[source] = by_source.get(source, 0) + 1
        for i, p in enumerate(recording.placed):
            if p.label:
                placed += 1
                found[p.label][0] += i in matched
                found[p.label][1] += 1
                if p.snr_db is not None:
                    band = SNR_BANDS[min(len(SNR_BANDS) - 1, int((p.snr_db - SNR_DB[0]) // SNR_BAND_DB))]
                    by_snr[band][0] += i in matched
                    by_snr[band][1] += 1
    return {"hits": hits, "keywords_placed": placed, "false_alarms": false_alarms,
            "false_alarms_by_source": dict(sorted(by_source.items(), key=lambda item: -item[1])),
            "per_keyword_recall": {k: round(h / n, 3) if n else None for k, (h, n) in found.items()},
            "recall_by_snr_db": {band: round(h / n, 3) if n else None for band, (h, n) in by_snr.items()}}


def hours(recordings: Sequence[Recording], rate: int) -> float:
    return sum(len(r.samples) for r in recordings) / rate / 3600


# Thresholds tried: steps of 0.01, then ever closer to 1 (a calibrated model's scores on a word it is sure of
# crowd there, and 0.995 / 0.999 alone left keywords nothing between "too many alarms" and "off").
THRESHOLD_GRID = (*np.round(np.arange(0.10, 0.995, 0.01), 2), *np.round(1 - 10 ** -np.arange(2.25, 5.01, 0.25), 6))


def tune_thresholds(model, config, negatives: Sequence[Scored], negative_hours: float, target_per_hour: float,
                    grid: Sequence[float] = THRESHOLD_GRID) -> dict[str, float]:
    """Per keyword, the lowest threshold whose false alarms on the negative hours stay within an equal share of
    ``target_per_hour``, every other keyword switched off meanwhile (its alarms do not depend on theirs).
    Alarms fall as the threshold rises, so the grid is bisected; the highest point is taken when none is within."""
    keywords = list(model.keywords)
    share = target_per_hour / len(keywords)
    off = {k: 2.0 for k in keywords}
    chosen = {}
    for keyword in keywords:
        def within(index: int) -> bool:
            thresholds = {**off, keyword: float(grid[index])}
            alarms = sum(d.label == keyword for s in negatives for d in detect(model, config, s, thresholds))
            return alarms / negative_hours <= share
        low, high = 0, len(grid) - 1  # the answer lies in [low, high]; high is taken when nothing is within
        while low < high:
            middle = (low + high) // 2
            low, high = (low, middle) if within(middle) else (middle + 1, high)
        chosen[keyword] = float(grid[low])
    return chosen


from service.inference import STREAM_THRESHOLDS_KEY as STREAM_METADATA_KEY  # noqa: E402 - one definition


def stream_config(model, settings=None):
    """The service's stream settings (``service.settings.Settings``) with the model's own thresholds."""
    import json

    from service.detector import StreamConfig
    from service.settings import Settings

    settings = settings or Settings()
    raw = model.metadata.get(STREAM_METADATA_KEY)
    return StreamConfig(model.features.sample_rate, model.features.clip_seconds, settings.stream_hop_seconds,
                        settings.stream_smoothing_hops, settings.stream_threshold, settings.stream_refractory_seconds,
                        json.loads(raw) if raw else {})




@dataclass
class ScoredRecordings:
    """The negative and keyword recordings with what the detector is given for each (one VAD setting)."""

    negative: Sequence[Recording]
    keyword: Sequence[Recording]
    vad: bool
    scored_negative: list[Scored]
    scored_keyword: list[Scored]


def score_recordings(model, config, negative: Sequence[Recording], keyword: Sequence[Recording], vad: bool) -> ScoredRecordings:
    return ScoredRecordings(negative, keyword, vad, [score_recording(model, config, r.samples, vad) for r in negative],
                            [score_recording(model, config, r.samples, vad) for r in keyword])


# Common thresholds of the operating curve (every keyword the same one), from permissive to strict.
CURVE_THRESHOLDS = (*np.round(np.arange(0.1, 0.95, 0.05), 2), *np.round(1 - 10 ** -np.arange(1.5, 5.01, 0.25), 6))


def matched(model, config, scored: ScoredRecordings, thresholds: Mapping[str, float] | None) -> tuple[dict, dict]:
    """:func:`match` of the detections at ``thresholds`` on the negative and on the keyword recordings."""
    return (match(scored.negative, [detect(model, config, s, thresholds) for s in scored.scored_negative], model.keywords),
            match(scored.keyword, [detect(model, config, s, thresholds) for s in scored.scored_keyword], model.keywords))


def recall_of(on_keyword: dict) -> float:
    return round(on_keyword["hits"] / max(1, on_keyword["keywords_placed"]), 4)


def operating_curve(model, config, scored: ScoredRecordings, thresholds: Sequence[float] = CURVE_THRESHOLDS) -> list[dict]:
    """False alarms per hour and recall at one common threshold for every keyword, for each of ``thresholds``:
    the detector's trade-off with no per-keyword tuning (a DET curve in the units a user notices)."""
    negative_hours = hours(scored.negative, config.sample_rate)
    curve = []
    for threshold in thresholds:
        on_negative, on_keyword = matched(model, config, scored, {k: float(threshold) for k in model.keywords})
        curve.append({"threshold": float(threshold),
                      "false_alarms_per_hour": round(sum(on_negative["false_alarms"].values()) / negative_hours, 2),
                      "recall": recall_of(on_keyword)})
    return curve


def false_alarms_at_recall(curve: Sequence[dict], recall: float) -> float | None:
    """The fewest false alarms per hour among the curve's points with at least ``recall``."""
    reaching = [point["false_alarms_per_hour"] for point in curve if point["recall"] >= recall]
    return min(reaching) if reaching else None


def report(model, config, scored: ScoredRecordings) -> dict:
    """False alarms per hour on the negative hours and recall on the keyword recordings, one configuration."""
    rate = config.sample_rate
    negative, keyword, vad = scored.negative, scored.keyword, scored.vad
    on_negative, on_keyword = matched(model, config, scored, dict(config.keyword_thresholds))
    everything = scored.scored_negative + scored.scored_keyword
    windows = sum(len(s.t_end) for s in everything)
    audio_hours = hours(negative, rate) + hours(keyword, rate)
    negative_alarms = sum(on_negative["false_alarms"].values())
    return {
        "vad": vad, "negative_hours": round(hours(negative, rate), 3), "keyword_minutes": round(60 * hours(keyword, rate), 1),
        "false_alarms_per_hour": round(negative_alarms / hours(negative, rate), 2),
        "false_alarms": negative_alarms, "false_alarms_by_keyword": on_negative["false_alarms"],
        "false_alarms_by_source": on_negative["false_alarms_by_source"],
        "recall": recall_of(on_keyword),
        "keywords_placed": on_keyword["keywords_placed"], "per_keyword_recall": on_keyword["per_keyword_recall"],
        "recall_by_snr_db": on_keyword["recall_by_snr_db"],
        "false_alarms_on_keyword_recordings_per_hour": round(sum(on_keyword["false_alarms"].values()) / hours(keyword, rate), 2),
        "windows_scored_fraction": round(sum(s.scored for s in everything) / max(1, windows), 4),
        "vad_ms_per_audio_second": round(1000 * sum(s.vad_seconds for s in everything) / (3600 * audio_hours), 3),
        "model_ms_per_audio_second": round(1000 * sum(s.model_seconds for s in everything) / (3600 * audio_hours), 3),
    }


def calibrate_stream(model, data: Data, target_per_hour: float, minutes: int, seed: int, vad: bool | None = None) -> dict:
    """Per-keyword stream thresholds on the tuning recordings (the other halves of speakers and synthetic words),
    with the VAD as the service runs it unless ``vad`` says."""
    from service.settings import Settings

    config = stream_config(model)
    vad = Settings().stream_vad if vad is None else vad
    negative, _ = build_recordings(data, model, "tune", minutes, 0, seed)
    scored = [score_recording(model, config, r.samples, vad) for r in negative]
    return tune_thresholds(model, config, scored, hours(negative, config.sample_rate), target_per_hour)


def write_stream_thresholds(path: Path, thresholds: Mapping[str, float], details: Mapping) -> None:
    """Stores the thresholds in the ONNX file's metadata (the graph is untouched)."""
    import json

    update_metadata(path, {STREAM_METADATA_KEY: json.dumps({k: round(v, 6) for k, v in thresholds.items()}),
                           "stream_calibration": json.dumps(dict(details))})


def update_metadata(path: Path, values: Mapping[str, str]) -> None:
    """Sets metadata_props of an ONNX file in place (others kept), written to a temporary file first."""
    import onnx

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props} | dict(values)
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    temporary = path.with_suffix(".partial.onnx")
    onnx.save(model, str(temporary))
    temporary.replace(path)
