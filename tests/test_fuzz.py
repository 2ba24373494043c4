"""Property tests (hypothesis) of the decode + feature path the service runs on every upload.

``decode_audio`` then ``KeywordModel.windows`` (the log-mel features the model sees) on generated
input: WAV headers with random fields over random payloads, random bytes, and real encodings (WAV,
FLAC, OGG Vorbis, MP3, WebM/Opus) with random mutations. The only exception allowed is
:class:`ServiceError` with a 4xx status; whatever decodes gives finite samples and finite features
of the model's shape. ``EXAMPLES`` sums to 10,000 inputs; derandomized, so CI runs the same inputs
every time (set ``KWS_FUZZ_SEED`` to explore others), and no example database is written.
"""

from __future__ import annotations

import functools
import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from service.audio import AudioLimits, decode_audio
from service.errors import ServiceError
from service.inference import KeywordModel
from service.settings import SHIPPED_MODEL
from tests.audio_files import encode, tone

EXAMPLES = {"wav_header": 4000, "random_bytes": 2500, "mutated_encoding": 3500}  # 10,000 in all
LIMITS = AudioLimits(target_rate=16000, min_seconds=0.1, max_seconds=10.0, max_channels=8)


def fuzz_settings(examples: int):
    return settings(max_examples=examples, deadline=None, database=None, derandomize="KWS_FUZZ_SEED" not in os.environ,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def with_seed(test):
    return seed(int(os.environ["KWS_FUZZ_SEED"]))(test) if "KWS_FUZZ_SEED" in os.environ else test


@functools.lru_cache(maxsize=1)
def model() -> KeywordModel:
    return KeywordModel.load(SHIPPED_MODEL, intra_op_threads=1)


def check_decode_and_features(data: bytes, content_type: str | None = None) -> None:
    """The property: a 4xx ServiceError, or finite samples whose features are finite and model-shaped."""
    try:
        audio = decode_audio(data, LIMITS, content_type)
    except ServiceError as error:
        assert 400 <= error.status < 500, (error.status, error.code)
        assert error.code and error.message
        return
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert np.isfinite(audio.samples).all()
    assert LIMITS.min_seconds <= audio.duration_s <= LIMITS.max_seconds
    features = model().windows(audio.samples, hop_seconds=0.25)
    config = model().features
    assert features.shape[1:] == (config.n_mels, config.num_frames) and len(features) >= 1
    assert np.isfinite(features).all()


# -- WAV headers with random fields ---------------------------------------------------------------------

FORMAT_TAGS = st.one_of(st.sampled_from([1, 3, 6, 7, 0xFFFE]), st.integers(0, 0xFFFF))
RATES = st.one_of(st.sampled_from([0, 1, 999, 1000, 8000, 16000, 44100, 192000, 192001, 384000]), st.integers(0, 2**32 - 1))
BITS = st.one_of(st.sampled_from([0, 1, 7, 8, 16, 24, 32, 64]), st.integers(0, 0xFFFF))
SIZES = st.one_of(st.sampled_from([0, 1, 0xFFFFFFFF, 2**31 - 1]), st.integers(0, 2**32 - 1))


@st.composite
def wav_files(draw) -> bytes:
    tag, channels, rate, bits = draw(FORMAT_TAGS), draw(st.integers(0, 0xFFFF) | st.integers(0, 10)), draw(RATES), draw(BITS)
    block_align = draw(st.sampled_from([(channels * bits // 8) & 0xFFFF, 0, 1, 0xFFFF]) | st.integers(0, 0xFFFF))
    byte_rate = (rate * block_align) & 0xFFFFFFFF
    fmt_size = draw(st.sampled_from([16, 18, 40]) | st.integers(0, 64))
    fmt = struct.pack("<HHIIHH", tag, channels, rate, byte_rate, block_align, bits)[:fmt_size].ljust(fmt_size, b"\0")
    payload = draw(st.binary(max_size=6000) | st.just(tone(0.3)[:, 0].astype("<f4").tobytes()))
    data_size = draw(SIZES | st.just(len(payload)))
    riff_size = draw(SIZES | st.just(4 + 8 + fmt_size + 8 + len(payload)))
    chunks = [b"fmt " + struct.pack("<I", fmt_size) + fmt, b"data" + struct.pack("<I", data_size) + payload]
    if draw(st.booleans()):
        chunks.insert(draw(st.integers(0, 1)), draw(st.binary(min_size=4, max_size=4)) + struct.pack("<I", draw(SIZES))
                      + draw(st.binary(max_size=64)))
    return b"RIFF" + struct.pack("<I", riff_size) + b"WAVE" + b"".join(chunks)


@with_seed
@fuzz_settings(EXAMPLES["wav_header"])
@given(wav_files())
def test_wav_headers_with_random_fields(data):
    check_decode_and_features(data, "audio/wav")


# -- random bytes --------------------------------------------------------------------------------------

MAGICS = [b"", b"RIFF", b"fLaC", b"OggS", b"ID3", b"\xff\xfb", b"\x1a\x45\xdf\xa3", b"\x00\x00\x00\x18ftypM4A ",
          b"FORM", b".snd", b"#EXTM3U\n", b"ffconcat version 1.0\n"]


@with_seed
@fuzz_settings(EXAMPLES["random_bytes"])
@given(st.sampled_from(MAGICS), st.binary(max_size=8192), st.sampled_from([None, "audio/wav", "image/png", "video/webm"]))
def test_random_bytes(magic, data, content_type):
    check_decode_and_features(magic + data, content_type)


# -- real encodings, mutated ---------------------------------------------------------------------------

KINDS = ["wav-pcm16", "wav-float", "flac", "ogg-vorbis", "mp3", "webm-opus"]


@functools.cache
def real_encoding(kind: str) -> bytes:
    rate = 48000 if kind == "webm-opus" else 16000
    return encode(tone(0.5, rate, channels=2), rate, kind)[0]


@st.composite
def mutated_encodings(draw) -> bytes:
    data = bytearray(real_encoding(draw(st.sampled_from(KINDS))))
    for _ in range(draw(st.integers(1, 6))):
        operation = draw(st.sampled_from(["flip", "overwrite", "truncate", "insert", "delete", "duplicate"]))
        position = draw(st.integers(0, max(0, len(data) - 1)))
        head = draw(st.booleans())  # headers are where the interesting fields are
        if head:
            position = min(position, 256, max(0, len(data) - 1))
        if operation == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif operation == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8) | st.sampled_from([b"\xff" * 4, b"\x00" * 4, b"\x7f\xff\xff\xff"]))
            data[position : position + len(chunk)] = chunk
        elif operation == "truncate":
            del data[position:]
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=64))
        elif operation == "delete":
            del data[position : position + draw(st.integers(1, 64))]
        elif operation == "duplicate":
            data[position:position] = data[position : position + draw(st.integers(1, 512))]
    return bytes(data)


@with_seed
@fuzz_settings(EXAMPLES["mutated_encoding"])
@given(mutated_encodings())
def test_mutated_real_encodings(data):
    check_decode_and_features(data)


@pytest.mark.parametrize("kind", KINDS)
def test_unmutated_encodings_decode(kind):
    """The seeds of the mutations are valid audio (else the mutations would only test the error path)."""
    audio = decode_audio(real_encoding(kind), LIMITS)
    assert abs(audio.duration_s - 0.5) < 0.05
