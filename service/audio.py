"""Decoding uploaded audio to mono float32 at the model's sample rate, within the service's limits.

soundfile (libsndfile) reads WAV (PCM 8/16/24/32-bit, float), FLAC, OGG Vorbis/Opus and MP3;
PyAV (FFmpeg) reads what browsers record (WebM/Opus, M4A/AAC) when it is installed. Limits are
checked before the samples are decoded wherever the container tells the length, and while decoding
otherwise, so a small file that expands to hours of audio is refused, not decoded. FFmpeg only
sees files that start like WebM/Matroska or MP4/M4A: its other demuxers include playlists (HLS,
concat) that would open URLs and local paths named inside the upload.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np
import soundfile

from service.errors import ServiceError

MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 192_000
# Float files may go past full scale (±1), but not by 60 dB: such values are corrupt data, and far
# larger ones (~1e16) would overflow the float32 power spectrum into non-finite features.
MAX_SAMPLE_MAGNITUDE = 1_000.0

# Signatures of common non-audio files, so they get 415 rather than "undecodable audio".
NON_AUDIO_MAGIC = {
    b"\x89PNG": "PNG image", b"%PDF": "PDF document", b"PK\x03\x04": "ZIP archive", b"\xff\xd8\xff": "JPEG image",
    b"GIF8": "GIF image", b"\x7fELF": "executable", b"<!DO": "HTML document", b"<htm": "HTML document",
    b"{": "JSON/text",
}
EBML_MAGIC = b"\x1a\x45\xdf\xa3"  # WebM / Matroska
WAV_UNKNOWN_LENGTHS = (0, 0xFFFFFFFF)  # what streaming writers put in the data chunk size


@dataclass
class DecodedAudio:
    samples: np.ndarray  # mono float32 at the target rate
    sample_rate: int  # of the upload
    channels: int
    format: str
    duration_s: float


@dataclass(frozen=True)
class AudioLimits:
    target_rate: int
    min_seconds: float
    max_seconds: float
    max_channels: int


def _check_header(rate: int, channels: int, limits: AudioLimits) -> None:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ServiceError(422, "unsupported_sample_rate",
                           f"sample rate {rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
    if not 1 <= channels <= limits.max_channels:
        raise ServiceError(422, "too_many_channels", f"{channels} channels; at most {limits.max_channels} are accepted")


def _too_long(limits: AudioLimits) -> ServiceError:
    return ServiceError(422, "audio_too_long", f"audio is longer than the {limits.max_seconds:g} s limit")


def _check_wav_declared_length(data: bytes, limits: AudioLimits) -> None:
    """Refuse a WAV whose header declares more audio than the limit (e.g. 2 GB), whatever follows it.

    libsndfile silently trusts the bytes present instead, so the lie would otherwise go unnoticed.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return
    position, block_align, rate = 12, 0, 0
    while position + 8 <= min(len(data), 64 * 1024):  # the header chunks come first
        chunk_id, size = data[position : position + 4], struct.unpack_from("<I", data, position + 4)[0]
        if chunk_id == b"fmt " and size >= 16 and position + 24 <= len(data):
            _, _, rate, _, block_align = struct.unpack_from("<HHIIH", data, position + 8)
        elif chunk_id == b"data":
            if size not in WAV_UNKNOWN_LENGTHS and block_align and rate and size / block_align / rate > limits.max_seconds:
                raise ServiceError(422, "audio_too_long", f"the WAV header declares {size / block_align / rate:.0f} s "
                                                          f"({size} bytes) of audio; the limit is {limits.max_seconds:g} s")
            return
        position += 8 + size + (size & 1)


def _decode_soundfile(data: bytes, limits: AudioLimits) -> tuple[np.ndarray, int, int, str]:
    _check_wav_declared_length(data, limits)
    with soundfile.SoundFile(io.BytesIO(data)) as handle:
        rate, channels = handle.samplerate, handle.channels
        _check_header(rate, channels, limits)
        max_frames = int(limits.max_seconds * rate)
        if 0 < handle.frames < 2**62 and handle.frames > max_frames:
            raise _too_long(limits)
        samples = handle.read(max_frames + 1, dtype="float32", always_2d=True)
        fmt = handle.format.lower()
    if len(samples) > max_frames:
        raise _too_long(limits)
    return samples, rate, channels, fmt


