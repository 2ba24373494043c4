"""Faults: overload sheds with 503 + Retry-After, SIGTERM under load drains, a bad model file stops start-up."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile

from tests.servers import REPO, running_server


def wav(seconds: float, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    soundfile.write(buffer, (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32), 16000, format="WAV")
    return buffer.getvalue()


async def post_many(base: str, clip: bytes, count: int) -> list[httpx.Response | Exception]:
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=httpx.Limits(max_connections=count)) as client:
        async def one():
            try:
                return await client.post("/v1/recognize", files={"file": ("clip.wav", clip, "audio/wav")})
            except httpx.HTTPError as error:
                return error

        return await asyncio.gather(*(one() for _ in range(count)))


def test_a_full_backlog_sheds_with_503_and_retry_after_then_recovers():
    with running_server(max_queue="4", max_batch_size="1", preprocess_threads="1") as server:
        responses = asyncio.run(post_many(server.base, wav(1.0), 40))
        statuses = [r.status_code for r in responses if isinstance(r, httpx.Response)]
        assert len(statuses) == 40, [r for r in responses if not isinstance(r, httpx.Response)]
        shed = [r for r in responses if r.status_code == 503]
        assert shed and statuses.count(200) >= 4, statuses  # some served, the excess refused at once
        assert set(statuses) <= {200, 503}
        for response in shed:
            assert response.headers["retry-after"] == "1"
            assert response.json()["error"]["code"] == "overloaded"
        assert httpx.get(f"{server.base}/readyz").status_code == 200
        after = httpx.post(f"{server.base}/v1/recognize", files={"file": ("clip.wav", wav(1.0), "audio/wav")})
        assert after.status_code == 200
        metrics = httpx.get(f"{server.base}/metrics").text
        assert 'status="503"' in metrics


def test_an_upload_is_shed_from_its_head_without_its_body_being_read():
    """With the backlog full (here: one upload admitted and still arriving), the next upload is refused with 503 +
    Retry-After as soon as its head is in: this one never sends its 5 MB body, and still gets its answer."""
    with running_server(max_queue="1", body_read_timeout_seconds="20") as server:
        first, rest = upload_in_two_halves(server.port, wav(1.0))  # admitted from its head, uploading
        with first, socket.create_connection(("127.0.0.1", server.port), timeout=30) as second:
            for path in ("/v1/recognize", "/v1/recognize/batch"):
                second.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000000\r\n"
                               "Content-Type: multipart/form-data; boundary=x\r\n\r\n".encode())
                status, body, headers = read_response(second, with_headers=True)
                assert (status, body["error"]["code"], headers.get("retry-after")) == (503, "overloaded", "1")
                second.close()
                second = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            first.sendall(rest)  # the admitted upload is served
            status, body = read_response(first)
            assert status == 200 and body["label"], body
        metrics = httpx.get(f"{server.base}/metrics").text
        assert 'kws_requests_total{endpoint="/v1/recognize/batch",status="503"}' in metrics


def test_sigterm_under_load_finishes_in_flight_requests_refuses_new_ones_and_exits_0():
    clip = wav(10.0)  # 37 windows each: the requests are still being served when the signal lands
    with running_server(max_batch_size="4", preprocess_threads="1", max_queue="1000") as server:
        async def scenario():
            in_flight = asyncio.create_task(post_many(server.base, clip, 12))
            await asyncio.sleep(0.5)
            os.kill(server.pid, signal.SIGTERM)
            signalled = time.monotonic()
            await asyncio.sleep(0.3)
            try:
                async with httpx.AsyncClient(timeout=5) as fresh:
                    late = await fresh.post(f"{server.base}/v1/recognize", files={"file": ("c.wav", wav(1.0), "audio/wav")})
                    late_outcome = late.status_code
            except httpx.HTTPError as error:
                late_outcome = type(error).__name__
            responses = await in_flight
            return responses, signalled, late_outcome, time.monotonic()

        responses, signalled, late_outcome, finished = asyncio.run(scenario())
        exit_code = server.process.wait(timeout=30)
        output = server.output()
    assert [getattr(r, "status_code", r) for r in responses] == [200] * 12
    assert finished - signalled > 0.3  # answers were still arriving after SIGTERM: they really were in flight
    assert late_outcome in ("ConnectError", 503), late_outcome  # refused: socket closed, or not ready
    assert exit_code == 0, output


def upload_in_two_halves(port: int, clip: bytes) -> tuple[socket.socket, bytes]:
    """A connection whose /v1/recognize upload the server has admitted and is reading: its head went with
    ``Expect: 100-continue`` and the server answered ``100 Continue`` (it does once the app reads the body, so
    the head has been parsed and admitted; a signal sent before that could find it not yet accepted), then
    half the body was sent. Returns the connection and the rest of the body."""
    boundary = "halves"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="c.wav"\r\n'
            f"Content-Type: audio/wav\r\n\r\n").encode() + clip + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST /v1/recognize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nExpect: 100-continue\r\n\r\n").encode()
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    connection.sendall(head)
    interim = b""
    while b"\r\n\r\n" not in interim and (chunk := connection.recv(4096)):
        interim += chunk
    assert interim.startswith(b"HTTP/1.1 100 "), f"the upload was not admitted: {interim[:300]!r}"
    connection.sendall(body[: len(body) // 2])
    return connection, body[len(body) // 2 :]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drops_readiness_in_every_worker(workers):
    """Uploads that complete after SIGTERM reach a worker that has dropped readiness: 503 not_ready, whichever
    worker holds the connection (six connections, spread by the kernel over the workers)."""
    with running_server("--workers", str(workers)) as server:
        ready_in_a_row = 0
        deadline = time.monotonic() + 60
        while ready_in_a_row < 12 and time.monotonic() < deadline:  # every worker warmed up, not just the first
            ready_in_a_row = ready_in_a_row + 1 if httpx.get(f"{server.base}/readyz").status_code == 200 else 0
        assert ready_in_a_row == 12
        halves = [upload_in_two_halves(server.port, wav(1.0)) for _ in range(6)]
        os.kill(server.pid, signal.SIGTERM)
        time.sleep(2.0)  # the supervisor passes the signal on to its workers
        answers = []
        for connection, rest in halves:
            with connection:
                connection.sendall(rest)
                answers.append(read_response(connection))
        assert server.process.wait(timeout=30) == 0, server.output()
    assert [status for status, _ in answers] == [503] * 6, answers
    assert all(body["error"]["code"] == "not_ready" for _, body in answers)


def read_response(connection: socket.socket, with_headers: bool = False):
    """(status, JSON body) of one response, and its headers when asked."""
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        headers = dict(line.decode("latin-1").lower().split(": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
        length = int(headers["content-length"]) if "content-length" in headers else None
        if length is not None and len(body) >= length:
            answer = int(head.split()[1]), json.loads(body[:length])
            return (*answer, headers) if with_headers else answer
    raise AssertionError(f"the connection closed before a full response: {received[:300]!r}")


def onnx_file(tmp_path, kind: str):
    path = tmp_path / f"{kind}.onnx"
    if kind == "corrupt":
        path.write_bytes(os.urandom(4096))
    elif kind == "truncated":
        path.write_bytes((REPO / "service" / "models" / "kws10.onnx").read_bytes()[:100_000])
    elif kind in ("wrong_shape", "no_metadata"):
        import onnx
        from onnx import TensorProto, helper

        mels = 64 if kind == "wrong_shape" else 40
        graph = helper.make_graph(
            [helper.make_node("ReduceMean", ["features"], ["scores"], axes=[2], keepdims=0)], "g",
            [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", mels, "time"])],
            [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", mels])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        if kind == "wrong_shape":
            features = '{"sample_rate": 16000, "n_mels": 40}'
            model.metadata_props.extend([onnx.StringStringEntryProto(key="labels", value='["a", "b"]'),
                                         onnx.StringStringEntryProto(key="feature_config", value=features)])
        onnx.save(model, path)
    return path


@pytest.mark.parametrize("kind, problem", [
    ("missing", "does not exist"),
    ("corrupt", "could not be loaded"),
    ("truncated", "could not be loaded"),
    ("no_metadata", "lacks delay-SNN metadata"),
    ("wrong_shape", "expected input 'features'"),
])
def test_a_bad_model_file_stops_start_up_with_the_file_and_problem_named(tmp_path, kind, problem):
    path = tmp_path / "missing.onnx" if kind == "missing" else onnx_file(tmp_path, kind)
    result = subprocess.run([sys.executable, "-m", "service.cli", "--port", "0", "--model", str(path)], cwd=REPO,
                            capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2
    assert str(path) in result.stderr and problem in result.stderr, result.stderr


def model_failing_at_run_time(tmp_path) -> Path:
    """A valid delay-SNN-shaped ONNX file (loads, metadata and shapes right) whose forward pass always raises:
    its Gather reads feature rows 100 and 101 of 40."""
    import onnx
    from onnx import TensorProto, helper

    path = tmp_path / "fails_at_run_time.onnx"
    indices = helper.make_tensor("rows", TensorProto.INT64, [2], [100, 101])
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["features"], ["mean"], axes=[2], keepdims=0),
         helper.make_node("Gather", ["mean", "rows"], ["scores"], axis=1)], "g",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 40, "time"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 2])], initializer=[indices])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.metadata_props.extend([onnx.StringStringEntryProto(key="labels", value='["yes", "_unknown_"]'),
                                 onnx.StringStringEntryProto(key="feature_config", value='{"sample_rate": 16000, "n_mels": 40}')])
    onnx.save(model, path)
    return path


def test_a_warm_up_that_fails_fails_liveness_and_names_the_cause(tmp_path, caplog):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    with TestClient(create_app(Settings(model_path=model_failing_at_run_time(tmp_path)))) as client:
        deadline = time.monotonic() + 30
        while client.get("/healthz").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        health = client.get("/healthz")
        assert health.status_code == 503 and health.json()["error"]["code"] == "unhealthy"
        assert "warm-up failed" in health.json()["error"]["message"] and "Gather" in health.json()["error"]["message"]
        assert client.get("/readyz").status_code == 503
    assert any("warm-up failed" in record.getMessage() and record.exc_info for record in caplog.records)


def test_kws_serve_exits_non_zero_when_its_warm_up_fails(tmp_path):
    path = model_failing_at_run_time(tmp_path)
    result = subprocess.run([sys.executable, "-m", "service.cli", "--port", "0", "--model", str(path)], cwd=REPO,
                            capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 1, result.stderr[-2000:]
    assert "kws-serve: warm-up failed" in result.stderr and "Gather" in result.stderr


def test_a_batch_of_long_clips_is_admitted_as_one_request_and_not_shed_against_itself():
    """16 ten-second clips are 592 windows, far over the 64-window backlog bound: all must still be served."""
    with running_server() as server:
        files = [("files", (f"clip-{i}.wav", wav(10.0, seed=i), "audio/wav")) for i in range(16)]
        response = httpx.post(f"{server.base}/v1/recognize/batch", files=files, timeout=120)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [item["error"] for item in results] == [None] * 16
    assert all(item["result"]["audio"]["duration_s"] == 10.0 for item in results)


def test_admission_counts_cost_against_the_backlog_and_admits_big_work_only_into_an_empty_one():
    from service.batching import MicroBatcher, Overloaded

    batcher = MicroBatcher(lambda features: features, max_batch_size=4, max_wait_ms=0, max_queue=4)
    with batcher.incoming(cost=16):  # a 16-file batch on an idle server
        with pytest.raises(Overloaded):
            with batcher.incoming():
                pass
        with batcher.incoming(cost=0):  # a file of that admitted batch
            pass
    with batcher.incoming(), batcher.incoming(cost=2):
        with pytest.raises(Overloaded):  # 3 in the backlog + 2 > 4
            with batcher.incoming(cost=2):
                pass
        with batcher.incoming():  # 3 + 1 fits
            pass
    assert batcher.depth == 0


def test_a_long_request_is_split_into_forward_passes_of_at_most_the_batch_cap():
    from service.batching import MicroBatcher

    passes = []

    def model(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        passes.append(len(features))
        return features * 2, features + 1

    async def scenario():
        batcher = MicroBatcher(model, max_batch_size=16, max_wait_ms=5, max_queue=1000)
        batcher.start()
        try:
            long, short = np.arange(37, dtype=np.float32), np.arange(100, 105, dtype=np.float32)
            with batcher.incoming(), batcher.incoming():
                results = await asyncio.gather(batcher.submit(long), batcher.submit(short))
            return long, short, results
        finally:
            await batcher.stop()

    long, short, (long_result, short_result) = asyncio.run(scenario())
    assert max(passes) <= 16 and sum(passes) == 42, passes
    np.testing.assert_array_equal(long_result.scores, long * 2)  # every row back in its place
    np.testing.assert_array_equal(long_result.outputs[1], long + 1)
    np.testing.assert_array_equal(short_result.scores, short * 2)
    assert long_result.batch_size <= 16


@pytest.mark.parametrize("name, value", [("KWS_MAX_BATCH_SIZE", "abc"), ("KWS_CORS_ORIGINS", "[1,"), ("KWS_PORT", "70000")])
def test_a_bad_setting_stops_start_up_with_its_name(name, value):
    result = subprocess.run([sys.executable, "-m", "service.cli"], cwd=REPO, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO), name: value})
    assert result.returncode == 2
    assert result.stderr.startswith(f"kws-serve: invalid setting {name}: "), result.stderr
    assert "Traceback" not in result.stderr
