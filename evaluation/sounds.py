"""Non-speech test sounds that training never uses: mains hum, tones, chirps, clicks, square waves,
chords and DC. Seeded; each generator returns one clip at unit RMS (the caller sets the level)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

TWO_PI = 2 * np.pi


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def hum(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum: 50 or 60 Hz and its harmonics, as a transformer or a ground loop makes it."""
    f0 = float(rng.choice([50.0, 60.0])) * rng.uniform(0.995, 1.005)
    t = np.arange(n) / rate
    harmonics = range(1, int(rng.integers(3, 16)))
    return _unit_rms(sum(rng.uniform(0.2, 1.0) / k * np.sin(TWO_PI * f0 * k * t + rng.uniform(0, TWO_PI)) for k in harmonics))


def tone(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A steady sine, 100 Hz - 6 kHz (a beep, a test tone, a whistle)."""
    f = float(np.exp(rng.uniform(np.log(100), np.log(6000))))
    return _unit_rms(np.sin(TWO_PI * f * np.arange(n) / rate + rng.uniform(0, TWO_PI)))


def chirp(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A sine sweeping between two frequencies (100 Hz - 6 kHz), linearly or exponentially."""
    f0, f1 = np.exp(rng.uniform(np.log(100), np.log(6000), 2))
    t = np.arange(n) / rate
    duration = n / rate
    if rng.random() < 0.5:
        phase = TWO_PI * (f0 * t + (f1 - f0) * t**2 / (2 * duration))
    else:
        k = (f1 / f0) ** (1 / duration)
        phase = TWO_PI * f0 * (k**t - 1) / np.log(k) if abs(k - 1) > 1e-6 else TWO_PI * f0 * t
    return _unit_rms(np.sin(phase))


def clicks(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A click train, 2-50 clicks a second, each a short decaying burst (a ticking clock, a relay, a keyboard)."""
    period = int(rate / rng.uniform(2, 50))
    x = np.zeros(n)
    width = int(rate * rng.uniform(0.0005, 0.003))
    burst = rng.standard_normal(width) * np.exp(-np.arange(width) / max(1, width / 4))
    for start in range(int(rng.integers(period)), n - width, period):
        x[start : start + width] += burst
    return _unit_rms(x)


def square(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A square wave, 50 Hz - 2 kHz (a buzzer)."""
    f = float(np.exp(rng.uniform(np.log(50), np.log(2000))))
    return _unit_rms(np.sign(np.sin(TWO_PI * f * np.arange(n) / rate + rng.uniform(0, TWO_PI))) + 1e-9)


def chords(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """One or two music-like chords: a major or minor triad (plus octave) of harmonic tones with an envelope."""
    t = np.arange(n) / rate
    x = np.zeros(n)
    count = int(rng.integers(1, 3))
    for index in range(count):
        root = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        intervals = [0, 4, 7, 12] if rng.random() < 0.5 else [0, 3, 7, 12]
        start, stop = index * n // count, (index + 1) * n // count
        span = t[start:stop] - t[start]
        envelope = np.minimum(1.0, span / 0.01) * np.exp(-span / rng.uniform(0.3, 2.0))
        for semitones in intervals:
            f = root * 2 ** (semitones / 12)
            for k in range(1, 6):
                if f * k < rate / 2:
                    x[start:stop] += envelope / k * np.sin(TWO_PI * f * k * span)
    return _unit_rms(x)


def dc(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A constant offset (a microphone's bias), with a little noise a millionth of its level."""
    return (np.sign(rng.standard_normal()) * np.ones(n) + 1e-6 * rng.standard_normal(n)).astype(np.float32)


SOUNDS: dict[str, Callable[[int, int, np.random.Generator], np.ndarray]] = {
    "hum": hum, "tone": tone, "chirp": chirp, "clicks": clicks, "square": square, "chords": chords, "dc": dc,
}
