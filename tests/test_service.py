"""The service against a real uvicorn on loopback, and in process with the test client."""

from __future__ import annotations

import asyncio
import csv
import io
import time

import httpx
import numpy as np
import pytest
import soundfile
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from model.vocabulary import SILENCE, UNKNOWN
from service.app import create_app
from service.settings import Settings
from tests.audio_files import PYAV_FORMATS, SOUNDFILE_FORMATS, encode, tone
from tests.servers import running_server


def wav_bytes(samples: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def wait_ready(client: TestClient, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("service never became ready")


@pytest.fixture(scope="module")
def client():
    app = create_app(Settings(max_audio_seconds=10.0, max_wait_ms=50.0, max_batch_files=4))
    with TestClient(app) as test_client:
        wait_ready(test_client)
        yield test_client


@pytest.fixture(scope="module")
def server():
    """A real kws-serve process (uvicorn) on a free loopback port."""
    with running_server(max_wait_ms="20") as running:
        yield running


def test_readyz_before_and_after_warm_up():
    app = create_app(Settings())
    unstarted = TestClient(app)  # lifespan not run: no model yet
    assert unstarted.get("/healthz").json() == {"status": "ok"}
    response = unstarted.get("/readyz")
    assert response.status_code == 503 and response.json()["error"]["code"] == "not_ready"
    assert response.headers["retry-after"] == "1"
    with TestClient(app) as started:
        wait_ready(started)
        assert started.get("/readyz").json()["status"] == "ready"


def test_the_lifespan_shuts_down_every_pool_it_started():
    app = create_app(Settings())
    with TestClient(app) as started:
        wait_ready(started)
        state = app.state.service
        pools = [state.preprocess, state.stream_pool]
        assert all(pool.submit(int, "1").result() == 1 for pool in pools)
    for pool in pools:  # refused once shut down
        with pytest.raises(RuntimeError, match="shutdown"):
            pool.submit(int, "1")


def test_recognize_response_contract(client):
    response = client.post("/v1/recognize?top_k=4", files={"file": ("tone.wav", wav_bytes(tone()[:, 0]), "audio/wav")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= {"label", "score", "top_k", "audio", "latency_ms", "model"}
    assert len(body["top_k"]) == 4
    scores = [item["score"] for item in body["top_k"]]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0 + 1e-5
    # label is the decision: the raw top label, or (a keyword below its threshold) _unknown_ / _silence_,
    # and score is the score of that label (docs/api.md, "What the answer means")
    labels = client.get("/v1/models").json()["labels"]
    every = client.post(f"/v1/recognize?top_k={len(labels)}",
                        files={"file": ("tone.wav", wav_bytes(tone()[:, 0]), "audio/wav")}).json()
    assert {"label": body["label"], "score": body["score"]} in every["top_k"]
    assert body["label"] in (body["top_k"][0]["label"], UNKNOWN, SILENCE)
    assert body["audio"] == {"duration_s": 1.0, "sample_rate": 16000, "channels": 1, "format": "wav"}
    assert set(body["latency_ms"]) == {"decode", "features", "queue", "inference", "vad", "total"}
    assert body["latency_ms"]["total"] >= body["latency_ms"]["inference"] > 0
    assert body["model"]["name"] == "kws10"
    assert response.headers["x-request-id"]


def test_the_cost_is_the_spikes_and_synaptic_events_of_every_window_scored(client):
    """A 2.5-s clip is scored on 7 windows: its cost is their spikes, and spikes x fan-out of their layer."""
    model = client.app.state.service.model
    samples = np.concatenate([np.zeros(8000, np.float32), tone(1.5)[:, 0], np.zeros(8000, np.float32)])
    body = client.post("/v1/recognize", files={"file": ("c.wav", wav_bytes(samples), "audio/wav")}).json()
    decoded, _ = soundfile.read(io.BytesIO(wav_bytes(samples)), dtype="float32")
    spikes = model.infer(model.windows(decoded, 0.25))[1].sum(axis=0)
    assert len(model.windows(decoded, 0.25)) == 7
    metadata = client.get("/v1/models").json()["metadata"]
    fan_out = [layer["synapses"] / size for layer, size in
               zip(metadata["delay_statistics"][1:], metadata["hidden_sizes"])]  # 65536 / 256, 2560 / 256
    assert body["cost"]["spikes_per_layer"] == [round(s) for s in spikes] and min(spikes) > 0
    assert body["cost"]["synaptic_events"] == round(float(spikes @ np.array(fan_out)))


def test_stats_and_metrics_add_up_the_cost_of_every_recognition():
    app = create_app(Settings(max_wait_ms=1.0))
    with TestClient(app) as fresh:
        wait_ready(fresh)
        costs = [fresh.post("/v1/recognize", files={"file": ("c.wav", wav_bytes(tone(seconds)[:, 0]), "audio/wav")})
                 .json()["cost"] for seconds in (0.5, 1.0, 3.0)]
        stats = fresh.get("/v1/stats").json()["cost"]
        samples = metric_samples(fresh.get("/metrics").text)
    total_events = sum(c["synaptic_events"] for c in costs)
    layer_totals = [sum(layer) for layer in zip(*(c["spikes_per_layer"] for c in costs))]
    assert stats["recognitions"] == 3 and stats["synaptic_events"] == total_events
    assert stats["spikes_per_layer"] == layer_totals
    assert stats["mean_per_request"]["synaptic_events"] == pytest.approx(total_events / 3, abs=0.1)
    assert samples[("kws_synaptic_events_total", ())] == total_events
    assert [samples[("kws_spikes_total", (("layer", str(i)),))] for i in range(2)] == layer_totals


@pytest.mark.parametrize("kind", [*SOUNDFILE_FORMATS, *PYAV_FORMATS])
def test_every_supported_format_any_rate_and_channels(client, kind):
    rate = 48000 if "opus" in kind or kind in PYAV_FORMATS else 22050
    data, name = encode(tone(1.0, rate, channels=2), rate, kind)
    response = client.post("/v1/recognize", files={"file": (name, data, "application/octet-stream")})
    assert response.status_code == 200, response.text
    audio = response.json()["audio"]
    assert audio["sample_rate"] == rate and abs(audio["duration_s"] - 1.0) < 0.05


def test_silence_is_recognised_as_silence(client):
    response = client.post("/v1/recognize", files={"file": ("silence.wav", wav_bytes(np.zeros(16000, np.float32)), "audio/wav")})
    assert response.json()["label"] == "_silence_"


@pytest.mark.parametrize("case, status, code", [
    ("empty", 400, "empty_audio"),
    ("garbage", 400, "undecodable_audio"),
    ("png", 415, "unsupported_media"),
    ("too_short", 422, "audio_too_short"),
    ("too_long", 422, "audio_too_long"),
    ("nan", 400, "non_finite_audio"),
    ("rate_1hz", 422, "unsupported_sample_rate"),
    ("missing_field", 422, "invalid_request"),
    ("top_k_zero", 422, "invalid_request"),
    ("top_k_huge", 422, "invalid_top_k"),
    ("top_k_text", 422, "invalid_request"),
    ("too_large", 413, "upload_too_large"),
])
def test_client_errors_are_json_and_name_the_problem(client, case, status, code):
    good = wav_bytes(tone()[:, 0])
    files = {"file": ("clip.wav", good, "audio/wav")}
    url = "/v1/recognize"
    if case == "empty":
        files = {"file": ("clip.wav", b"", "audio/wav")}
    elif case == "garbage":
        files = {"file": ("clip.wav", np.random.default_rng(0).bytes(5000), "audio/wav")}
    elif case == "png":
        files = {"file": ("clip.wav", b"\x89PNG\r\n\x1a\n" + bytes(100), "image/png")}
    elif case == "too_short":
        files = {"file": ("clip.wav", wav_bytes(tone(0.05)[:, 0]), "audio/wav")}
    elif case == "too_long":
        files = {"file": ("clip.flac", encode(np.zeros((16000 * 12, 1), np.float32), 16000, "flac")[0], "audio/flac")}
    elif case == "nan":
        samples = tone()[:, 0]
        samples[100] = np.nan
        files = {"file": ("clip.wav", wav_bytes(samples, subtype="FLOAT"), "audio/wav")}
    elif case == "rate_1hz":
        files = {"file": ("clip.wav", wav_bytes(np.zeros(10, np.float32), rate=1), "audio/wav")}
    elif case == "missing_field":
        files = {"upload": ("clip.wav", good, "audio/wav")}
    elif case.startswith("top_k"):
        url += {"top_k_zero": "?top_k=0", "top_k_huge": "?top_k=1000000000", "top_k_text": "?top_k=abc"}[case]
    elif case == "too_large":
        files = {"file": ("clip.wav", bytes(6 * 1024 * 1024), "audio/wav")}
    response = client.post(url, files=files)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    assert client.get("/readyz").status_code == 200


def test_batch_keeps_order_and_isolates_failures(client):
    good = wav_bytes(np.zeros(16000, np.float32))
    files = [("files", ("a.wav", good, "audio/wav")), ("files", ("b.wav", b"", "audio/wav")),
             ("files", ("c.wav", good, "audio/wav"))]
    response = client.post("/v1/recognize/batch", files=files)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["filename"] for r in results] == ["a.wav", "b.wav", "c.wav"]
    assert results[0]["result"]["label"] == "_silence_" and results[2]["result"] is not None
    assert results[1]["error"]["code"] == "empty_audio" and results[1]["result"] is None
    too_many = client.post("/v1/recognize/batch", files=[("files", ("a.wav", good, "audio/wav"))] * 5)
    assert too_many.status_code == 422 and too_many.json()["error"]["code"] == "too_many_files"


def test_long_clip_reports_the_best_window(client):
    clip = np.concatenate([np.zeros(32000, np.float32), tone()[:, 0], np.zeros(16000, np.float32)])
    body = client.post("/v1/recognize", files={"file": ("long.wav", wav_bytes(clip), "audio/wav")}).json()
    assert body["audio"]["duration_s"] == 4.0
    assert 0.0 <= body["window_start_s"] <= 3.0


def test_models_stats_and_metrics(client):
    models = client.get("/v1/models").json()
    assert models["labels"][-2:] == ["_unknown_", "_silence_"] and "yes" in models["keywords"]
    assert models["features"]["n_mels"] == 40 and models["metadata"]["format"] == "delay-snn-onnx/1"
    assert "delay_statistics" in models["metadata"] and "parameter_count" in models["metadata"]
    stats = client.get("/v1/stats").json()
    assert stats["requests"] > 0 and "400" in stats["errors_by_status"]
    assert {"p50", "p95", "p99", "max"} <= set(stats["latency_ms"]["total"])
    assert stats["queue_depth"] == 0 and stats["batch_size_histogram"]
    samples = metric_samples(client.get("/metrics").text)
    assert samples[("kws_requests_total", (("endpoint", "/v1/recognize"), ("status", "200")))] > 0
    assert ("kws_stage_latency_seconds_bucket", (("le", "+Inf"), ("stage", "inference"))) in samples
    assert samples[("kws_queue_depth", ())] == 0 and samples[("kws_batch_size_count", ())] > 0


def metric_samples(text: str) -> dict[tuple[str, tuple], float]:
    """The exposition parsed by prometheus_client's own parser: (name, sorted labels) -> value."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_metrics_cannot_be_injected_and_paths_add_no_series(server):
    """A path is never a label value: the request counts are labelled by route template, a fixed set."""
    def request_series() -> set:
        return {labels for name, labels in metric_samples(httpx.get(f"{server.base}/metrics").text)
                if name == "kws_requests_total"}

    clip = {"file": ("t.wav", b"", "audio/wav")}  # refused (400) before the model: the server's batches stay as they are
    assert httpx.post(f"{server.base}/v1/recognize", files=clip).status_code == 400
    before = request_series()
    injection = "/v1/recognize%22%7D%20evil%0Ainjected_metric%201%0A1"
    assert httpx.post(server.base + injection, files=clip).status_code == 404
    for index in range(20):
        assert httpx.post(f"{server.base}/v1/recognize{index}x", files=clip).status_code == 404
    text = httpx.get(f"{server.base}/metrics").text
    families = {family.name for family in text_string_to_metric_families(text)}
    assert "injected_metric" not in text and all(name.startswith(("kws_", "process_")) for name in families), families
    assert request_series() == before
    assert {dict(labels)["endpoint"] for labels in before} <= {"/v1/recognize", "/v1/recognize/batch"}


def test_openapi_documents_the_endpoints(client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert {"/v1/recognize", "/v1/recognize/batch", "/v1/models", "/v1/stats", "/healthz", "/readyz", "/metrics"} <= set(paths)
    recognize = paths["/v1/recognize"]["post"]
    assert {"200", "400", "413", "415", "422", "503"} <= set(recognize["responses"])
    assert any(p["name"] == "top_k" for p in recognize["parameters"])


def test_real_uvicorn_batches_concurrent_requests(server):
    clip = wav_bytes(tone()[:, 0])

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.base, timeout=30) as http:
            return await asyncio.gather(*(http.post("/v1/recognize", files={"file": ("t.wav", clip, "audio/wav")})
                                          for _ in range(24)))

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    histogram = httpx.get(f"{server.base}/v1/stats").json()["batch_size_histogram"]
    assert max(int(size) for size in histogram) > 1, histogram
    assert sum(int(size) * count for size, count in histogram.items()) == 24


def test_real_uvicorn_refuses_oversized_chunked_upload(server):
    def chunks():
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\nContent-Type: audio/wav\r\n\r\n'
        for _ in range(64):
            yield bytes(128 * 1024)  # 8 MB of file part, with no Content-Length

    response = httpx.post(f"{server.base}/v1/recognize", content=chunks(),
                          headers={"content-type": "multipart/form-data; boundary=x"}, timeout=30)
    assert response.status_code == 413 and response.json()["error"]["code"] == "upload_too_large"
    assert httpx.get(f"{server.base}/readyz").status_code == 200


@pytest.mark.data
def test_real_validation_clips_are_recognised(server, data_dir):
    with open(data_dir / "gsc" / "manifest.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "validation"]
    keywords = ["yes", "no", "up", "down", "left", "right", "stop", "go"]
    chosen = [r for word in keywords for r in [r for r in rows if r["word"] == word][:4]]
    chosen += [r for r in rows if r["word"] in ("bed", "cat", "happy")][:4]
    correct = 0
    for row in chosen:
        data = (data_dir / "gsc" / row["file"]).read_bytes()
        body = httpx.post(f"{server.base}/v1/recognize", files={"file": ("clip.flac", data, "audio/flac")}, timeout=30).json()
        expected = row["word"] if row["word"] in keywords else "_unknown_"
        correct += body["label"] == expected
    assert correct / len(chosen) >= 0.85, f"{correct}/{len(chosen)} validation clips recognised"


def test_sigterm_shuts_down_cleanly(server):
    server.process.terminate()
    assert server.process.wait(timeout=20) == 0


@pytest.mark.data
def test_label_is_the_thresholded_decision_and_top_k_keeps_the_raw_scores(data_dir, tmp_path):
    """With impossible keyword thresholds nothing is a keyword; with a threshold of 0 the top label stands."""
    import json
    import shutil

    from evaluation.streaming import update_metadata
    from service.settings import SHIPPED_MODEL

    clip = (data_dir / "gsc" / "yes").glob("*.flac")
    wav = wav_bytes(soundfile.read(next(clip))[0])
    answers = {}
    for name, thresholds in (("strict", {"yes": 1.01}), ("open", {"yes": 0.0})):
        model = tmp_path / f"{name}.onnx"
        shutil.copy(SHIPPED_MODEL, model)
        update_metadata(model, {"keyword_thresholds": json.dumps(thresholds)})
        with TestClient(create_app(Settings(model_path=model))) as local:
            wait_ready(local)
            answers[name] = local.post("/v1/recognize?top_k=10", files={"file": ("yes.wav", wav, "audio/wav")}).json()
            assert local.get("/v1/models").json()["metadata"]["keyword_thresholds"] == thresholds
    strict, open_ = answers["strict"], answers["open"]
    assert strict["top_k"] == open_["top_k"]  # the raw scores do not depend on the thresholds
    if open_["label"] == "yes":  # the model hears "yes": a threshold above any score turns it into a non-keyword
        assert strict["label"] in ("_unknown_", "_silence_")
        assert strict["score"] == next(s["score"] for s in strict["top_k"] if s["label"] == strict["label"])
    assert open_["label"] == open_["top_k"][0]["label"]


@pytest.mark.data
def test_a_keyword_answer_needs_speech_in_its_window(data_dir, client):
    from service.inference import KeywordModel
    from service.settings import SHIPPED_MODEL

    model = KeywordModel.load(SHIPPED_MODEL)
    yes, silence = model.labels.index("yes"), model.labels.index("_silence_")
    spoken = soundfile.read(next((data_dir / "gsc" / "yes").glob("*.flac")), dtype="float32")[0]
    noise = (0.05 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    assert model.speech_check(spoken, 0.25, 0, yes) == (yes, True)
    assert model.speech_check(noise, 0.25, 0, yes) == (silence, False)  # "yes" on noise alone does not stand
    assert model.speech_check(noise, 0.25, 0, model.labels.index("_unknown_"))[1] is None  # nothing to check
    body = client.post("/v1/recognize", files={"file": ("yes.wav", wav_bytes(spoken), "audio/wav")}).json()
    if body["label"] == "yes":
        assert body["speech"] is True and body["latency_ms"]["vad"] > 0
    tone_body = client.post("/v1/recognize", files={"file": ("tone.wav", wav_bytes(tone()[:, 0]), "audio/wav")}).json()
    assert tone_body["label"] in ("_unknown_", "_silence_")  # a tone is never a keyword: the VAD hears no speech
