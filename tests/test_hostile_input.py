"""Hostile and broken input against a real kws-serve (uvicorn on loopback).

Every case is generated here (no binary fixtures) and sent over real HTTP; each must get a 4xx JSON
error ``{"error": {"code", "message"}}`` whose code names the problem, never a 5xx, and the service
must stay ready after each. The server's resident memory is read from /proc before and after the
whole corpus and must stay within a documented bound (see ``RSS_GROWTH_BOUND_MB``).
"""

from __future__ import annotations

import io
import json
import socket
import struct
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest
import soundfile

from tests.audio_files import tone
from tests.servers import REPO, RunningServer, kws_serve, resident_mb

BODY_READ_TIMEOUT_S = 2.0  # the server's KWS_BODY_READ_TIMEOUT_SECONDS here (30 s by default)
HEADER_READ_TIMEOUT_S = 1.5  # the server's KWS_HEADER_READ_TIMEOUT_SECONDS here (10 s by default)
MAX_UPLOAD_BYTES = 5 * 1024 * 1024  # the default KWS_MAX_UPLOAD_BYTES
BOUNDARY = "hostile-boundary"

# Resident-memory bounds (VmRSS of the server process).
# 1. Over the whole corpus, after warm-up: 64 MB, about one worst-case request buffer. The largest buffer a
#    request may legally make is the decoded samples of a 10-s, 8-channel, 192-kHz upload at float32
#    (10 x 192,000 x 8 x 4 bytes = 61 MB; a small FLAC gets there). glibc keeps freed blocks in per-thread
#    arenas (4 preprocessing threads) instead of returning them, so the first pass of new request shapes
#    raises the steady state without any leak: measured here +18 to +23 MB.
# 2. Over a second pass of the same corpus: 8 MB. Once the allocator has its steady state a repeat must
#    not grow (measured: +0.5 MB over four repeats); a leak of 150 KB per request (~60 requests) would fail.
RSS_GROWTH_BOUND_MB = 64
RSS_REPEAT_BOUND_MB = 8


# -- generated inputs --------------------------------------------------------------------------------


