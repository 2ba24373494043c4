"""kws-robustness: the test sounds, and the suite end to end on a small exported model and miniature data."""

import json

import numpy as np
import pytest
import torch

from evaluation.cli import main as robustness_main
from evaluation.sounds import SOUNDS
from export.freeze import freeze
from export.onnx_graph import build_onnx
from model.checkpoint import load_checkpoint, save_checkpoint
from model.decision import DecisionRule
from model.features import FeatureConfig
from model.network import DelaySNN, ModelConfig
from model.vocabulary import KWS10_KEYWORDS, KWS10_LABELS
from tests.audio_files import write_mini_gsc


def test_sounds_are_what_their_names_say():
    rng = np.random.default_rng(0)
    rate, n = 16000, 16000
    for name, make in SOUNDS.items():
        x = make(n, rate, rng)
        assert x.shape == (n,) and np.isfinite(x).all(), name
        assert np.sqrt(np.mean(x.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-3), name
    spectrum = np.abs(np.fft.rfft(SOUNDS["hum"](n, rate, np.random.default_rng(1))))  # 1-Hz bins
    peak = int(spectrum.argmax())
    assert min(peak % 50, 50 - peak % 50) <= 1 or min(peak % 60, 60 - peak % 60) <= 1  # a mains harmonic
    tone = np.abs(np.fft.rfft(SOUNDS["tone"](n, rate, np.random.default_rng(2))))
    assert tone.max() > 0.9 * np.sqrt(np.sum(tone**2))  # one frequency
    dc = SOUNDS["dc"](n, rate, rng)
    assert np.ptp(dc) < 1e-4


@pytest.fixture(scope="module")
def kws10_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    model = DelaySNN(ModelConfig(input_size=40, hidden_sizes=(16,), num_classes=10, max_delay=5))
    model.eval()
    save_checkpoint(folder / "m.pt", model, name="tiny-kws10", labels=list(KWS10_LABELS),
                    feature_config=FeatureConfig(), training={}, metrics={})
    network = freeze(load_checkpoint(folder / "m.pt"))
    paths = {}
    for name, thresholds in (("plain", {}), ("strict", {k: 1.01 for k in KWS10_KEYWORDS})):
        onnx_model = build_onnx(network, DecisionRule(KWS10_LABELS, thresholds).to_metadata())
        paths[name] = folder / f"{name}.onnx"
        paths[name].write_bytes(onnx_model.SerializeToString())
    return paths


def _config(tmp_path, root):
    path = tmp_path / "kws10.toml"
    path.write_text(f'[data]\ntask = "kws10"\nroot = "{root / "gsc"}"\nsynth_root = "{root / "synth"}"\n'
                    'held_out_words = ["happy"]\n')
    return path


def test_suite_reports_every_set_and_thresholds_reject_keywords(tmp_path, kws10_model):
    root = write_mini_gsc(tmp_path / "data")
    config = _config(tmp_path, root)
    out = tmp_path / "plain.json"
    assert robustness_main([str(kws10_model["plain"]), "--config", str(config), "--streaming-minutes", "0",
                            "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["open_set"]["clips"] == 3  # every real clip of the held-out word, training and validation speakers
    assert results["validation"]["clips"] >= 3  # yes, up, cat validation clips + non-speech
    assert set(results["sounds"]["not_keyword"]) == set(SOUNDS)
    assert set(results["levels"]["by_gain_db"]) == {"-30", "-20", "-10", "+0", "+10", "+20"}
    assert results["synthetic"]["word_clips"] == 3 and "fsdd" not in results  # "lamp": "chair" chose thresholds  # no FSDD folder beside this GSC
    assert {"validation accuracy", "open-set false accepts", "worst level-sweep drop (points)"} <= set(results["headline"])
    strict = tmp_path / "strict.json"
    assert robustness_main([str(kws10_model["strict"]), "--config", str(config), "--streaming-minutes", "0",
                            "--json", str(strict)]) == 0
    rejected = json.loads(strict.read_text())
    # thresholds above any score: nothing is ever accepted as a keyword
    assert rejected["open_set"]["false_accepts"] == 0 and rejected["other_words"]["false_accepts"] == 0
    assert rejected["open_set"]["word_mean_false_accepts"] == 0 and rejected["open_set"]["clips_per_word"] == {"happy": 3}
    assert rejected["sounds"]["worst_level"] == 1.0 and rejected["noise"]["worst_level"] == 1.0
    assert rejected["validation"]["keyword_recall"] == 0
    assert rejected["model"]["thresholds"]["yes"] == pytest.approx(1.01)
    ignored = tmp_path / "ignored.json"
    assert robustness_main([str(kws10_model["strict"]), "--config", str(config), "--no-thresholds",
                            "--streaming-minutes", "0", "--json", str(ignored)]) == 0
    assert json.loads(ignored.read_text())["open_set"] == results["open_set"]  # the same graph, the top label


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    root = write_mini_gsc(tmp_path / "data")
    assert robustness_main([str(tmp_path / "none.onnx"), "--config", str(_config(tmp_path, root))]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_recordings_place_every_item_apart_and_matching_counts_hits_and_false_alarms():
    from service.detector import Detection

    from evaluation.stream_recordings import Recording, build_recording
    from evaluation.streaming import match

    rate = 16000
    rng = np.random.default_rng(0)
    word = (np.sin(np.arange(rate // 2) / 3) * np.hanning(rate // 2)).astype(np.float32)
    items = [(word, "yes", "yes"), (word, "", "FSDD digit"), (word, "no", "no"), (word, "", "FSDD digit")]
    recording = build_recording(items, (0.01 * rng.standard_normal(rate * 3)).astype(np.float32), 20.0, rate, rng)
    assert len(recording.samples) == 20 * rate and np.abs(recording.samples).max() <= 1.0
    spans = sorted((p.start, p.end) for p in recording.placed)
    assert len(spans) == 4 and all(a[1] < b[0] for a, b in zip(spans, spans[1:]))  # no overlap
    yes = next(p for p in recording.placed if p.label == "yes")
    other = next(p for p in recording.placed if p.label == "")
    detections = [Detection("yes", 0.9, yes.start - 0.4, yes.end + 0.1),  # covers the placed "yes": a hit
                  Detection("yes", 0.9, yes.start - 0.4, yes.end + 0.1),  # the same word again: a false alarm
                  Detection("go", 0.9, other.start, other.end)]  # on a non-keyword: a false alarm
    result = match([recording], [detections], ["yes", "no", "go"])
    assert result["hits"] == 1 and result["keywords_placed"] == 2
    assert result["false_alarms_by_source"] == {"yes": 1, "FSDD digit": 1}  # each false alarm by what it was on
    assert result["false_alarms"] == {"yes": 1, "no": 0, "go": 1}
    assert result["per_keyword_recall"] == {"yes": 1.0, "no": 0.0, "go": None}
    assert all(5.0 <= p.snr_db <= 20.0 for p in recording.placed)
    no = next(p for p in recording.placed if p.label == "no")
    bands = {"5-10": [0, 0], "10-15": [0, 0], "15-20": [0, 0]}  # recall per SNR band: the hit "yes", the missed "no"
    for placed, hit in ((yes, 1), (no, 0)):
        band = bands[next(b for b in bands if float(b.split("-")[0]) <= placed.snr_db < float(b.split("-")[1]))]
        band[0], band[1] = band[0] + hit, band[1] + 1
    assert result["recall_by_snr_db"] == {b: (h / n if n else None) for b, (h, n) in bands.items()}
    assert isinstance(recording, Recording)


def test_stream_thresholds_go_into_the_metadata_and_the_stream_config(tmp_path, kws10_model):
    import shutil

    from evaluation.streaming import stream_config, write_stream_thresholds
    from service.inference import KeywordModel

    path = tmp_path / "m.onnx"
    shutil.copy(kws10_model["plain"], path)
    assert stream_config(KeywordModel.load(path)).keyword_thresholds == {}
    write_stream_thresholds(path, {"yes": 0.61, "no": 0.7}, {"target_false_alarms_per_hour": 2})
    model = KeywordModel.load(path)
    assert stream_config(model).keyword_thresholds == {"yes": 0.61, "no": 0.7}
    assert json.loads(model.metadata["keyword_thresholds"]) == {}  # the rest of the metadata is kept


def test_stream_thresholds_are_the_lowest_within_each_keywords_share_even_close_to_one(kws10_model):
    from evaluation.streaming import THRESHOLD_GRID, Scored, stream_config, tune_thresholds
    from service.inference import KeywordModel

    model = KeywordModel.load(kws10_model["plain"])
    config = stream_config(model)
    labels = list(model.labels)

    def words(label: str, peaks: list[float]) -> Scored:  # one 1-s word a peak every 4 s, quiet between
        rows = []
        for peak in peaks:
            for value in (peak, peak, peak, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0):
                row = np.zeros(len(labels))
                row[labels.index(label)] = value
                row[labels.index("_silence_")] = 1.0 - value
                rows.append(row)
        return Scored([0.2 * (i + 1) for i in range(len(rows))], np.array(rows), len(rows), 0.0, 0.0)

    # an hour of negatives: "yes" at 0.5 twice and at 0.9995 once; "no" at 0.99997 twice
    negatives = [words("yes", [0.5, 0.5, 0.9995]), words("no", [0.99997, 0.99997])]
    share_one = float(len(model.keywords))  # a target of 1 alarm per keyword per hour
    chosen = tune_thresholds(model, config, negatives, 1.0, share_one)
    assert chosen["yes"] == 0.51  # one alarm (the 0.9995) is within the share; 0.50 would give three
    assert chosen["no"] == min(t for t in THRESHOLD_GRID if t > 0.99997) < 1.0  # between 0.999 and 1, not "off"
    assert chosen["go"] == THRESHOLD_GRID[0]  # no alarms at all: the lowest point


def test_streaming_figures_end_to_end_on_one_minute(tmp_path, kws10_model):
    root = write_mini_gsc(tmp_path / "data")
    out = tmp_path / "streaming.json"
    assert robustness_main([str(kws10_model["plain"]), "--config", str(_config(tmp_path, root)),
                            "--streaming-minutes", "1", "--json", str(out), "--curve-plot", str(tmp_path / "curve.png")]) == 0
    streaming = json.loads(out.read_text())["streaming"]
    points = streaming["curve"]["points"]
    assert [p["threshold"] for p in points] == sorted(p["threshold"] for p in points) and len(points) > 20
    # the strictest common threshold finds no more keywords, and raises no more alarms, than the loosest
    # (not point by point: a higher threshold can split one event into two)
    assert points[-1]["recall"] <= points[0]["recall"]
    assert points[-1]["false_alarms_per_hour"] <= points[0]["false_alarms_per_hour"]
    at = streaming["curve"]["false_alarms_per_hour_at_recall"]
    assert all(at[r] is None or at[r] == min(p["false_alarms_per_hour"] for p in points if p["recall"] >= float(r)) for r in at)
    assert (tmp_path / "curve.png").stat().st_size > 10_000
    assert streaming["service"]["negative_hours"] == pytest.approx(1 / 60, abs=1e-3)
    assert not streaming["service"]["vad"] and streaming["with_vad"]["vad"]  # KWS_STREAM_VAD is off by default
    assert streaming["service"]["windows_scored_fraction"] == 1.0
    assert streaming["with_vad"]["windows_scored_fraction"] < 1.0  # the VAD skips the windows without speech


def test_stream_choices_measure_each_smoothing_and_target_on_both_halves(tmp_path, kws10_model):
    from evaluation.stream_choices import main as choices_main

    root = write_mini_gsc(tmp_path / "data")
    out = tmp_path / "choices.json"
    assert choices_main([str(kws10_model["plain"]), "--config", str(_config(tmp_path, root)), "--hops", "1,3",
                         "--targets", "2,8", "--minutes", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    tuned = [r for r in rows if "target_per_hour" in r]
    assert {(r["hops"], r["half"], r["target_per_hour"]) for r in tuned} == {
        (h, half, t) for h in (1, 3) for half in ("tune", "report") for t in (2.0, 8.0)}
    assert all(0.0 <= r["recall"] <= 1.0 and r["false_alarms_per_hour"] >= 0 for r in tuned)
    # the same thresholds on both halves: tuned once, on the tuning recordings
    for hops in (1, 3):
        pair = [r["thresholds"] for r in tuned if r["hops"] == hops and r["target_per_hour"] == 8.0]
        assert pair[0] == pair[1]
    assert len([r for r in rows if "common_threshold_curve" in r]) == 4
