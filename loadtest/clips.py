"""The audio a load test sends: clips from a folder, or generated ones."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

CONTENT_TYPES = {
    ".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".opus": "audio/ogg", ".mp3": "audio/mpeg",
    ".webm": "audio/webm", ".m4a": "audio/mp4",
}


@dataclass(frozen=True)
class Clip:
    name: str
    data: bytes
    content_type: str


def load_clips(folder: Path, limit: int, seed: int = 0) -> list[Clip]:
    """Up to ``limit`` audio files found under ``folder`` (recursively), a seeded random sample when there are more."""
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in CONTENT_TYPES and p.is_file())
    if not paths:
        raise ValueError(f"no audio files ({', '.join(sorted(CONTENT_TYPES))}) under {folder}")
    if len(paths) > limit:
        chosen = np.random.default_rng(seed).choice(len(paths), size=limit, replace=False)
        paths = [paths[i] for i in sorted(chosen)]
    return [Clip(p.name, p.read_bytes(), CONTENT_TYPES[p.suffix.lower()]) for p in paths]


def generated_clips(count: int, seconds: float = 1.0, rate: int = 16000, seed: int = 0) -> list[Clip]:
    """Speech-like test signals (a gliding harmonic tone in noise) as 16-bit WAV: every request does real work."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    clips = []
    for index in range(count):
        pitch = rng.uniform(90, 250) * (1 + 0.3 * t / seconds)
        phase = 2 * np.pi * np.cumsum(pitch) / rate
        voiced = sum(np.sin(k * phase) / k for k in range(1, 6)) * np.hanning(len(t))
        samples = 0.2 * voiced / np.abs(voiced).max() + 0.01 * rng.standard_normal(len(t))
        buffer = io.BytesIO()
        soundfile.write(buffer, samples.astype(np.float32), rate, format="WAV", subtype="PCM_16")
        clips.append(Clip(f"generated-{index}.wav", buffer.getvalue(), "audio/wav"))
    return clips


def clips_for(folder: Path | None, limit: int = 200, seed: int = 0) -> list[Clip]:
    """The clips of ``folder`` when it is given and exists, else 64 generated ones."""
    if folder is not None and folder.is_dir():
        return load_clips(folder, limit, seed)
    return generated_clips(64, seed=seed)
