"""WS /v1/stream: the pure detector and decoders, and a real uvicorn streamed to by a real WebSocket client."""

from __future__ import annotations

import contextlib
import csv
import json
import socket
import time

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from model.speech import speech_extent
from service.inference import KeywordModel
from service.settings import Settings
from service.detector import ScoreSmoother, StreamConfig, StreamDetector
from service.stream_decoders import ContainerDecoder, Pcm16Decoder, TooMuchAudio, UndecodableStream
from tests.audio_files import encode, encode_pyav, tone
from tests.servers import running_server
from training.datasets import read_audio

LABELS = ["yes", "no", "up", "down", "left", "right", "stop", "go", "_unknown_", "_silence_"]
RATE = 16_000
TOLERANCE_S = 0.3  # how far a detection's window may sit inside the word's extent (the hop is 0.2 s)


# -- the smoother and debouncer, on synthetic score sequences ---------------------------------------------


def scores_with(**peaks: float) -> np.ndarray:
    """A score vector with the given labels raised and the rest sharing what is left."""
    vector = np.zeros(len(LABELS))
    for label, score in peaks.items():
        vector[LABELS.index(label)] = score
    rest = [i for i, label in enumerate(LABELS) if label not in peaks]
    vector[rest] = (1 - sum(peaks.values())) / len(rest)
    return vector


def run_smoother(sequence: list[np.ndarray], hop: float = 0.1, smoothing: int = 3, threshold: float = 0.2,
                 refractory: float = 0.5) -> list:
    smoother = ScoreSmoother(LABELS, smoothing, threshold, refractory)
    events = [smoother.update(1.0 + i * hop, scores) for i, scores in enumerate(sequence)]
    return [e for e in [*events, smoother.finish()] if e is not None]


def test_a_word_laid_over_a_noise_bed_sits_at_the_snr_asked_for():
    from model.speech import gain_for_snr, noise_bed

    rng = np.random.default_rng(3)
    noise = rng.standard_normal(16_000).astype(np.float32)
    bed = noise_bed(noise, 40_000, (0.003, 0.03), rng)  # longer than the noise: repeated
    assert len(bed) == 40_000 and bed.dtype == np.float32
    assert 0.003 <= np.sqrt(np.mean(bed**2)) <= 0.03
    word = tone(0.4)[:, 0]
    noise_power = float(np.mean(bed**2))
    for snr_db in (0.0, 7.5, 20.0):
        laid = gain_for_snr(word, noise_power, snr_db) * word
        assert 10 * np.log10(np.mean(laid**2) / noise_power) == pytest.approx(snr_db, abs=1e-6)


def test_smoother_gives_one_event_per_utterance_placed_on_the_peak_window():
    quiet, rising, peak = scores_with(_silence_=0.3), scores_with(left=0.22), scores_with(left=0.35)
    sequence = [quiet] * 5 + [rising, peak, rising, rising] + [quiet] * 6
    (event,) = run_smoother(sequence)
    assert event.label == "left"
    assert event.t_end == pytest.approx(1.6) and event.t_start == pytest.approx(0.6)  # the window of the raw peak
    assert event.score == pytest.approx(np.mean([0.22, 0.35, 0.22]))  # the peak of the 3-hop average


def test_smoother_places_a_saturated_plateau_on_its_first_window():
    """A calibrated model scores every window holding the word ~0.999, the later ones (holding less of the
    word's start) often highest: the event sits on the first, the first to hold the whole word."""
    quiet = scores_with(_silence_=0.9)
    sequence = [quiet] * 5 + [scores_with(go=0.3), scores_with(go=0.9891), scores_with(go=0.9975),
                              scores_with(go=0.9985), scores_with(go=0.9995)] + [quiet] * 6
    (event,) = run_smoother(sequence, threshold=0.5, smoothing=1)
    assert event.label == "go" and event.t_end == pytest.approx(1.6)  # not 1.9, the raw maximum


def test_smoother_wobble_around_the_threshold_is_debounced_by_the_refractory_period():
    low, high = scores_with(yes=0.17), scores_with(yes=0.26)
    sequence = [high] * 3 + [low] * 3 + [high] * 3 + [scores_with(_silence_=0.4)] * 4
    assert len(run_smoother(sequence, smoothing=1, refractory=1.0)) == 1
    assert len(run_smoother(sequence, smoothing=1, refractory=0.0)) == 2  # what the refractory period prevents


