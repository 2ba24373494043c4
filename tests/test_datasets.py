import csv
from dataclasses import replace

import numpy as np
import pytest
import soundfile

from model.features import FeatureConfig
from tests.audio_files import write_mini_gsc
from tests.spike_files import write_shd_file
from training.config import AugmentConfig, DataConfig
from training.datasets import (
    KWS10_LABELS, SILENCE, UNKNOWN, DatasetMissingError, bin_spikes, gsc_file_splits, load_dataset,
)


def test_spike_binning_follows_the_paper_700_to_140_and_10_ms(tmp_path):
    data = DataConfig(task="shd", spike_bin_ms=10.0, spike_channel_bins=5, spike_duration_s=0.1)
    frame = bin_spikes(np.array([0.0, 0.0051, 0.0099, 0.0101, 0.095, 0.2]), np.array([0, 4, 5, 699, 7, 3]), data)
    assert frame.shape == (140, 10)
    assert frame[0, 0] == 2  # units 0 and 4 share channel 0 in bin 0
    assert frame[1, 0] == 1 and frame[139, 1] == 1 and frame[1, 9] == 1
    assert frame.sum() == 5  # the spike at 200 ms lies past the 100 ms window


def test_shd_loader_reads_the_published_hdf5_layout(tmp_path):
    written = write_shd_file(tmp_path / "shd_train.h5", samples=40, classes=4)
    write_shd_file(tmp_path / "shd_test.h5", samples=12, classes=4, seed=1)
    data = DataConfig(task="shd", root=str(tmp_path), spike_duration_s=0.6)
    dataset = load_dataset(data, FeatureConfig())
    assert dataset.labels == ("0", "1", "2", "3") and dataset.input_size == 140
    assert len(dataset.train) == 36 and len(dataset.validation) == 4 and len(dataset.test) == 12
    inputs = dataset.train.batch_inputs(np.arange(len(dataset.train)))
    assert inputs.shape == (36, 140, 60)
    assert inputs.sum() == pytest.approx(36 * 60)  # every spike inside the window is counted once
    times, units, label = written[0]
    reference = bin_spikes(times, units, data)
    assert any(np.array_equal(reference, x) for x in inputs) or any(
        np.array_equal(reference, x) for x in dataset.validation.batch_inputs(np.arange(4)))


def test_ssc_uses_its_own_validation_file(tmp_path):
    for split, n in (("train", 20), ("valid", 8), ("test", 6)):
        write_shd_file(tmp_path / f"ssc_{split}.h5", samples=n, classes=2)
    dataset = load_dataset(DataConfig(task="ssc", root=str(tmp_path)), FeatureConfig())
    assert (len(dataset.train), len(dataset.validation), len(dataset.test)) == (20, 8, 6)


def test_missing_files_raise_a_clear_error(tmp_path):
    with pytest.raises(DatasetMissingError, match="shd_train.h5"):
        load_dataset(DataConfig(task="shd", root=str(tmp_path)), FeatureConfig())
    with pytest.raises(DatasetMissingError, match="Speech Commands"):
        load_dataset(DataConfig(task="kws10", root=str(tmp_path / "nowhere")), FeatureConfig())


