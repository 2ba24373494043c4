import subprocess
import sys

import librosa
import numpy as np
import pytest

from model.features import FeatureConfig, fit_to_clip, log_mel


@pytest.mark.parametrize("config", [FeatureConfig(), FeatureConfig(sample_rate=8000, n_fft=256, win_length=200, hop_length=80, f_max=4000.0, n_mels=32)])
def test_log_mel_matches_librosa(config):
    rng = np.random.default_rng(0)
    t = np.arange(config.clip_samples) / config.sample_rate
    audio = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    reference = librosa.feature.melspectrogram(
        y=audio, sr=config.sample_rate, n_fft=config.n_fft, win_length=config.win_length,
        hop_length=config.hop_length, n_mels=config.n_mels, fmin=config.f_min, fmax=config.f_max, power=2.0,
    )
    ours = log_mel(audio, config)
    assert ours.shape == (config.n_mels, config.num_frames)
    np.testing.assert_allclose(ours, np.log(reference + config.log_floor), atol=1e-4)


def test_batch_equals_single_clips():
    config = FeatureConfig()
    batch = np.random.default_rng(1).standard_normal((3, config.clip_samples)).astype(np.float32)
    stacked = np.stack([log_mel(clip, config) for clip in batch])
    np.testing.assert_allclose(log_mel(batch, config), stacked, rtol=1e-5, atol=1e-5)


def test_silence_stays_finite_at_the_log_floor():
    config = FeatureConfig()
    features = log_mel(np.zeros(config.clip_samples, np.float32), config)
    assert np.all(np.isfinite(features))
    np.testing.assert_allclose(features, np.log(config.log_floor), rtol=1e-6)


def test_fit_to_clip_crops_centre_and_pads_symmetrically():
    config = FeatureConfig(sample_rate=10, clip_seconds=1.0, n_fft=4, win_length=4, hop_length=2, f_min=0.0, f_max=5.0)
    np.testing.assert_array_equal(fit_to_clip(np.arange(14), config), np.arange(2, 12))
    np.testing.assert_array_equal(fit_to_clip(np.ones(6), config), [0, 0, 1, 1, 1, 1, 1, 1, 0, 0])


def test_config_round_trip_and_rejects_unknown_keys():
    config = FeatureConfig(n_mels=64)
    assert FeatureConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown feature parameters"):
        FeatureConfig.from_dict({**config.to_dict(), "n_mfcc": 13})
    with pytest.raises(ValueError):
        FeatureConfig(win_length=1024, n_fft=512)