def _decode_pyav(data: bytes, limits: AudioLimits) -> tuple[np.ndarray, int, int, str]:
    """Samples come back already resampled to ``limits.target_rate`` (FFmpeg's resampler), mono."""
    import av  # optional: only for containers libsndfile cannot read

    with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
        if not container.streams.audio:
            raise ServiceError(415, "unsupported_media", "the file has no audio stream")
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate or stream.rate
        channels = stream.codec_context.channels or 1
        _check_header(rate, channels, limits)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=limits.target_rate)
        chunks, total, max_samples = [], 0, int(limits.max_seconds * limits.target_rate)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunk = out.to_ndarray().reshape(-1)
                chunks.append(chunk)
                total += len(chunk)
                if total > max_samples:
                    raise _too_long(limits)
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
        fmt = container.format.name.split(",")[0]
    mono = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    return mono[:, None], rate, channels, fmt


def _unsupported_media(data: bytes, content_type: str | None) -> ServiceError | None:
    for magic, kind in NON_AUDIO_MAGIC.items():
        if data.startswith(magic):
            return ServiceError(415, "unsupported_media", f"the upload is a {kind}, not audio")
    if content_type and content_type.split("/")[0] in ("image", "text", "video") and content_type != "video/webm":
        return ServiceError(415, "unsupported_media", f"content type {content_type!r} is not audio")
    return None


def decode_audio(data: bytes, limits: AudioLimits, content_type: str | None = None) -> DecodedAudio:
    """Bytes of an audio file → mono float32 at ``limits.target_rate``; raises :class:`ServiceError`."""
    if not data:
        raise ServiceError(400, "empty_audio", "the uploaded file is empty")
    resampled = False
    try:
        samples, rate, channels, fmt = _decode_soundfile(data, limits)
    except ServiceError:
        raise
    except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError) as soundfile_error:
        unsupported = _unsupported_media(data, content_type)
        if unsupported is not None:
            raise unsupported from soundfile_error
        if not (data.startswith(EBML_MAGIC) or data[4:8] == b"ftyp"):
            raise ServiceError(400, "undecodable_audio", "the file could not be decoded as audio "
                               "(WAV, FLAC, OGG, MP3, WebM/Opus or M4A)") from soundfile_error
        try:
            samples, rate, channels, fmt = _decode_pyav(data, limits)
            resampled = True
        except ServiceError:
            raise
        except Exception as error:  # noqa: BLE001 - FFmpeg raises many error types for garbage input
            raise ServiceError(400, "undecodable_audio",
                               "the file could not be decoded as audio (WAV, FLAC, OGG, MP3, WebM/Opus or M4A)") from error
    if samples.size == 0:
        raise ServiceError(400, "empty_audio", "the file holds no audio samples")
    if not np.isfinite(samples).all():
        raise ServiceError(400, "non_finite_audio", "the audio contains NaN or infinite samples")
    if (peak := float(np.abs(samples).max())) > MAX_SAMPLE_MAGNITUDE:
        raise ServiceError(400, "sample_out_of_range", f"samples reach {peak:.3g}; audio is expected within ±1 "
                                                       f"(at most ±{MAX_SAMPLE_MAGNITUDE:g} is accepted)")
    mono = samples.mean(axis=1, dtype=np.float32)
    duration = len(mono) / (limits.target_rate if resampled else rate)
    if duration < limits.min_seconds:
        raise ServiceError(422, "audio_too_short", f"audio is {duration:.3f} s; at least {limits.min_seconds:g} s is needed")
    if duration > limits.max_seconds:
        raise _too_long(limits)
    if rate != limits.target_rate and not resampled:
        import soxr

        mono = soxr.resample(mono, rate, limits.target_rate, quality="HQ").astype(np.float32)
    return DecodedAudio(samples=mono, sample_rate=rate, channels=channels, format=fmt, duration_s=duration)
