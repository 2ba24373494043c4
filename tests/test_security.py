"""Security: the optional API key (HTTP and WebSocket), CORS, filenames that never reach the filesystem,
and checkpoints that refuse pickled code."""

from __future__ import annotations

import io
import json
import pickle
import time
import uuid
from pathlib import Path

import httpx
import pytest
import soundfile
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings, parse_origins
from tests.audio_files import tone
from tests.servers import REPO, kws_serve

API_KEY = "s3cret-" + uuid.uuid4().hex
ORIGIN = "https://kws.example"


def clip() -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, tone()[:, 0], 16000, format="WAV")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def keyed_server():
    """A real kws-serve with KWS_API_KEY and KWS_CORS_ORIGINS set."""
    with kws_serve(api_key=API_KEY, cors_origins=f'["{ORIGIN}"]') as server:
        yield server.base


def recognize(base: str, headers: dict[str, str] | None = None, filename: str = "clip.wav") -> httpx.Response:
    return httpx.post(f"{base}/v1/recognize", files={"file": (filename, clip(), "audio/wav")}, headers=headers,
                      timeout=30)


@pytest.mark.parametrize("headers", [None, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": f"Basic {API_KEY}"}, {"X-API-Key": API_KEY[:-1]}, {"X-API-Key": ""}],
                         ids=["no key", "wrong X-API-Key", "wrong bearer", "other scheme", "key prefix", "empty key"])
def test_v1_without_the_right_key_is_401(keyed_server, headers):
    response = recognize(keyed_server, headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized" and "API key" in response.json()["error"]["message"]
    assert response.headers["www-authenticate"] == "Bearer"
    for path in ("/v1/models", "/v1/stats"):
        assert httpx.get(keyed_server + path, headers=headers).status_code == 401


@pytest.mark.parametrize("headers", [{"X-API-Key": API_KEY}, {"Authorization": f"Bearer {API_KEY}"},
                                     {"authorization": f"bearer {API_KEY}"}], ids=["X-API-Key", "Bearer", "lower case"])
def test_v1_with_the_key_is_served(keyed_server, headers):
    response = recognize(keyed_server, headers)
    assert response.status_code == 200, response.text
    assert httpx.get(f"{keyed_server}/v1/models", headers=headers).status_code == 200


def test_operations_page_and_docs_stay_open(keyed_server):
    for path in ("/healthz", "/readyz", "/metrics", "/", "/docs", "/openapi.json"):
        assert httpx.get(keyed_server + path).status_code == 200, path


def test_websocket_needs_the_key(keyed_server):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    ws_base = keyed_server.replace("http://", "ws://")
    for url in (f"{ws_base}/v1/stream", f"{ws_base}/v1/stream?api_key=wrong"):
        with connect(url, open_timeout=10) as websocket:
            message = json.loads(websocket.recv(timeout=10))
            with pytest.raises(ConnectionClosed):
                websocket.recv(timeout=10)
        assert message["type"] == "error" and message["code"] == "unauthorized" and "api_key" in message["message"]
        assert websocket.close_code == 1008
    for url, headers in ((f"{ws_base}/v1/stream?api_key={API_KEY}", None),
                         (f"{ws_base}/v1/stream", {"X-API-Key": API_KEY})):
        with connect(url, additional_headers=headers, open_timeout=10) as websocket:
            assert json.loads(websocket.recv(timeout=10))["type"] == "ready"


def test_cors_headers_when_configured(keyed_server):
    preflight = httpx.options(f"{keyed_server}/v1/recognize", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"})
    assert preflight.status_code == 200  # no key needed for the preflight
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
    answered = recognize(keyed_server, {"X-API-Key": API_KEY, "Origin": ORIGIN})
    assert answered.headers["access-control-allow-origin"] == ORIGIN
    refused = recognize(keyed_server, {"Origin": ORIGIN})  # the browser can read the 401 too
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.get(f"{keyed_server}/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_no_key_and_no_cors_by_default():
    with TestClient(create_app(Settings())) as client:
        deadline = time.time() + 30
        while client.get("/readyz").status_code != 200 and time.time() < deadline:
            time.sleep(0.05)
        response = client.post("/v1/recognize", files={"file": ("a.wav", clip(), "audio/wav")},
                               headers={"Origin": ORIGIN})
        assert response.status_code == 200
        assert not any(name.startswith("access-control-") for name in response.headers)
        preflight = client.options("/v1/recognize", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in preflight.headers


def test_cors_origins_setting_accepts_comma_and_json_lists():
    assert parse_origins("") == []
    assert parse_origins("https://a.example, https://b.example") == ["https://a.example", "https://b.example"]
    assert parse_origins('["https://a.example", "http://localhost:3000"]') == ["https://a.example", "http://localhost:3000"]
    with pytest.raises(ValueError):
        parse_origins('[1, 2]')


def test_filenames_never_reach_the_filesystem(keyed_server, tmp_path):
    """Upload names are echoed, never used as paths: traversal and absolute names create nothing."""
    marker = f"kws-security-{uuid.uuid4().hex}"
    names = [f"../../{marker}", f"/tmp/{marker}", f"..\\..\\{marker}", f"{tmp_path}/{marker}", f"./{marker}"]
    headers = {"X-API-Key": API_KEY}
    for name in names:
        assert recognize(keyed_server, headers, filename=name).status_code == 200
    batch = httpx.post(f"{keyed_server}/v1/recognize/batch", headers=headers, timeout=30,
                       files=[("files", (name, clip(), "audio/wav")) for name in names[:3]])
    assert [item["filename"] for item in batch.json()["results"]] == names[:3]
    candidates = [REPO / marker, REPO.parent / marker, REPO.parent.parent / marker, Path("/tmp") / marker,
                  tmp_path / marker, Path("/") / marker]
    assert not [str(path) for path in candidates if path.exists()]


class _CreatesAFileWhenUnpickled:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_checkpoints_refuse_pickled_code(tmp_path):
    """load_checkpoint uses torch.load(weights_only=True): a pickle that would run code is refused, unexecuted."""
    torch = pytest.importorskip("torch")
    from model.checkpoint import load_checkpoint

    marker = tmp_path / "payload-ran"
    path = tmp_path / "hostile.pt"
    torch.save({"kind": "delay-snn", "format_version": 1, "state_dict": _CreatesAFileWhenUnpickled(marker)}, path)
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()
    # the same bytes through plain pickle would have run the payload: the test's payload is real
    with open(path, "rb") as handle:
        assert handle.read(2) == b"PK"  # torch's zip container; its data.pkl holds the reduce call
    pickle.loads(pickle.dumps(_CreatesAFileWhenUnpickled(marker)))
    assert marker.exists()