def test_feature_module_imports_without_torch():
    code = ("import sys, numpy as np, model.features as f; f.log_mel(np.zeros(16000, np.float32), f.FeatureConfig()); "
            "assert not {'torch', 'librosa'} & set(sys.modules), 'features pulled in torch or librosa'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("config", [FeatureConfig(), FeatureConfig(n_mels=140, f_min=0.0), FeatureConfig(sample_rate=8000, n_fft=256, win_length=200, hop_length=80, f_max=4000.0)])
def test_filterbank_and_window_equal_librosa(config):
    from model.features import analysis_window, mel_filterbank

    reference = librosa.filters.mel(sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels,
                                    fmin=config.f_min, fmax=config.f_max)
    np.testing.assert_allclose(mel_filterbank(config), reference, rtol=1e-5, atol=1e-8)
    window = librosa.util.pad_center(librosa.filters.get_window("hann", config.win_length, fftbins=True), size=config.n_fft)
    np.testing.assert_allclose(analysis_window(config), window, atol=1e-7)


def test_numpy_fft_fallback_equals_scipy_path():
    """The service image has no scipy; its features (numpy's FFT) must equal the training path's."""
    import model.features as features

    config = FeatureConfig()
    audio = np.random.default_rng(2).standard_normal((2, config.clip_samples)).astype(np.float32) * 0.1
    with_scipy = log_mel(audio, config)
    original = features.rfft
    try:
        features.rfft = np.fft.rfft
        with_numpy = log_mel(audio, config)
    finally:
        features.rfft = original
    np.testing.assert_allclose(with_numpy, with_scipy, atol=1e-4)


def test_pcen_equals_librosa_started_at_the_first_frame():
    """PCEN as librosa computes it, with the smoother in the steady state of the window's first frame."""
    import scipy.signal

    from model.features import PCEN_INPUT_SCALE, PCEN_TIME_CONSTANT_S

    config = FeatureConfig(normalization="pcen")
    audio = (0.1 * np.random.default_rng(3).standard_normal(config.clip_samples)).astype(np.float32)
    mel = librosa.feature.melspectrogram(
        y=audio, sr=config.sample_rate, n_fft=config.n_fft, win_length=config.win_length,
        hop_length=config.hop_length, n_mels=config.n_mels, fmin=config.f_min, fmax=config.f_max, power=2.0,
    ) * PCEN_INPUT_SCALE
    t_frames = PCEN_TIME_CONSTANT_S * config.sample_rate / config.hop_length
    b = (np.sqrt(1 + 4 * t_frames**2) - 1) / (2 * t_frames**2)
    zi = scipy.signal.lfilter_zi([b], [1, b - 1]) * mel[:, :1]
    reference = librosa.pcen(mel, sr=config.sample_rate, hop_length=config.hop_length, zi=zi)
    np.testing.assert_allclose(log_mel(audio, config), reference, atol=1e-4)


def test_channel_mean_removes_gain_and_a_fixed_microphone_response():
    config = FeatureConfig(normalization="channel_mean", log_floor=1e-10)
    rng = np.random.default_rng(4)
    t = np.arange(config.clip_samples) / config.sample_rate
    envelope = np.exp(-((t - 0.5) ** 2) / 0.02)  # a "word" in the middle of the window, over a room's noise floor
    word = envelope * (np.sin(2 * np.pi * 300 * t * (1 + t)) + 0.3 * rng.standard_normal(len(t)))
    audio = (0.1 * word + 0.003 * rng.standard_normal(len(t))).astype(np.float32)
    reference = log_mel(audio, config)
    np.testing.assert_allclose(reference.mean(axis=-1), 0.0, atol=1e-4)
    for gain_db in (-30.0, -10.0, 18.0):  # the loudest stays under full scale: no clipping
        scaled = log_mel(audio * np.float32(10 ** (gain_db / 20)), config)
        # equal but where a bin's power dips near the log floor (the narrow lowest channels, noise minima)
        difference = np.abs(scaled - reference)
        assert difference.mean() < 2e-3 and difference.max() < 0.1, (gain_db, difference.mean(), difference.max())
    plain = log_mel(audio, FeatureConfig(log_floor=1e-10))
    assert np.abs(log_mel(audio * np.float32(0.01), FeatureConfig(log_floor=1e-10)) - plain).mean() > 4  # what it removes


def test_unknown_normalization_is_refused():
    with pytest.raises(ValueError, match="normalization"):
        FeatureConfig(normalization="cmvn")


def _tone_channel(config: FeatureConfig, frequency: float, vtlp_factor: float = 1.0) -> int:
    t = np.arange(config.clip_samples) / config.sample_rate
    tone = (0.1 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
    return int(log_mel(tone[None], config, vtlp_factors=np.array([vtlp_factor]))[0].mean(axis=1).argmax())


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_vtlp_moves_a_formant_by_its_factor(factor):
    config = FeatureConfig()
    for frequency in (1000.0, 2000.0, 3500.0):  # below the warp's boundary: f is read as factor * f
        assert _tone_channel(config, frequency, factor) == _tone_channel(config, factor * frequency)
        assert _tone_channel(config, frequency, factor) != _tone_channel(config, frequency)


def test_vtlp_warp_keeps_the_band_and_factor_one_is_the_plain_front_end():
    from model.features import vtlp_warp

    frequencies = np.linspace(0, 8000, 257)
    for factor in (0.9, 1.1):
        warped = vtlp_warp(frequencies, factor, 8000.0)
        assert warped[0] == 0 and warped[-1] == pytest.approx(8000.0)  # nothing leaves the spectrum
        assert np.all(np.diff(warped) > 0)  # monotone: no band folds over another
    config = FeatureConfig(normalization="channel_mean")
    batch = np.random.default_rng(5).standard_normal((3, config.clip_samples)).astype(np.float32)
    same = dict(rtol=1e-5, atol=1e-5)  # the same sums, grouped otherwise by the BLAS
    np.testing.assert_allclose(log_mel(batch, config, vtlp_factors=np.ones(3)), log_mel(batch, config), **same)
    mixed = log_mel(batch, config, vtlp_factors=np.array([1.0, 1.1, 0.9]))
    np.testing.assert_allclose(mixed[0], log_mel(batch[0], config), **same)  # each row its own factor
    assert np.abs(mixed[1] - log_mel(batch[1], config)).mean() > 0.01
    with pytest.raises(ValueError, match="vtlp_factors"):
        log_mel(batch, config, vtlp_factors=np.ones(2))
