"""A seeded bank of room impulse responses (pyroomacoustics' image-source shoebox rooms), cached as WAV.

Training convolves real and synthetic clips alike with them (audiomentations' ApplyImpulseResponse),
so reverberation says nothing about where a clip came from. Rooms span a small booth to a large hall
(RT60 0.15-1.0 s), the talker 0.3-5 m from the microphone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

RT60_RANGE_S = (0.15, 1.0)
ROOM_RANGE_M = ((2.5, 12.0), (2.5, 10.0), (2.2, 4.5))  # length, width, height
DISTANCE_RANGE_M = (0.3, 5.0)
MAX_IR_SECONDS = 0.8


def room_impulse_response(rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    import pyroomacoustics as pra

    size = np.array([rng.uniform(*r) for r in ROOM_RANGE_M])
    rt60 = rng.uniform(*RT60_RANGE_S)
    try:
        absorption, max_order = pra.inverse_sabine(rt60, size)
    except ValueError:  # the room is too small for that RT60: take the most reverberant it allows
        absorption, max_order = 0.05, 30
    max_order = int(min(max_order, 25))  # bounds the image sources; the late tail is not needed exactly
    room = pra.ShoeBox(size, fs=sample_rate, materials=pra.Material(absorption), max_order=max_order)
    microphone = size * rng.uniform(0.2, 0.8, 3)
    microphone[2] = rng.uniform(0.7, 1.8)
    for _ in range(100):  # a talker at the drawn distance, inside the room
        direction = rng.standard_normal(3)
        direction[2] *= 0.2
        source = microphone + direction / np.linalg.norm(direction) * rng.uniform(*DISTANCE_RANGE_M)
        if np.all(source > 0.1) and np.all(source < size - 0.1):
            break
    else:
        source = size / 2
    room.add_source(source)
    room.add_microphone(microphone)
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], dtype=np.float32)[: int(MAX_IR_SECONDS * sample_rate)]
    return rir / np.abs(rir).max()


def build_room_bank(out_dir: Path, count: int, sample_rate: int, seed: int = 0) -> list[Path]:
    """``count`` impulse responses as ``out_dir/rir_NNN.wav``; existing files are kept."""
    import soundfile

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = out_dir / f"rir_{index:03d}.wav"
        if not path.exists():
            rir = room_impulse_response(np.random.default_rng([seed, index]), sample_rate)
            temporary = path.with_suffix(".partial.wav")
            soundfile.write(str(temporary), rir, sample_rate, subtype="FLOAT")
            temporary.replace(path)
        paths.append(path)
    return paths