def wav_file(samples: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def wav_header(*, format_tag: int = 1, channels: int = 1, rate: int = 16000, bits: int = 16,
               data_bytes: int = 0) -> bytes:
    """A canonical 44-byte RIFF/WAVE header with every field chosen by the caller (lies included)."""
    block_align = (channels * bits // 8) & 0xFFFF
    fmt = struct.pack("<HHIIHH", format_tag, channels, rate, (rate * block_align) & 0xFFFFFFFF, block_align, bits)
    riff_size = (4 + 8 + len(fmt) + 8 + data_bytes) & 0xFFFFFFFF
    return b"RIFF" + struct.pack("<I", riff_size) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt \
        + b"data" + struct.pack("<I", data_bytes & 0xFFFFFFFF)


def pcm16(seconds: float, rate: int = 16000) -> bytes:
    return (np.random.default_rng(0).standard_normal(int(seconds * rate)) * 1000).astype("<i2").tobytes()


def with_sample(value: float, subtype: str = "FLOAT") -> bytes:
    samples = tone()[:, 0].astype(np.float64)
    samples[1234] = value
    return wav_file(samples, subtype=subtype)


def silence_flac(seconds: float, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with soundfile.SoundFile(buffer, "w", rate, 1, format="FLAC", subtype="PCM_16") as handle:
        block = np.zeros(int(rate * min(seconds, 60)), np.float32)
        for _ in range(max(1, int(seconds // 60))):
            handle.write(block)
    return buffer.getvalue()


def flac_with_unknown_length(data: bytes) -> bytes:
    """STREAMINFO's 36-bit total-samples field set to 0 ("unknown"): the decoder must bound itself."""
    patched = bytearray(data)
    offset = 4 + 4 + 13  # "fLaC", metadata block header, then 13 bytes into STREAMINFO
    patched[offset] &= 0xF0
    patched[offset + 1 : offset + 5] = bytes(4)
    return bytes(patched)


def silence_vorbis(seconds: float, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    # written in blocks: libsndfile's Vorbis writer overflows its stack on one 30-minute write
    with soundfile.SoundFile(buffer, "w", rate, 1, format="OGG", subtype="VORBIS") as handle:
        block = np.zeros(rate * 10, np.float32)
        for _ in range(int(seconds // 10)):
            handle.write(block)
    return buffer.getvalue()


def zip_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("clip.wav", wav_file(tone()[:, 0]))
    return buffer.getvalue()


def png_image() -> bytes:
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixels = zlib.compress(b"\x00\xff\x00\x00" * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 4, 8, 2, 0, 0, 0)) \
        + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def pdf_document() -> bytes:
    return b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def mp3_garbage_frames() -> bytes:
    """An ID3v2 tag, then MPEG-1 layer III frame headers each followed by random bytes."""
    rng = np.random.default_rng(3)
    frames = b"".join(b"\xff\xfb\x90\x64" + rng.bytes(413) for _ in range(40))
    return b"ID3\x04\x00\x00\x00\x00\x00\x00" + frames


def random_bytes(size: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).bytes(size)


# -- request bodies ----------------------------------------------------------------------------------


@dataclass
class Part:
    name: bytes
    data: bytes
    filename: bytes | None = b"clip.wav"
    content_type: bytes = b"audio/wav"


def multipart(*parts: Part) -> bytes:
    """A multipart/form-data body built byte by byte, so names and filenames can be anything."""
    chunks = []
    for part in parts:
        disposition = b'form-data; name="' + part.name + b'"'
        if part.filename is not None:
            disposition += b'; filename="' + part.filename + b'"'
        chunks.append(b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: " + disposition + b"\r\n"
                      + b"Content-Type: " + part.content_type + b"\r\n\r\n" + part.data + b"\r\n")
    return b"".join(chunks) + b"--" + BOUNDARY.encode() + b"--\r\n"


MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


@dataclass
class Hostile:
    """One bad request and the answer it must get."""

    name: str
    status: int
    code: str
    body: Callable[[], bytes | Iterator[bytes]]
    url: str = "/v1/recognize"
    headers: dict[str, str] = field(default_factory=lambda: dict(MULTIPART))
    method: str = "POST"
    mentions: str = ""  # a word the message must contain


def upload(data: bytes | Callable[[], bytes], filename: bytes = b"clip.wav", content_type: bytes = b"audio/wav"):
    return lambda: multipart(Part(b"file", data() if callable(data) else data, filename, content_type))


def chunked_past_limit() -> Iterator[bytes]:
    yield b"--" + BOUNDARY.encode() + b'\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    for _ in range(MAX_UPLOAD_BYTES // (256 * 1024) + 4):
        yield bytes(256 * 1024)


CASES = [
    # the request itself
    Hostile("empty body", 422, "invalid_request", lambda: b"", mentions="file"),
    Hostile("empty body without content type", 422, "invalid_request", lambda: b"", headers={}, mentions="file"),
    Hostile("missing file field", 422, "invalid_request",
            lambda: multipart(Part(b"top_k", b"3", None, b"text/plain")), mentions="file"),
    Hostile("misnamed field", 422, "invalid_request", lambda: multipart(Part(b"audio", wav_file(tone()[:, 0]))),
            mentions="file"),
    Hostile("file sent as a text field", 422, "invalid_request",
            lambda: multipart(Part(b"file", b"RIFF....", None, b"text/plain")), mentions="file"),
    Hostile("duplicate file fields", 422, "duplicate_field",
            lambda: multipart(Part(b"file", wav_file(tone()[:, 0])), Part(b"file", wav_file(tone()[:, 0])))),
    Hostile("thousands of text parts", 422, "too_many_parts",
            lambda: multipart(*[Part(b"x", b"", None, b"text/plain")] * 5000), mentions="fields"),
    Hostile("thousands of file parts", 422, "too_many_parts",
            lambda: multipart(*[Part(b"file", b"")] * 3000), mentions="files"),
    Hostile("thousands of files in a batch", 422, "too_many_parts",
            lambda: multipart(*[Part(b"files", b"")] * 3000), url="/v1/recognize/batch"),
    Hostile("batch over max_batch_files", 422, "too_many_files",
            lambda: multipart(*[Part(b"files", b"")] * 17), url="/v1/recognize/batch"),
    Hostile("empty batch", 422, "invalid_request", lambda: multipart(), url="/v1/recognize/batch", mentions="files"),
    Hostile("multipart without boundary", 400, "malformed_multipart", upload(b"x"),
            headers={"content-type": "multipart/form-data"}, mentions="boundary"),
    Hostile("JSON instead of multipart", 422, "invalid_request", lambda: json.dumps({"file": "UklGRg=="}).encode(),
            headers={"content-type": "application/json"}, mentions="file"),
    Hostile("form-urlencoded instead of multipart", 422, "invalid_request", lambda: b"file=RIFF",
            headers={"content-type": "application/x-www-form-urlencoded"}, mentions="file"),
    Hostile("upload over the size limit", 413, "upload_too_large",
            upload(lambda: bytes(MAX_UPLOAD_BYTES + 100 * 1024))),
    Hostile("chunked body growing past the limit", 413, "upload_too_large", chunked_past_limit),
    Hostile("top_k -1", 422, "invalid_request", upload(lambda: wav_file(tone()[:, 0])), url="/v1/recognize?top_k=-1",
            mentions="top_k"),
    Hostile("top_k 10^9", 422, "invalid_top_k", upload(lambda: wav_file(tone()[:, 0])),
            url="/v1/recognize?top_k=1000000000", mentions="top_k"),
    Hostile("top_k abc", 422, "invalid_request", upload(lambda: wav_file(tone()[:, 0])), url="/v1/recognize?top_k=abc",
            mentions="top_k"),
    Hostile("top_k with 5000 digits", 422, "invalid_request", upload(lambda: wav_file(tone()[:, 0])),
            url="/v1/recognize?top_k=" + "9" * 5000, mentions="top_k"),
    Hostile("GET on the upload route", 405, "method_not_allowed", lambda: b"", method="GET"),
    Hostile("unknown route", 404, "not_found", upload(b"x"), url="/v1/recognise"),
    # the audio
    Hostile("empty file", 400, "empty_audio", upload(b"")),
    Hostile("random bytes as audio", 400, "undecodable_audio", upload(lambda: random_bytes(20_000))),
    Hostile("RIFF magic then random bytes", 400, "undecodable_audio", upload(lambda: b"RIFF" + random_bytes(4000, 1))),
    Hostile("truncated WAV header", 400, "undecodable_audio", upload(lambda: wav_header(data_bytes=32000)[:22])),
    Hostile("WAV header claiming 2 GB", 422, "audio_too_long",
            upload(lambda: wav_header(data_bytes=2**31 - 2) + pcm16(1.0)), mentions="header"),
    Hostile("WAV header with no data", 400, "empty_audio", upload(lambda: wav_header())),
    Hostile("0 samples", 400, "empty_audio", upload(lambda: wav_file(np.zeros(0, np.float32)))),
    Hostile("1 sample", 422, "audio_too_short", upload(lambda: wav_file(np.zeros(1, np.float32)))),
    Hostile("NaN in a float WAV", 400, "non_finite_audio", upload(lambda: with_sample(np.nan))),
    Hostile("+Inf in a float WAV", 400, "non_finite_audio", upload(lambda: with_sample(np.inf))),
    Hostile("-Inf in a double WAV", 400, "non_finite_audio", upload(lambda: with_sample(-np.inf, "DOUBLE"))),
    Hostile("1e30 in a float WAV (finite, absurd)", 400, "sample_out_of_range", upload(lambda: with_sample(1e30))),
    Hostile("sample rate 1 Hz", 422, "unsupported_sample_rate", upload(lambda: wav_file(np.zeros(5, np.float32), 1))),
    Hostile("sample rate 384 kHz", 422, "unsupported_sample_rate",
            upload(lambda: wav_header(rate=384_000, data_bytes=2 * 38_400) + pcm16(0.2, 384_000))),
    Hostile("sample rate 0 in the header", 400, "undecodable_audio",
            upload(lambda: wav_header(rate=0, data_bytes=32000) + pcm16(1.0))),
    Hostile("9 channels", 422, "too_many_channels", upload(lambda: wav_file(np.zeros((16000, 9), np.float32)))),
    Hostile("1024 channels in the header", 422, "too_many_channels",
            upload(lambda: wav_header(channels=1024, data_bytes=2048 * 16) + bytes(2048 * 16))),
    Hostile("0 channels in the header", 400, "undecodable_audio",
            upload(lambda: wav_header(channels=0, data_bytes=32000) + pcm16(1.0))),
    Hostile("unknown WAV format tag", 400, "undecodable_audio",
            upload(lambda: wav_header(format_tag=0x1234, data_bytes=32000) + pcm16(1.0))),
    Hostile("11 s at 1 kHz, 8-bit (tiny file, too long)", 422, "audio_too_long",
            upload(lambda: wav_file(np.zeros(11_000, np.float32), 1000, "PCM_U8"))),
    Hostile("30 minutes of silence as FLAC", 422, "audio_too_long", upload(lambda: silence_flac(1800))),
    Hostile("30-minute FLAC with unknown length", 422, "audio_too_long",
            upload(lambda: flac_with_unknown_length(silence_flac(1800)))),
    Hostile("header-only FLAC", 400, "undecodable_audio", upload(lambda: silence_flac(1)[:42])),
    Hostile("30 minutes of silence as OGG Vorbis", 422, "audio_too_long", upload(lambda: silence_vorbis(1800))),
    Hostile("truncated OGG", 400, "undecodable_audio", upload(lambda: silence_vorbis(60)[:3000])),
    Hostile("MP3 with garbage frames", 400, "undecodable_audio", upload(mp3_garbage_frames, b"clip.mp3", b"audio/mpeg")),
    Hostile("WebM magic then garbage", 400, "undecodable_audio",
            upload(lambda: b"\x1a\x45\xdf\xa3" + random_bytes(5000, 4), b"clip.webm", b"audio/webm")),
    Hostile("MP4 ftyp then garbage", 400, "undecodable_audio",
            upload(lambda: b"\x00\x00\x00\x18ftypM4A " + random_bytes(5000, 5), b"clip.m4a", b"audio/mp4")),
    Hostile("HLS playlist naming a local file", 400, "undecodable_audio",
            upload(b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n", b"a.m3u8")),
    Hostile("ffconcat list naming a local file", 400, "undecodable_audio",
            upload(b"ffconcat version 1.0\nfile '/etc/passwd'\n", b"list.txt", b"application/octet-stream")),
    Hostile("ZIP named .wav", 415, "unsupported_media", upload(zip_archive), mentions="ZIP"),
    Hostile("PNG named .wav", 415, "unsupported_media", upload(png_image), mentions="PNG"),
    Hostile("PDF named .wav", 415, "unsupported_media", upload(pdf_document), mentions="PDF"),
    Hostile("ELF executable named .wav", 415, "unsupported_media", upload(lambda: b"\x7fELF" + bytes(2000))),
    Hostile("image content type", 415, "unsupported_media", upload(lambda: random_bytes(3000, 6), b"a.jpg", b"image/jpeg")),
    Hostile("4 KB filename", 400, "empty_audio", upload(b"", b"a" * 4096 + b".wav")),
    Hostile("200 KB filename", 400, "malformed_multipart", upload(b"", b"a" * 200_000 + b".wav")),
    Hostile("non-UTF-8 filename", 400, "undecodable_audio", upload(lambda: random_bytes(3000, 7), b"\xff\xfe\xc3(.wav")),
    Hostile("filename with NUL and CRLF", 400, "empty_audio", upload(b"", b"a\x00b\\r\\n.wav")),
]


# -- the server ----------------------------------------------------------------------------------------


@dataclass
class Server(RunningServer):
    baseline_rss_mb: float = 0.0  # after warm-up


@pytest.fixture(scope="module")
def server():
    # Output discarded rather than captured: nothing reads it, and an unread pipe must never fill up.
    with kws_serve(max_wait_ms="5", body_read_timeout_seconds=str(BODY_READ_TIMEOUT_S),
                   header_read_timeout_seconds=str(HEADER_READ_TIMEOUT_S)) as running:
        # Warm-up: the largest legal decode (10 s, 8 channels, 192 kHz: a small FLAC of silence that decodes to
        # 61 MB of float32) and ordinary clips, then the baseline.
        largest = io.BytesIO()
        soundfile.write(largest, np.zeros((192_000 * 10, 8), np.float32), 192_000, format="FLAC")
        with httpx.Client(base_url=running.base, timeout=60) as http:
            for clip in (largest.getvalue(), wav_file(tone()[:, 0])):
                for _ in range(3):
                    assert http.post("/v1/recognize", files={"file": ("w.wav", clip, "audio/wav")}).status_code == 200
        yield Server(running.base, running.port, running.process, baseline_rss_mb=resident_mb(running.pid))


def assert_json_error(response: httpx.Response, status: int, code: str, mentions: str = "") -> None:
    assert response.status_code == status, f"{response.status_code} {response.text[:300]}"
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"] and mentions.lower() in error["message"].lower(), error


def assert_ready(server: Server) -> None:
    assert server.process.poll() is None, "the server died"
    assert httpx.get(f"{server.base}/readyz", timeout=10).status_code == 200


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_gets_a_4xx_json_error(server, case):
    headers = {**case.headers, "connection": "close"}
    with httpx.Client(base_url=server.base, timeout=60) as http:
        response = http.request(case.method, case.url, content=case.body(), headers=headers)
    assert_json_error(response, case.status, case.code, case.mentions)
    assert_ready(server)


def raw_exchange(port: int, head: bytes, body: bytes, timeout: float = 30.0) -> tuple[int, dict]:
    """Send bytes as they are (headers that lie included) and read one response: (status, JSON body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(head + body)
        received = b""
        while b"\r\n\r\n" not in received or len(received.split(b"\r\n\r\n", 1)[1]) < content_length(received):
            chunk = connection.recv(65536)
            if not chunk:
                break
            received += chunk
    status_line, _, rest = received.partition(b"\r\n")
    payload = rest.split(b"\r\n\r\n", 1)[1][: content_length(received)]
    return int(status_line.split()[1]), json.loads(payload)


def content_length(response: bytes) -> int:
    for line in response.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 1 << 30


def request_head(content_length_value: str, content_type: str = MULTIPART["content-type"]) -> bytes:
    return (f"POST /v1/recognize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {content_length_value}\r\n\r\n").encode()


def test_content_length_over_the_limit_is_refused_before_the_body(server):
    status, body = raw_exchange(server.port, request_head(str(10 * MAX_UPLOAD_BYTES)), b"")
    assert status == 413 and body["error"]["code"] == "upload_too_large"
    assert_ready(server)


def test_content_length_larger_than_the_body_times_out_with_408(server):
    status, body = raw_exchange(server.port, request_head("100000"), multipart(Part(b"file", b"RIFF")))
    assert status == 408 and body["error"]["code"] == "body_timeout", body
    assert_ready(server)


def test_content_length_smaller_than_the_body_is_a_client_error(server):
    """The server reads only the declared bytes: a truncated form. (The surplus, if the client goes on to
    send it, is a malformed next request, answered 400 malformed_request.)"""
    sent = multipart(Part(b"file", wav_file(tone()[:, 0])))
    status, body = raw_exchange(server.port, request_head(str(len(sent) // 2)), sent[: len(sent) // 2])
    assert 400 <= status < 500 and body["error"]["code"] in {"invalid_request", "malformed_multipart"}, body
    assert_ready(server)


def test_slow_loris_gets_408_while_others_are_served(server):
    """A body trickled byte by byte is cut off after the body-read timeout; other clients are served meanwhile."""
    body = multipart(Part(b"file", wav_file(tone()[:, 0])))
    outcome: dict = {}

    def trickle() -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
            connection.sendall(request_head(str(len(body))))
            started = time.monotonic()
            try:
                for byte in body:
                    connection.sendall(bytes([byte]))
                    time.sleep(0.05)
                    if time.monotonic() - started > 4 * BODY_READ_TIMEOUT_S:
                        break
            except OSError:  # the server closed the connection after answering: the 408 is waiting
                pass
            received = b""
            while chunk := connection.recv(65536):
                received += chunk
            outcome["response"] = received

    trickler = threading.Thread(target=trickle)
    trickler.start()
    clip = wav_file(tone()[:, 0])
    served = 0
    with httpx.Client(base_url=server.base, timeout=30) as http:
        while trickler.is_alive() and served < 50:
            response = http.post("/v1/recognize", files={"file": ("ok.wav", clip, "audio/wav")})
            assert response.status_code == 200
            served += 1
    trickler.join(timeout=30)
    assert served >= 1
    head, _, payload = outcome["response"].partition(b"\r\n\r\n")
    assert head.split()[1] == b"408", head
    assert json.loads(payload)["error"]["code"] == "body_timeout"
    assert_ready(server)


def read_until_closed(connection: socket.socket) -> bytes:
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


@pytest.mark.parametrize("head", [b"", b"POST /v1/recognize HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "],
                         ids=["silent connection", "headers trickled"])
def test_slow_request_heads_get_408_and_the_connection_closes(server, head):
    """uvicorn alone keeps a connection that never completes its headers open forever (slow loris on headers)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        started = time.monotonic()
        try:
            for byte in head:  # one byte every 50 ms: the head never completes before the deadline
                connection.sendall(bytes([byte]))
                time.sleep(0.05)
        except OSError:  # closed by the server while trickling: its 408 is waiting to be read
            pass
        received = read_until_closed(connection)
        elapsed = time.monotonic() - started
    status_line, _, rest = received.partition(b"\r\n")
    assert status_line.split()[1] == b"408", received[:200]
    assert json.loads(rest.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "header_timeout"
    assert elapsed >= HEADER_READ_TIMEOUT_S  # not closed early: a slow but honest client has its full deadline
    assert_ready(server)


def test_the_head_deadline_restarts_for_each_request_on_a_keep_alive_connection(server):
    clip = multipart(Part(b"file", wav_file(tone()[:, 0])))
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        time.sleep(HEADER_READ_TIMEOUT_S / 2)  # a slow but complete first request is served
        connection.sendall(request_head(str(len(clip))) + clip)
        first = connection.recv(65536)
        while b"\r\n\r\n" not in first or len(first.split(b"\r\n\r\n", 1)[1]) < content_length(first):
            first += connection.recv(65536)
        assert first.split()[1] == b"200"
        connection.sendall(b"POST /v1/recognize HTTP/1.1\r\nHost: 1")  # then a second head that stalls
        received = read_until_closed(connection)
    assert received.split()[1] == b"408" and b"header_timeout" in received


def send_raw(port: int, data: bytes) -> bytes:
    """Writes ``data`` (in pieces, stopping if the server closes on it) and reads until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        try:
            for start in range(0, len(data), 65536):
                connection.sendall(data[start : start + 65536])
        except OSError:  # refused and closed mid-send: the answer is waiting
            pass
        received = b""
        try:
            while chunk := connection.recv(65536):
                received += chunk
        except ConnectionResetError:  # the server closed with our surplus unread
            pass
    return received


def head_with(*lines: bytes, target: bytes = b"/v1/recognize", version: bytes = b"HTTP/1.1") -> bytes:
    return b"POST " + target + b" " + version + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"


BODY = multipart(Part(b"file", b"RIFF"))
HOST = b"Host: 127.0.0.1"
TYPE = f"Content-Type: {MULTIPART['content-type']}".encode()
MALFORMED_HEADS = {  # the request, the status, the code, a word of the message
    "Content-Length with Transfer-Encoding": (head_with(HOST, TYPE, b"Content-Length: 10", b"Transfer-Encoding: chunked")
                                              + b"5\r\nhello\r\n0\r\n\r\n", 400, "malformed_request", "transfer-encoding"),
    "two disagreeing Content-Lengths": (head_with(HOST, TYPE, b"Content-Length: 10", b"Content-Length: 12") + BODY,
                                        400, "malformed_request", "content-length"),
    "negative Content-Length": (head_with(HOST, TYPE, b"Content-Length: -5") + BODY, 400, "malformed_request",
                                "content-length"),
    "bad chunk size": (head_with(HOST, TYPE, b"Transfer-Encoding: chunked") + b"zz\r\nhello\r\n0\r\n\r\n",
                       400, "malformed_request", "chunk"),
    "NUL in the path": (head_with(HOST, target=b"/v1/reco\x00gnize"), 400, "malformed_request", "url"),
    "non-ASCII in the path": (head_with(HOST, target="/v1/récognize".encode()), 400, "malformed_request", "url"),
    "request line over 64 KB": (head_with(HOST, target=b"/v1/recognize?" + b"a" * 70_000), 414, "uri_too_long", "target"),
    "100 KB header line": (head_with(HOST, b"X-Big: " + b"a" * 100_000), 431, "headers_too_large", "headers"),
    "16 MB of headers": (head_with(HOST, *[b"X-%d: %s" % (i, b"a" * 1000) for i in range(16_000)]), 431,
                         "headers_too_large", "headers"),
    "a 16 MB header line that never ends": (head_with(HOST)[:-2] + b"X-Endless: " + b"a" * 16_000_000, 431,
                                            "headers_too_large", "headers"),
    "HTTP/1.1 without Host": (head_with(TYPE, b"Content-Length: %d" % len(BODY)) + BODY, 400, "invalid_host", "host"),
    "HTTP/1.1 with two Hosts": (head_with(HOST, b"Host: example.com", TYPE, b"Content-Length: %d" % len(BODY)) + BODY,
                                400, "invalid_host", "host"),
}


@pytest.mark.parametrize("name", MALFORMED_HEADS)
def test_malformed_or_oversized_request_heads_get_a_json_error(server, name):
    """What uvicorn's parser refuses (or lets through) before the app sees a request still gets the JSON contract."""
    request, status, code, word = MALFORMED_HEADS[name]
    head, _, payload = send_raw(server.port, request).partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == str(status).encode(), head[:200]
    assert b"content-type: application/json" in head.lower() and b"connection: close" in head.lower()
    error = json.loads(payload)["error"]
    assert error["code"] == code and word in error["message"].lower(), error
    assert_ready(server)


def test_http_1_0_without_host_is_still_served(server):
    head, _, payload = send_raw(server.port, b"GET /healthz HTTP/1.0\r\n\r\n").partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"200" and json.loads(payload) == {"status": "ok"}


def test_pipelined_requests_are_not_mistaken_for_one_large_head(server):
    """100 small requests in one write (well over the 64 KB head limit together) are each answered."""
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"p" * 900 + b"\r\n\r\n"
    received = send_raw(server.port, request * 99 + request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    assert received.count(b"HTTP/1.1 200 OK") == 100


def test_the_uvicorn_version_range_is_the_tested_one():
    """service/protocol.py subclasses a class uvicorn does not document: pyproject.toml allows only the minor
    version these tests run against."""
    import importlib.metadata
    import tomllib

    from packaging.requirements import Requirement
    from packaging.version import Version

    serve = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["serve"]
    (uvicorn,) = [Requirement(r) for r in serve if Requirement(r).name == "uvicorn"]
    installed = Version(importlib.metadata.version("uvicorn"))
    assert installed in uvicorn.specifier
    assert Version(f"{installed.major}.{installed.minor + 1}.0") not in uvicorn.specifier, uvicorn


def test_boundary_values_are_accepted(server):
    """The edges of the limits are inside them: 8 channels, 1 and 192 kHz, exactly the longest clip."""
    accepted = {
        "8 channels": wav_file(np.zeros((16000, 8), np.float32)),
        "192 kHz": wav_file(tone(1.0, 192_000)[:, 0], 192_000),
        "1 kHz": wav_file(np.zeros(1000, np.float32), 1000),
        "10 s": wav_file(np.zeros(160_000, np.float32)),
    }
    with httpx.Client(base_url=server.base, timeout=60) as http:
        for name, data in accepted.items():
            response = http.post("/v1/recognize", files={"file": ("edge.wav", data, "audio/wav")})
            assert response.status_code == 200, (name, response.text)


def test_no_forward_pass_exceeds_the_batch_cap(server):
    """A 10-s clip at 192 kHz is 37 windows: they go through passes of at most KWS_MAX_BATCH_SIZE (16), which bound
    the memory of a pass, however long the clip."""
    clip = wav_file(np.zeros(1_920_000, np.float32), 192_000)
    with httpx.Client(base_url=server.base, timeout=60) as http:
        assert http.post("/v1/recognize", files={"file": ("long.wav", clip, "audio/wav")}).status_code == 200
        sizes = [int(size) for size in http.get("/v1/stats").json()["batch_size_histogram"]]
    assert max(sizes) == 16, sizes


def test_resident_memory_stays_bounded(server):
    """Runs last in this module: VmRSS growth over the corpus, then over a repeat of it (see the bounds above)."""
    after = resident_mb(server.process.pid)
    with httpx.Client(base_url=server.base, timeout=60) as http:
        for case in CASES:
            response = http.request(case.method, case.url, content=case.body(), headers={**case.headers, "connection": "close"})
            assert response.status_code == case.status, case.name
    repeated = resident_mb(server.process.pid)
    print(f"\nserver VmRSS: {server.baseline_rss_mb:.1f} MB after warm-up, {after:.1f} MB after the corpus "
          f"({after - server.baseline_rss_mb:+.1f} MB; bound {RSS_GROWTH_BOUND_MB}), {repeated:.1f} MB after a repeat "
          f"({repeated - after:+.1f} MB; bound {RSS_REPEAT_BOUND_MB})")
    assert after - server.baseline_rss_mb < RSS_GROWTH_BOUND_MB
    assert repeated - after < RSS_REPEAT_BOUND_MB
