"""Hard negatives (training/hard_negatives.py, kws-mine): what is mined, how it is labelled, how training draws it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from model.features import FeatureConfig
from model.vocabulary import KWS10_KEYWORDS, KWS10_LABELS, SILENCE, UNKNOWN
from tests.audio_files import write_mini_gsc
from tests.conftest import REPO
from training.config import DataConfig
from training.hard_negatives import MiningPlan, Stream, keyword_windows, mine, window_scores
from training.mined_windows import load, save

SHIPPED = REPO / "artifacts" / "kws10" / "model.pt"


def scores_with_peaks(windows: int, peaks: dict[int, tuple[str, float]]) -> np.ndarray:
    """Scores answering _silence_ everywhere except ``peaks``: window → (label on top, its score)."""
    scores = np.full((windows, len(KWS10_LABELS)), 0.01)
    scores[:, KWS10_LABELS.index(SILENCE)] = 0.5
    for index, (label, score) in peaks.items():
        scores[index, KWS10_LABELS.index(label)] = score
    return scores


def test_one_window_per_false_alarm_labelled_by_what_it_holds():
    stream = Stream(np.zeros(16000 * 6, np.float32), [(1.2, 1.6, "GSC word cat")])
    # windows start every 0.1 s: 10-12 straddle the word (one event), 40 holds only noise, 20 answers _unknown_
    scores = scores_with_peaks(51, {10: ("up", 0.6), 11: ("up", 0.9), 12: ("go", 0.7), 40: ("stop", 0.8),
                                    20: (UNKNOWN, 0.9)})
    found = keyword_windows(stream, scores, KWS10_LABELS, 1.0, 16000)
    assert [(round(score, 2), first, label, source) for score, first, label, source in found] == [
        (0.9, 17600, UNKNOWN, "GSC word cat"), (0.8, 64000, SILENCE, "background noise")]


@pytest.fixture(scope="module")
def mined(data_dir):
    plan = MiningPlan(minutes=2, count=40, seed=3, synthetic_fraction=0.0)
    return mine(SHIPPED, plan, {"root": str(data_dir / "gsc"), "synth_root": ""}, progress=False)


@pytest.mark.data
@pytest.mark.slow
def test_mined_windows_are_what_the_network_answers_with_a_keyword_from_training_words_only(mined):
    from model.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(SHIPPED)
    assert 0 < len(mined["labels"]) <= 40
    scores = window_scores(checkpoint.model, mined["waveforms"], checkpoint.feature_config)
    top = [checkpoint.labels[i] for i in scores.argmax(axis=1)]
    assert all(label in KWS10_KEYWORDS for label in top), top  # each one a false keyword answer of this network
    np.testing.assert_allclose(scores.max(axis=1), mined["scores"], atol=1e-5)
    assert list(mined["scores"]) == sorted(mined["scores"], reverse=True)  # most confident first
    assert set(mined["labels"]) <= {UNKNOWN, SILENCE}
    held_out = {"happy", "house", "marvin", "sheila", "tree", "wow", "bird", "dog"}
    words = {source.rsplit(" ", 1)[1] for source in mined["sources"] if source.startswith("GSC word")}
    assert words and not words & (held_out | set(KWS10_KEYWORDS))  # never a keyword, never an open-set word
    report = mined["report"]
    assert report["windows_scored"] == 2 * 591 and report["kept"] == len(mined["labels"])


@pytest.mark.data
@pytest.mark.slow
def test_kws_mine_writes_a_file_training_draws_as_a_pool_of_its_own(data_dir, tmp_path):
    out = tmp_path / "hard.npz"
    done = subprocess.run([sys.executable, "-m", "training.hard_negatives", str(SHIPPED), "--minutes", "1",
                           "--count", "10", "--out", str(out), "--set", f"data.root={data_dir / 'gsc'}",
                           "--set", "data.synth_root=", "--no-progress"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    waveforms, labels, report = load(out)
    assert waveforms.shape == (len(labels), 16000) and report["kept"] == len(labels) > 0
    refused = subprocess.run([sys.executable, "-m", "training.hard_negatives", str(SHIPPED), "--out", str(out),
                              "--set", "data.rooot=x"], cwd=REPO, capture_output=True, text=True)
    assert refused.returncode == 2 and "rooot" in refused.stderr


def test_training_draws_the_mined_windows_in_a_pool_of_their_own(tmp_path):
    from training.datasets import load_dataset

    root = write_mini_gsc(tmp_path)
    rng = np.random.default_rng(0)
    windows = (0.1 * rng.standard_normal((5, 16000))).astype(np.float32)
    save(tmp_path / "hard.npz", {"waveforms": windows, "labels": [UNKNOWN, UNKNOWN, SILENCE, UNKNOWN, SILENCE],
                                 "sources": ["GSC word cat"] * 5, "scores": np.linspace(0.9, 0.5, 5), "report": {}})
    data = DataConfig(task="kws10", root=str(root / "gsc"), synth_root=str(root / "synth"), held_out_words=("happy",),
                      keyword_clips_per_epoch=4, unknown_clips_per_epoch=6, synthetic_unknown_fraction=0.5,
                      hard_negatives=str(tmp_path / "hard.npz"), hard_negative_clips_per_epoch=7, silence_fraction=0.0)
    train = load_dataset(data, FeatureConfig()).train
    mined = [i for i, name in enumerate(train.names) if name.startswith("hard-negative/")]
    assert [KWS10_LABELS[train.labels[i]] for i in mined] == [UNKNOWN, UNKNOWN, SILENCE, UNKNOWN, SILENCE]
    np.testing.assert_allclose(train.waveforms[mined], windows, atol=1 / 32767)
    assert train.epoch_size == 4 + 4 + 6 + 7
    for seed in range(4):
        drawn = [i for i in train.epoch_order(np.random.default_rng(seed)) if i < len(train)]
        assert sum(i in mined for i in drawn) == 7  # its own 7 draws, none taken from the _unknown_ pools
    with pytest.raises(ValueError, match="needs data.hard_negatives"):
        DataConfig(hard_negative_clips_per_epoch=5)
    from training.clips import DatasetMissingError

    with pytest.raises(DatasetMissingError, match="kws-mine"):
        load_dataset(DataConfig(task="kws10", root=str(root / "gsc"), hard_negatives=str(tmp_path / "none.npz")),
                     FeatureConfig())