def test_smoother_separate_words_give_separate_events():
    quiet = scores_with(_silence_=0.3)
    sequence = [quiet] * 3 + [scores_with(yes=0.3)] * 4 + [quiet] * 10 + [scores_with(no=0.3)] * 4 + [quiet] * 4
    assert [e.label for e in run_smoother(sequence)] == ["yes", "no"]


@pytest.mark.parametrize("label", ["_unknown_", "_silence_"])
def test_smoother_never_reports_unknown_or_silence(label):
    assert run_smoother([scores_with(**{label: 0.6})] * 20) == []


def test_smoother_needs_the_keyword_on_top_and_over_the_threshold():
    assert run_smoother([scores_with(stop=0.25, _unknown_=0.3)] * 10) == []  # a keyword below _unknown_
    assert run_smoother([scores_with(stop=0.19)] * 10) == []  # on top, under the threshold
    assert run_smoother([scores_with(_silence_=0.3)] * 2 + [scores_with(stop=0.4)]) == []  # one hop, averaged over 3
    (event,) = run_smoother([scores_with(stop=0.25)] * 10)  # still open at the end of the stream: reported by finish
    assert event.label == "stop" and event.t_end == pytest.approx(1.0)


def test_smoother_per_keyword_thresholds_override_the_common_one():
    sequence = [scores_with(_silence_=0.3)] * 3 + [scores_with(stop=0.35)] * 4 + [scores_with(_silence_=0.3)] * 10 \
        + [scores_with(yes=0.35)] * 4 + [scores_with(_silence_=0.3)] * 4
    smoother = ScoreSmoother(LABELS, 3, 0.2, 0.5, thresholds={"stop": 0.4})  # stop needs 0.4; yes keeps 0.2
    events = [smoother.update(1.0 + i * 0.1, s) for i, s in enumerate(sequence)] + [smoother.finish()]
    assert [e.label for e in events if e is not None] == ["yes"]
    config = StreamConfig(RATE, keyword_thresholds={"yes": 0.5})
    assert StreamDetector(LABELS, config).smoother.thresholds[LABELS.index("yes")] == 0.5


# -- windows and decoders ------------------------------------------------------------------------------------


def test_detector_windows_every_hop_whatever_the_message_sizes():
    config = StreamConfig(RATE, hop_s=0.2)
    signal = np.random.default_rng(0).normal(size=int(2.75 * RATE)).astype(np.float32)
    detector = StreamDetector(LABELS, config)
    windows, position = [], 0
    for size in [100, 7_000, 15_999, 1, 4_000, 30_000]:
        windows += detector.push(signal[position : position + size])
        position += size
    windows += detector.push(signal[position:])
    assert [w.t_end for w in windows] == pytest.approx([1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2, 2.4, 2.6])
    for window in windows:
        end = round(window.t_end * RATE)
        np.testing.assert_array_equal(window.samples, signal[end - RATE : end])
    (tail,) = detector.flush()  # the hops stopped at 2.6 s: a last window ends at the final sample
    assert tail.t_end == pytest.approx(2.75)
    np.testing.assert_array_equal(tail.samples, signal[-RATE:])
    assert detector.duration_s == pytest.approx(2.75)


def test_detector_pads_a_stream_shorter_than_a_window():
    detector = StreamDetector(LABELS, StreamConfig(RATE))
    assert detector.push(np.ones(4_000, np.float32)) == []
    (window,) = detector.flush()
    assert window.t_end == pytest.approx(0.25) and len(window.samples) == RATE and window.samples[-4_000:].all()


def test_pcm16_decoder_carries_odd_bytes_and_resamples():
    samples = (tone(1.0, 48_000)[:, 0] * 32767).astype("<i2").tobytes()
    decoder = Pcm16Decoder(48_000, RATE)
    pieces = [decoder.feed(samples[i : i + 1001]) for i in range(0, len(samples), 1001)]  # odd-sized messages
    decoded = np.concatenate([*pieces, decoder.finish()])
    assert len(decoded) == pytest.approx(RATE, abs=2)
    reference = tone(1.0, RATE)[:, 0]
    assert np.abs(decoded[: len(reference)] - reference).max() < 0.01
    same_rate = Pcm16Decoder(RATE, RATE)
    assert len(same_rate.feed(b"\x01\x00\x02")) == 1 and len(same_rate.feed(b"\x00")) == 1


