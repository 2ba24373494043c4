"""Plan, render and cache the synthetic corpus: FLAC clips plus ``manifest.csv``.

The plan is a pure function of the seed and the word lists: each text gets a number of renditions by
kind, each rendition a voice drawn from a generator seeded by (seed, text, rendition). Clips already on
disk are kept, so an interrupted run resumes, and a second run with the same arguments renders nothing.

Split: negatives by a hash of their text (a validation word is never a training word), keywords by a
hash of their voice (validation keywords come from voices that speak no training keyword).
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.synth.voices import Voice, sample_voice, synthesize
from training.synth.words import Text

MANIFEST = "manifest.csv"
RENDITIONS = {"keyword": 500, "speech_commands": 30, "near_miss": 6, "common": 2, "phrase": 1}
VALIDATION_FRACTION = {"keyword": 0.15, "default": 0.10}
MAX_SECONDS = 3.0
PEAK = 0.5  # clips are stored at one peak level; training draws the level (augmentation)
TRIM_DB = 40.0  # leading/trailing frames this far below the loudest frame are cut
MARGIN_S = 0.05
FIELDS = ("file", "text", "kind", "target", "engine", "speaker", "rate", "pitch", "split", "duration_s")


@dataclass(frozen=True)
class Item:
    text: Text
    rendition: int
    voice: Voice

    @property
    def file(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "_", self.text.text.lower()).strip("_")
        return f"{self.text.kind}/{slug}_{self.rendition:03d}.flac"

    @property
    def split(self) -> str:
        if self.text.kind == "keyword":
            return "validation" if _fraction(self.voice.key) < VALIDATION_FRACTION["keyword"] else "train"
        return "validation" if _fraction(self.text.text) < VALIDATION_FRACTION["default"] else "train"


def _fraction(key: str) -> float:
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def plan(texts: Sequence[Text], engines: list[str], seed: int, renditions: dict[str, int] = RENDITIONS) -> list[Item]:
    items = []
    for text in texts:
        for k in range(renditions[text.kind]):
            digest = int(hashlib.sha1(f"{text.kind}/{text.text}".encode()).hexdigest()[:8], 16)
            rng = np.random.default_rng([seed, digest, k])
            items.append(Item(text, k, sample_voice(rng, engines)))
    return items


def trim(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Cut leading and trailing silence (frames ``TRIM_DB`` below the loudest), keeping a short margin."""
    frame = max(1, sample_rate // 100)
    count = len(audio) // frame
    if count == 0:
        return audio
    energy = (audio[: count * frame].reshape(count, frame) ** 2).mean(axis=1)
    loud = np.flatnonzero(energy >= energy.max() * 10 ** (-TRIM_DB / 10))
    margin = int(MARGIN_S * sample_rate)
    start = max(0, loud[0] * frame - margin)
    end = min(len(audio), (loud[-1] + 1) * frame + margin)
    return audio[start:end]


def render(item: Item, out_dir: Path, sample_rate: int) -> dict[str, str] | None:
    """Render one clip to ``out_dir / item.file`` unless it exists; its manifest row, or None if silent."""
    import soundfile

    path = out_dir / item.file
    if not path.exists():
        audio = trim(synthesize(item.text.text, item.voice, sample_rate), sample_rate)
        audio = audio[: int(MAX_SECONDS * sample_rate)]
        peak = float(np.abs(audio).max()) if len(audio) else 0.0
        if peak < 1e-4 or len(audio) < 0.1 * sample_rate:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".partial.flac")
        soundfile.write(str(temporary), audio * (PEAK / peak), sample_rate, subtype="PCM_16")
        temporary.replace(path)  # a clip on disk is always complete, so resuming never reads a torn file
    duration = soundfile.info(str(path)).duration
    voice = item.voice
    return {"file": item.file, "text": item.text.text, "kind": item.text.kind, "target": item.text.target,
            "engine": voice.engine, "speaker": voice.speaker, "rate": f"{voice.rate:.2f}",
            "pitch": f"{voice.pitch:.2f}", "split": item.split, "duration_s": f"{duration:.3f}"}


def _render_star(arguments: tuple[Item, Path, int]) -> dict[str, str] | None:
    try:
        return render(*arguments)
    except Exception as error:  # noqa: BLE001 - one failed rendition must not stop a corpus of thousands
        return {"error": f"{arguments[0].file}: {error}"}


def write_manifest(out_dir: Path, rows: Iterable[dict[str, str]]) -> None:
    temporary = out_dir / (MANIFEST + ".partial")
    with open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["file"]))
    temporary.replace(out_dir / MANIFEST)


def read_manifest(out_dir: Path) -> list[dict[str, str]]:
    with open(out_dir / MANIFEST, newline="") as handle:
        return list(csv.DictReader(handle))


def build(items: Sequence[Item], out_dir: Path, sample_rate: int, jobs: int = 1, progress: bool = True) -> tuple[list[dict[str, str]], list[str]]:
    """Render every item (in ``jobs`` processes), write the manifest; (rows, errors)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    arguments = [(item, out_dir, sample_rate) for item in items]
    rows: list[dict[str, str]] = []
    errors: list[str] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), unit="clip", desc="kws-synth")

    def collect(results: Iterable[dict[str, str] | None]) -> None:
        for count, row in enumerate(results, 1):
            if row is not None and "error" in row:
                errors.append(row["error"])
            elif row is not None:
                rows.append(row)
            if bar is not None:
                bar.update()
            if count % 2000 == 0:
                write_manifest(out_dir, rows)  # progress survives an interruption

    if jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            collect(pool.imap(_render_star, arguments, chunksize=8))
    else:
        collect(map(_render_star, arguments))
    if bar is not None:
        bar.close()
    write_manifest(out_dir, rows)
    return rows, errors
