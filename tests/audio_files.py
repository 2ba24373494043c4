"""Audio files generated for the tests, in every format the service accepts."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile

SOUNDFILE_FORMATS = {
    "wav-pcm8": ("WAV", "PCM_U8", "wav"),
    "wav-pcm16": ("WAV", "PCM_16", "wav"),
    "wav-pcm24": ("WAV", "PCM_24", "wav"),
    "wav-pcm32": ("WAV", "PCM_32", "wav"),
    "wav-float": ("WAV", "FLOAT", "wav"),
    "flac": ("FLAC", "PCM_16", "flac"),
    "ogg-vorbis": ("OGG", "VORBIS", "ogg"),
    "ogg-opus": ("OGG", "OPUS", "opus"),
    "mp3": ("MP3", "MPEG_LAYER_III", "mp3"),
}
PYAV_FORMATS = {"webm-opus": ("webm", "libopus", 48000), "m4a-aac": ("ipod", "aac", 48000)}


def tone(seconds: float = 1.0, rate: int = 16000, channels: int = 1, frequency: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * frequency * t) * np.hanning(len(t))
    return np.repeat(mono[:, None], channels, axis=1).astype(np.float32)


def encode_soundfile(samples: np.ndarray, rate: int, kind: str) -> bytes:
    container, subtype, _ = SOUNDFILE_FORMATS[kind]
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=container, subtype=subtype)
    return buffer.getvalue()


def encode_pyav(samples: np.ndarray, rate: int, kind: str) -> bytes:
    import av

    container_format, codec, codec_rate = PYAV_FORMATS[kind]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=codec_rate)
        stream.layout = "mono"
        resampler = av.AudioResampler(format=stream.format.name if hasattr(stream, "format") else "fltp",
                                      layout="mono", rate=codec_rate)
        frame = av.AudioFrame.from_ndarray(samples.mean(axis=1, keepdims=True).T.astype(np.float32), format="flt", layout="mono")
        frame.sample_rate = rate
        for resampled in resampler.resample(frame):
            for packet in stream.encode(resampled):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def encode(samples: np.ndarray, rate: int, kind: str) -> tuple[bytes, str]:
    """(bytes, file name) of the audio in the given format."""
    if kind in PYAV_FORMATS:
        return encode_pyav(samples, rate, kind), f"clip.{'webm' if kind.startswith('webm') else 'm4a'}"
    return encode_soundfile(samples, rate, kind), f"clip.{SOUNDFILE_FORMATS[kind][2]}"


def write_mini_gsc(root: Path, rate: int = 16000) -> Path:
    """A miniature shared-data GSC folder (manifest.csv) with a held-out word, and a miniature synthetic corpus."""
    rng = np.random.default_rng(1)
    rows = []
    for word, count in (("yes", 6), ("up", 12), ("cat", 4), ("happy", 3)):
        (root / "gsc" / word).mkdir(parents=True)
        for s in range(count):
            name = f"{word}/{s:08x}_nohash_0.flac"
            soundfile.write(root / "gsc" / name, 0.1 * rng.standard_normal(rate // 2).astype(np.float32), rate)
            rows.append(f"{name},{word},{s:08x},{'validation' if s == 0 else 'training'},0.5,x,y")
    (root / "gsc" / "manifest.csv").write_text("file,word,speaker,split,duration_s,source_repo,source_commit\n"
                                               + "\n".join(rows) + "\n")
    (root / "gsc" / "_background_noise_").mkdir()
    soundfile.write(root / "gsc" / "_background_noise_" / "pink.flac", 0.3 * rng.standard_normal(rate * 4).astype(np.float32), rate)
    synth = root / "synth"
    rows = []
    for kind, text, split, count in (("keyword", "yes", "train", 2), ("common", "table", "train", 5),
                                     ("common", "chair", "validation", 2), ("common", "lamp", "validation", 3),
                                     ("common", "happy", "train", 1),
                                     ("near_miss", "yet", "train", 3)):
        (synth / kind).mkdir(parents=True, exist_ok=True)
        for k in range(count):
            name = f"{kind}/{text}_{k:03d}.flac"
            soundfile.write(synth / name, 0.2 * rng.standard_normal(rate).astype(np.float32), rate)
            rows.append(f"{name},{text},{kind},{text if kind == 'keyword' else ''},espeak,en-us+m1,1.00,1.00,{split},1.0")
    (synth / "manifest.csv").write_text(",".join(
        ("file", "text", "kind", "target", "engine", "speaker", "rate", "pitch", "split", "duration_s")) + "\n"
        + "\n".join(rows) + "\n")
    return root