def _write_standard_gsc(root, rate=16000):
    """A miniature Speech Commands v0.02 folder: word folders, list files, background noise."""
    rng = np.random.default_rng(0)
    words = ["yes", "no", "cat", "tree"]
    lines = {"validation": [], "testing": []}
    for w, word in enumerate(words):
        (root / word).mkdir(parents=True)
        for s in range(5):
            name = f"{word}/{s:08x}_nohash_0.wav"
            soundfile.write(root / name, 0.1 * rng.standard_normal(rate // 2).astype(np.float32), rate)
            if s == 3:
                lines["validation"].append(name)
            elif s == 4:
                lines["testing"].append(name)
    (root / "validation_list.txt").write_text("\n".join(lines["validation"]) + "\n")
    (root / "testing_list.txt").write_text("\n".join(lines["testing"]) + "\n")
    (root / "_background_noise_").mkdir()
    soundfile.write(root / "_background_noise_" / "white.wav", 0.05 * rng.standard_normal(rate * 5).astype(np.float32), rate)


def test_standard_gsc_layout_with_list_files(tmp_path):
    _write_standard_gsc(tmp_path)
    splits = gsc_file_splits(tmp_path)
    assert len(splits["training"]) == 12 and len(splits["validation"]) == 4 and len(splits["testing"]) == 4
    dataset = load_dataset(DataConfig(task="kws10", root=str(tmp_path)), FeatureConfig())
    assert dataset.labels == KWS10_LABELS
    names = dict(zip(dataset.train.names, dataset.train.labels))
    assert names["yes/00000000_nohash_0.wav"] == KWS10_LABELS.index("yes")
    assert names["cat/00000000_nohash_0.wav"] == KWS10_LABELS.index(UNKNOWN)
    assert dataset.train.silence_per_epoch == 1  # 10 % of 12 clips
    rng = np.random.default_rng(0)
    order = dataset.train.epoch_order(rng)
    assert len(order) == 13
    labels = dataset.train.batch_labels(order)
    assert (labels == KWS10_LABELS.index(SILENCE)).sum() == 1
    inputs = dataset.train.batch_inputs(order, rng, AugmentConfig())
    assert inputs.shape == (13, 40, 101) and np.isfinite(inputs).all()
    gsc35 = load_dataset(DataConfig(task="gsc35", root=str(tmp_path)), FeatureConfig())
    assert gsc35.labels == ("cat", "no", "tree", "yes") and gsc35.train.silence_per_epoch == 0


@pytest.mark.data
def test_shared_gsc_kws10_is_speaker_disjoint(data_dir):
    dataset = load_dataset(DataConfig(task="kws10", root=str(data_dir / "gsc"), test_fraction=0.5), FeatureConfig())
    speakers = {split: {n.split("/")[-1].split("_nohash_")[0] for n in clips.names if "_nohash_" in n}
                for split, clips in (("train", dataset.train), ("validation", dataset.validation), ("test", dataset.test))}
    assert not speakers["train"] & speakers["validation"]
    assert not speakers["validation"] & speakers["test"] and not speakers["train"] & speakers["test"]
    with open(data_dir / "gsc" / "manifest.csv", newline="") as handle:
        training_rows = [row for row in csv.DictReader(handle) if row["split"] == "training"]
    assert len(dataset.train) == len(training_rows)  # every training clip of the manifest, none twice
    counts = np.bincount(dataset.train.labels, minlength=10)
    assert counts[KWS10_LABELS.index("yes")] == sum(row["word"] == "yes" for row in training_rows)
    assert counts[KWS10_LABELS.index(UNKNOWN)] > 1000
    assert (dataset.validation.labels == KWS10_LABELS.index(SILENCE)).sum() > 0


@pytest.mark.data
def test_shared_fsdd_official_split(data_dir):
    features = FeatureConfig(sample_rate=8000, n_fft=256, win_length=200, hop_length=80, f_max=4000.0)
    dataset = load_dataset(DataConfig(task="fsdd", root=str(data_dir / "fsdd")), features)
    assert (len(dataset.train), len(dataset.validation), len(dataset.test)) == (2400, 300, 300)
    assert all(int(n.split("_")[-1].split(".")[0]) < 5 for n in dataset.test.names)
    assert dataset.train.batch_inputs(np.arange(4)).shape == (4, 40, 101)


def test_kws10_holds_out_words_mixes_synthetic_speech_and_balances_epochs(tmp_path):
    root = write_mini_gsc(tmp_path)
    data = DataConfig(task="kws10", root=str(root / "gsc"), synth_root=str(root / "synth"), held_out_words=("happy",),
                      keyword_clips_per_epoch=4, unknown_clips_per_epoch=6, synthetic_unknown_fraction=0.5,
                      silence_fraction=0.25)
    dataset = load_dataset(data, FeatureConfig())
    names = dataset.train.names + dataset.validation.names + dataset.extra["synthetic_calibration"].names
    assert not [n for n in names if "happy" in n]  # neither the real nor the synthetic clips of a held-out word
    label_of = dict(zip(dataset.train.names, dataset.train.labels))
    assert label_of["synthetic/keyword/yes_000.flac"] == KWS10_LABELS.index("yes")
    assert label_of["synthetic/common/table_000.flac"] == KWS10_LABELS.index(UNKNOWN)
    # "chair" falls in the calibration half of the synthetic validation words (by a hash of the text)
    assert dataset.extra["synthetic_calibration"].names == ["synthetic/common/chair_000.flac", "synthetic/common/chair_001.flac"]
    assert not [n for n in dataset.validation.names if n.startswith("synthetic/")]  # validation stays real speech
    # an epoch: 4 of each keyword that has clips (yes, up), 3 real + 3 synthetic unknown, 25 % non-speech
    rng = np.random.default_rng(0)
    assert dataset.train.epoch_size == 4 + 4 + 6 + 4
    order = dataset.train.epoch_order(rng)
    labels = dataset.train.batch_labels(order)
    counts = np.bincount(labels, minlength=10)
    assert counts[KWS10_LABELS.index("yes")] == 4 and counts[KWS10_LABELS.index("up")] == 4
    assert counts[KWS10_LABELS.index(UNKNOWN)] == 6 and counts[KWS10_LABELS.index(SILENCE)] == 4
    synthetic_unknown = [i for i in order if i < len(dataset.train) and dataset.train.names[i].startswith("synthetic/")
                         and dataset.train.labels[i] == KWS10_LABELS.index(UNKNOWN)]
    assert len(synthetic_unknown) == 3
    inputs = dataset.train.batch_inputs(order, rng, AugmentConfig(gain_db_min=-40, gain_db_max=30, speed_probability=1.0,
                                                                  vtlp_probability=1.0))
    assert inputs.shape == (len(order), 40, 101) and np.isfinite(inputs).all()


def test_evaluation_loads_leave_the_training_split_unread(tmp_path):
    root = write_mini_gsc(tmp_path)
    data = DataConfig(task="kws10", root=str(root / "gsc"), synth_root=str(root / "synth"), test_fraction=0.5,
                      hard_negatives=str(tmp_path / "not-made.npz"), hard_negative_clips_per_epoch=10)
    with pytest.raises(DatasetMissingError, match="kws-mine"):
        load_dataset(data, FeatureConfig())  # training needs the mined file ...
    evaluation = load_dataset(data, FeatureConfig(), training=False)  # ... export and evaluation do not
    full = load_dataset(replace(data, hard_negatives="", hard_negative_clips_per_epoch=0), FeatureConfig())
    assert len(evaluation.train) == 0 and evaluation.train.waveforms.shape[0] == 0 and len(full.train) > 0
    assert (evaluation.test is None) == (full.test is None)
    parts = [p for p in ("validation", "test") if getattr(full, p) is not None]
    assert sum(len(getattr(full, p)) for p in parts) > 0
    for part in parts:
        ours, theirs = getattr(evaluation, part), getattr(full, part)
        assert ours.names == theirs.names
        np.testing.assert_array_equal(ours.labels, theirs.labels)
        np.testing.assert_array_equal(ours.waveforms, theirs.waveforms)  # the fixed non-speech clips too
    assert evaluation.extra["synthetic_calibration"].names == full.extra["synthetic_calibration"].names

def test_vtlp_warps_the_speech_clips_of_a_training_batch_and_nothing_else():
    from model.features import FeatureConfig, log_mel
    from training.clips import ClipSet

    features = FeatureConfig(normalization="channel_mean")
    t = np.arange(features.clip_samples) / features.sample_rate
    speech = np.stack([0.1 * np.sin(2 * np.pi * f * t) for f in (700.0, 1500.0)]).astype(np.float32)
    clips = ClipSet(labels=np.array([0, 1]), names=["a", "b"], waveforms=speech, feature_config=features,
                    silence_label=9, silence_per_epoch=1)
    quiet = dict(time_shift_s=0.0, noise_probability=0.0, gain_db=0.0, freq_masks=0, time_masks=0,
                 digital_silence_probability=1.0)  # only the warp changes a clip; non-speech is digital silence
    warped = clips.batch_inputs(np.array([0, 1, 2]), np.random.default_rng(0),
                                AugmentConfig(vtlp_probability=1.0, vtlp_min=1.1, vtlp_max=1.1, **quiet))
    np.testing.assert_allclose(warped[:2], log_mel(speech, features, vtlp_factors=np.full(2, 1.1)), atol=1e-5)
    assert np.abs(warped[:2] - log_mel(speech, features)).max() > 1.0
    np.testing.assert_allclose(warped[2], log_mel(np.zeros_like(speech[0]), features), atol=1e-5)
    plain = clips.batch_inputs(np.array([0, 1]), np.random.default_rng(0), AugmentConfig(**quiet))
    np.testing.assert_allclose(plain, log_mel(speech, features), atol=1e-5)
    assert clips.batch_inputs(np.array([0, 1])).shape == (2, 40, 101)  # evaluation: never warped
    np.testing.assert_allclose(clips.batch_inputs(np.array([0, 1])), log_mel(speech, features), atol=1e-5)


def test_non_speech_clips_span_the_configured_levels_and_the_run_is_reproducible(tmp_path):
    from training.augment import Augmenter, write_noise_files

    rng = np.random.default_rng(0)
    noise = write_noise_files([0.3 * rng.standard_normal(16000 * 3).astype(np.float32)], ["white"], 16000, tmp_path)
    config = AugmentConfig(silence_level_db_min=-80.0, silence_level_db_max=0.0, digital_silence_probability=0.0)
    augmenter = Augmenter(config, 16000, noise)
    levels = [20 * np.log10(np.sqrt(np.mean(augmenter.nonspeech(16000, np.random.default_rng(s)) ** 2)) + 1e-12)
              for s in range(60)]
    assert min(levels) < -60 and max(levels) > -6  # from near silence to (clipped) full scale
    clip = augmenter.nonspeech(16000, np.random.default_rng(7))
    assert np.abs(clip).max() <= 1.0
    np.testing.assert_array_equal(clip, augmenter.nonspeech(16000, np.random.default_rng(7)))
    speech = np.sin(np.arange(16000) / 5).astype(np.float32) * 0.5
    loud = Augmenter(AugmentConfig(gain_db_min=30, gain_db_max=30, noise_probability=0.0), 16000, noise)
    assert np.abs(loud.speech(speech, np.random.default_rng(1))).max() == pytest.approx(1.0)  # clipped like an ADC


def test_near_misses_get_a_pool_of_their_own_on_top_of_the_unknown_draws(tmp_path):
    root = write_mini_gsc(tmp_path)
    data = DataConfig(task="kws10", root=str(root / "gsc"), synth_root=str(root / "synth"), held_out_words=("happy",),
                      keyword_clips_per_epoch=4, unknown_clips_per_epoch=6, synthetic_unknown_fraction=0.5,
                      near_miss_clips_per_epoch=5, silence_fraction=0.0)
    train = load_dataset(data, FeatureConfig()).train
    assert train.epoch_size == 4 + 4 + 6 + 5
    for seed in range(5):
        drawn = [train.names[i] for i in train.epoch_order(np.random.default_rng(seed)) if i < len(train)]
        assert sum(n.startswith("synthetic/near_miss/") for n in drawn) == 5  # its own 5, none from the general pool
        assert sum(n.startswith("synthetic/common/") for n in drawn) == 3
    labels = dict(zip(train.names, train.labels))
    assert labels["synthetic/near_miss/yet_000.flac"] == KWS10_LABELS.index(UNKNOWN)


def test_synthetic_keyword_fraction_fixes_the_share_of_synthetic_keyword_draws(tmp_path):
    root = write_mini_gsc(tmp_path)
    data = DataConfig(task="kws10", root=str(root / "gsc"), synth_root=str(root / "synth"), held_out_words=("happy",),
                      keyword_clips_per_epoch=10, unknown_clips_per_epoch=4, synthetic_keyword_fraction=0.3)
    train = load_dataset(data, FeatureConfig()).train
    order = train.epoch_order(np.random.default_rng(0))
    yes = [i for i in order if i < len(train) and train.labels[i] == KWS10_LABELS.index("yes")]
    assert len(yes) == 10 and sum(train.names[i].startswith("synthetic/") for i in yes) == 3


def _word_at(start_s: float, length_s: float, rate: int = 16000) -> np.ndarray:
    clip = np.zeros(rate, np.float32)
    start, stop = int(start_s * rate), int((start_s + length_s) * rate)
    clip[start:stop] = 0.5 * np.sin(np.arange(stop - start) / 3.0)
    return clip


def test_word_keeping_shifts_move_the_word_but_never_cut_it_and_cuts_leave_part_of_it():
    from model.speech import speech_extent
    from training.augment import Augmenter

    rate, word = 16000, _word_at(0.3, 0.4)
    keeping = Augmenter(AugmentConfig(time_shift_s=0.35, shift_keeps_word=True, noise_probability=0.0, gain_db=0.0), rate)
    starts = []
    for seed in range(40):
        moved = keeping.speech(word, np.random.default_rng(seed))
        begin, end = speech_extent(moved, rate)
        assert end - begin == pytest.approx(0.4 * rate, abs=0.02 * rate)  # whole
        starts.append(begin / rate)
    assert min(starts) < 0.1 and max(starts) > 0.5  # anywhere it fits, up to 0.35 s each way
    cutting = Augmenter(AugmentConfig(time_shift_s=0.35, shift_keeps_word=True, cut_word_probability=1.0,
                                      noise_probability=0.0, gain_db=0.0), rate)
    for seed in range(20):
        left = np.sum(cutting.speech(word, np.random.default_rng(seed), cuttable=True) ** 2) / np.sum(word**2)
        assert 0.25 < left < 0.75  # 30-70 % of the word left the window
        whole = cutting.speech(word, np.random.default_rng(seed), cuttable=False)  # keywords are never cut
        assert np.sum(whole**2) / np.sum(word**2) == pytest.approx(1.0, abs=0.02)