@pytest.mark.parametrize("kind, container", [("webm-opus", "webm"), ("ogg-opus", "ogg")])
def test_container_decoder_decodes_mediarecorder_like_chunks_as_they_arrive(kind, container):
    data, _ = encode(tone(3.0, 48_000), 48_000, kind)
    decoder = ContainerDecoder(container, RATE)
    pieces = [decoder.feed(data[i : i + 2_000]) for i in range(0, len(data), 2_000)]
    assert sum(len(p) for p in pieces[: len(pieces) // 2]) > RATE // 2  # decoded while the stream still arrives
    total = sum(len(p) for p in pieces) + len(decoder.finish())
    assert total == pytest.approx(3 * RATE, abs=RATE // 50)


def test_webm_decoder_stops_at_the_pending_audio_bound():
    data = encode_pyav(tone(3.0, 48_000), 48_000, "webm-opus")
    decoder = ContainerDecoder("webm", RATE, max_pending_samples=RATE)
    with pytest.raises(TooMuchAudio):
        decoder.feed(data)  # three seconds in one message; one may be pending
    decoder.close()


def test_webm_decoder_refuses_bytes_that_are_not_webm():
    decoder = ContainerDecoder("webm", RATE)
    with pytest.raises(UndecodableStream):
        for _ in range(3):
            decoder.feed(b"this is not a webm stream at all " * 200)
    decoder.close()


# -- a real uvicorn and a real WebSocket client ---------------------------------------------------------------


def serve_stream(**settings: str):
    """A real kws-serve on a free loopback port; yields its WebSocket URL."""
    with running_server(max_wait_ms="5", **settings) as server:
        yield f"ws://127.0.0.1:{server.port}/v1/stream"


@pytest.fixture(scope="module")
def stream_url():
    yield from serve_stream()


@pytest.fixture(scope="module")
def vad_url():
    """A server with the VAD gate on (KWS_STREAM_VAD, off by default)."""
    yield from serve_stream(stream_vad="true")


@pytest.fixture(scope="module")
def tight_url():
    """A server with tiny limits: 2-s streams, one stream at a time, 4 KiB messages, 0.2 s of audio per message,
    3 s without a message."""
    yield from serve_stream(stream_max_seconds="2", max_streams="1", stream_max_message_bytes="4096",
                            stream_max_pending_seconds="0.2", stream_idle_seconds="3")


def stream(url: str, messages: list[bytes | str], end: bool = True) -> tuple[list[dict], int | None]:
    """Sends the messages (then the end message), returns what the server sent and its close code."""
    received = []
    with connect(url, open_timeout=10, close_timeout=10) as websocket:
        try:
            for message in messages:
                websocket.send(message)
            if end:
                websocket.send(json.dumps({"type": "end"}))
            while True:
                received.append(json.loads(websocket.recv(timeout=30)))
        except ConnectionClosed:
            pass
        return received, websocket.close_code


def pcm16_messages(samples: np.ndarray, rate: int, chunk_s: float = 0.1) -> list[bytes]:
    data = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    size = int(chunk_s * rate) * 2 + 1  # odd: samples straddle messages
    return [data[i : i + size] for i in range(0, len(data), size)]


def of_type(messages: list[dict], kind: str) -> list[dict]:
    return [m for m in messages if m["type"] == kind]


@pytest.fixture(scope="module")
def clips(data_dir):
    """Validation-speaker clips the model recognises on their own (seed-fixed pick), and background noise."""
    root = data_dir / "gsc"
    with open(root / "manifest.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "validation"]
    model = KeywordModel.load(Settings().model_path)
    rng = np.random.default_rng(7)
    chosen = {}
    for word, expected in [("yes", "yes"), ("left", "left"), ("stop", "stop"), ("bed", "_unknown_")]:
        candidates = sorted(r["file"] for r in rows if r["word"] == word)
        for index in rng.permutation(len(candidates)):
            clip = read_audio(root / candidates[index], RATE)
            scores = model.run(model.windows(clip, 0.25))[0]
            if model.labels[int(scores.argmax())] == expected and scores.max() > 0.2:
                chosen[word] = clip
                break
    noise = read_audio(root / "_background_noise_" / "pink_noise.flac", RATE)
    chosen["noise"] = noise[-5 * RATE :]  # the held-out tail: training never mixed it in
    return chosen


def place(clips: dict, word: str | None, at_s: float = 2.0, total_s: float = 4.5, noise_rms: float = 0.003):
    """The word at ``at_s`` in quiet pink noise; returns the audio and where the speech is (seconds)."""
    noise = clips["noise"][: int(total_s * RATE)]
    audio = noise * (noise_rms / np.sqrt(np.mean(noise**2)))
    if word is None:
        return audio.astype(np.float32), None
    clip = clips[word]
    start = int(at_s * RATE)
    audio[start : start + len(clip)] += clip
    begin, end = speech_extent(clip, RATE)
    return audio.astype(np.float32), ((start + begin) / RATE, (start + end) / RATE)


def assert_one_detection(messages: list[dict], close_code: int | None, label: str, speech: tuple[float, float]) -> None:
    assert close_code == 1000, messages[-3:]
    assert messages[0]["type"] == "ready" and messages[-1]["type"] == "end"
    detections = of_type(messages, "detection")
    assert [d["label"] for d in detections] == [label], detections
    (detection,) = detections
    assert detection["t_start"] <= speech[0] + TOLERANCE_S and detection["t_end"] >= speech[1] - TOLERANCE_S, (detection, speech)
    assert detection["t_end"] - detection["t_start"] <= 1.0 + 1e-6
    assert messages[-1]["detections"] == 1


def stream_yes_pcm16(url: str, clips: dict):
    """"yes" in quiet noise as 16-kHz PCM with top_k 4, checked to give one detection where it was said."""
    audio, speech = place(clips, "yes")
    messages, close_code = stream(f"{url}?format=pcm16&sample_rate=16000&top_k=4", pcm16_messages(audio, RATE))
    assert_one_detection(messages, close_code, "yes", speech)
    return messages, speech, messages[0], of_type(messages, "scores")


@pytest.mark.data
def test_stream_pcm16_16k_detects_the_keyword_once_where_it_was_said(stream_url, clips):
    messages, speech, ready, scores = stream_yes_pcm16(stream_url, clips)
    assert ready["sample_rate"] == RATE and ready["keywords"] == LABELS[:8] and ready["labels"] == LABELS
    assert len(scores) == round((4.5 - 1.0) / ready["hop_s"]) + 1
    assert all(set(s["latency_ms"]) == {"features", "queue", "inference", "total"} for s in scores)
    assert ready["vad"] is False and all(s["speech"] and len(s["top_k"]) == 4 for s in scores)  # every window scored
    assert messages[-1]["windows"] == messages[-1]["windows_scored"] == len(scores)
    assert messages[-1]["duration_s"] == pytest.approx(4.5, abs=1e-3)


@pytest.mark.data
def test_stream_with_the_vad_scores_only_windows_with_speech(vad_url, clips):
    messages, speech, ready, scores = stream_yes_pcm16(vad_url, clips)
    # The VAD: windows holding the word are scored (top_k); windows of the noise before it are not.
    assert ready["vad"] is True
    assert all(len(s["top_k"]) == (4 if s["speech"] else 0) for s in scores)
    assert not any(s["speech"] for s in scores if s["t_end"] < speech[0] - 0.05)
    # windows holding the whole word are scored (the VAD may fire only well into a soft onset such as "y":
    # windows holding just the start of the word can be skipped, one reason the gate is off by default)
    whole_word = [s for s in scores if s["t_end"] - 1.0 < speech[0] and speech[1] < s["t_end"]]
    assert whole_word and all(s["speech"] for s in whole_word), str((speech, [(s["t_end"], s["speech"]) for s in scores]))
    assert messages[-1]["windows"] == len(scores) and messages[-1]["windows_scored"] == sum(s["speech"] for s in scores)
    assert messages[-1]["duration_s"] == pytest.approx(4.5, abs=1e-3)


@pytest.mark.data
def test_stream_pcm16_48k_is_resampled(stream_url, clips):
    import soxr

    audio, speech = place(clips, "left")
    audio_48k = soxr.resample(audio, RATE, 48_000).astype(np.float32)
    messages, close_code = stream(f"{stream_url}?sample_rate=48000", pcm16_messages(audio_48k, 48_000))
    assert_one_detection(messages, close_code, "left", speech)


@pytest.mark.data
def test_stream_webm_opus_chunks(stream_url, clips):
    audio, speech = place(clips, "stop")
    data = encode_pyav(audio[:, None], RATE, "webm-opus")
    chunks = [data[i : i + 3_000] for i in range(0, len(data), 3_000)]  # as MediaRecorder's timeslices arrive
    messages, close_code = stream(f"{stream_url}?format=webm", chunks)
    assert_one_detection(messages, close_code, "stop", speech)
    assert messages[-1]["duration_s"] == pytest.approx(4.5, abs=0.05)


@pytest.mark.data
@pytest.mark.parametrize("vad", [False, True], ids=["default", "vad"])
@pytest.mark.parametrize("word", [None, "bed"], ids=["silence", "non-keyword"])
def test_stream_without_a_keyword_detects_nothing(request, clips, word, vad):
    audio, _ = place(clips, word)
    messages, close_code = stream(request.getfixturevalue("vad_url" if vad else "stream_url"), pcm16_messages(audio, RATE))
    assert close_code == 1000 and of_type(messages, "detection") == []
    end = messages[-1]
    assert {k: end[k] for k in ("type", "duration_s", "detections", "windows")} == \
        {"type": "end", "duration_s": 4.5, "detections": 0, "windows": 19}
    if not vad:
        assert end["windows_scored"] == end["windows"]
    elif word is None:  # quiet noise alone: the VAD hears no speech, so the model scores no window at all
        assert end["windows_scored"] == 0
    else:
        assert 0 < end["windows_scored"] < end["windows"]


@pytest.mark.parametrize("query", ["format=mp3", "sample_rate=100", "sample_rate=fast", "threshold=1.5", "threshold=nan",
                                   "top_k=0", "top_k=11"])
def test_stream_invalid_parameters_close_4400(stream_url, query):
    messages, close_code = stream(f"{stream_url}?{query}", [], end=False)
    assert close_code == 4400
    assert messages[-1]["type"] == "error" and messages[-1]["code"] == "invalid_parameters"
    assert query.split("=")[0] in messages[-1]["message"]


@pytest.mark.parametrize("text", ["hello", '{"type": "pause"}', "[1, 2]"])
def test_stream_text_that_is_not_a_control_message_closes_1003(stream_url, text):
    messages, close_code = stream(stream_url, [b"\x00\x00" * 1600, text], end=False)
    assert close_code == 1003 and messages[-1]["code"] == "unsupported_data"


def test_stream_undecodable_webm_closes_1003(stream_url):
    messages, close_code = stream(f"{stream_url}?format=webm", [b"not webm " * 500])
    assert close_code == 1003 and messages[-1]["code"] == "undecodable_audio"


def test_stream_longer_than_the_limit_closes_4408_after_scoring_what_fits(tight_url):
    one_second = pcm16_messages(np.zeros(RATE, np.float32), RATE)
    messages, close_code = stream(tight_url, one_second * 3, end=False)
    assert close_code == 4408
    assert messages[-1]["type"] == "error" and messages[-1]["code"] == "max_duration"
    assert of_type(messages, "scores")[-1]["t_end"] == pytest.approx(2.0)


def refused_as_too_big(url: str, send, **options) -> tuple[int | None, str]:
    """Opens a stream, lets ``send(websocket)`` send something oversized; the close code and reason it got."""
    with connect(url, open_timeout=10, close_timeout=10, **options) as websocket:
        assert json.loads(websocket.recv(timeout=10))["type"] == "ready"
        send(websocket)
        with pytest.raises(ConnectionClosed):
            while True:
                websocket.recv(timeout=10)
        return websocket.close_code, websocket.close_reason


@pytest.mark.parametrize("compression", [None, "deflate"])
def test_a_message_over_the_limit_is_refused_by_the_websocket_layer(tight_url, compression):
    """uvicorn's own limit is the app's (4 KiB here), so an oversized message is refused as it arrives, not
    buffered up to uvicorn's default 16 MiB first; compressed messages count at their decompressed size.
    Uncompressed, 64 KiB: it fits the loopback socket buffers, so the client's send completes before the
    refusal (with 1 MiB the server could close while the client still wrote, and the client lost the close
    frame to a broken pipe)."""
    payload = bytes(1024 * 1024) if compression else bytes(64 * 1024)  # 1 MiB of zeros: about 1 KB when deflated
    close_code, reason = refused_as_too_big(tight_url, lambda websocket: websocket.send(payload),
                                            compression=compression)
    assert close_code == 1009 and "exceeds limit of 4096 bytes" in reason


def test_a_frame_announcing_too_much_is_refused_before_its_payload(tight_url):
    """A frame header announcing 8 MiB (under uvicorn's default limit) and no payload: refused at once with 1009,
    where a server buffering up to 16 MiB would wait for the payload until the idle timeout (4408)."""
    header = bytes([0x82, 0x80 | 127]) + (8 * 1024 * 1024).to_bytes(8, "big") + bytes(4)  # FIN, binary, masked
    close_code, reason = refused_as_too_big(tight_url, lambda websocket: websocket.socket.sendall(header))
    assert close_code == 1009 and "exceeds limit of 4096 bytes" in reason


def test_stream_limits_on_message_size_and_concurrent_streams(tight_url):
    close_code, reason = refused_as_too_big(tight_url, lambda websocket: websocket.send(b"\x00" * 5000))
    assert close_code == 1009 and "exceeds limit of 4096 bytes" in reason
    messages, close_code = stream(f"{tight_url}?sample_rate=8000", [b"\x00" * 4000], end=False)  # 0.25 s of audio
    assert close_code == 1009 and "0.2 s may be pending" in messages[-1]["message"]
    with connect(tight_url, open_timeout=10) as first:
        assert json.loads(first.recv(timeout=10))["type"] == "ready"
        messages, close_code = stream(tight_url, [], end=False)
        assert close_code == 1013 and messages[-1]["code"] == "too_many_streams"
    deadline = time.time() + 10  # the slot frees once the server sees the first stream go
    while time.time() < deadline:
        messages, close_code = stream(tight_url, [])
        if close_code == 1000:
            break
        time.sleep(0.1)
    assert close_code == 1000 and messages[-1]["type"] == "end"


def test_stream_that_goes_quiet_is_closed_4408(tight_url):
    messages, close_code = stream(tight_url, [b"\x00\x00" * 1600], end=False)  # then nothing
    assert close_code == 4408 and messages[-1]["code"] == "idle_timeout"


def test_stream_trickling_audio_is_closed_at_its_wall_clock_limit(tight_url):
    """10 ms of audio every 0.5 s dodges the idle timeout and the audio limit; twice the limit (4 s) ends it."""
    received = []
    started = time.monotonic()
    with connect(tight_url, open_timeout=10, close_timeout=10) as websocket:
        try:
            while time.monotonic() - started < 20:
                websocket.send(b"\x00\x00" * 160)
                time.sleep(0.5)
        except ConnectionClosed:
            pass
        try:
            while True:
                received.append(json.loads(websocket.recv(timeout=10)))
        except ConnectionClosed:
            pass
        close_code = websocket.close_code
    assert close_code == 4408 and received[-1]["code"] == "max_duration" and "wall-clock" in received[-1]["message"]
    assert time.monotonic() - started < 10


def open_streams(base: str) -> tuple[int, float]:
    """(open_streams in /v1/stats, the kws_open_streams gauge in /metrics)."""
    gauge = next(sample.value for family in text_string_to_metric_families(httpx.get(f"{base}/metrics").text)
                 for sample in family.samples if sample.name == "kws_open_streams")
    return httpx.get(f"{base}/v1/stats").json()["open_streams"], gauge


def test_abruptly_dropped_streams_release_their_slots(stream_url):
    """Clients that vanish without a close frame (pcm16 between messages, WebM while its demuxer waits for more)."""
    base = stream_url.replace("ws://", "http://").removesuffix("/v1/stream")
    webm = encode_pyav(tone(3.0, 48_000), 48_000, "webm-opus")
    with contextlib.ExitStack() as stack:
        clients = []
        for query, first in [("format=pcm16", b"\x00\x00" * 1600), ("format=webm", webm[:3_000]), ("format=ogg", b"")]:
            websocket = stack.enter_context(connect(f"{stream_url}?{query}", open_timeout=10, close_timeout=1))
            assert json.loads(websocket.recv(timeout=10))["type"] == "ready"
            if first:
                websocket.send(first)
            clients.append(websocket)
        assert open_streams(base) == (3, 3)
        for websocket in clients:
            websocket.socket.shutdown(socket.SHUT_RDWR)  # no close frame: the TCP connection just goes
    deadline = time.monotonic() + 30
    while open_streams(base) != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert open_streams(base) == (0, 0)


def test_http_endpoints_still_answer_beside_streams(stream_url):
    base = stream_url.replace("ws://", "http://").removesuffix("/v1/stream")
    assert httpx.get(f"{base}/readyz").status_code == 200
    assert httpx.get(f"{base}/v1/models").json()["name"] == "kws10"
