"""What the synthetic corpus says: texts by kind, chosen from word lists and the CMU dictionary.

Kinds (the ``kind`` column of the manifest):

* ``keyword`` — the keywords themselves, labelled as keywords in training, so that a synthetic voice
  is never evidence of "not a keyword";
* ``near_miss`` — rhymes, one-phone minimal pairs and words that contain a keyword's sound;
* ``speech_commands`` — every Speech Commands word that is not a keyword (on, off, the digits, ...);
* ``common`` — frequent English words (wordfreq), any part of speech;
* ``phrase`` — two or three common words in a row.

Homophones of a keyword (``write`` for ``right``, ``know`` for ``no``) are never negatives: they sound
like the keyword, so calling them ``_unknown_`` would teach the network to reject the keyword. Words
held out for the open-set evaluation are excluded everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

# Every word of Speech Commands v0.02 (the keywords are among them); the rest are _unknown_ in kws10.
SPEECH_COMMANDS_WORDS = (
    "backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward", "four", "go",
    "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one", "right", "seven",
    "sheila", "six", "stop", "three", "tree", "two", "up", "visual", "wow", "yes", "zero",
)
_WORD = re.compile(r"^[a-z]{2,}$")
_MIN_ZIPF_NEAR_MISS = 2.5  # wordfreq Zipf frequency: about once per 3 million words; drops rare dictionary entries
_MIN_ZIPF_CONTAINS = 3.0


@dataclass(frozen=True)
class Text:
    text: str
    kind: str
    target: str = ""  # keyword it is near (near_miss) or is (keyword); empty otherwise


def _phones(word: str) -> list[tuple[str, ...]]:
    """Pronunciations of a word as phone tuples without stress marks (CMU dictionary)."""
    import pronouncing

    return [tuple(re.sub(r"\d", "", p) for p in pron.split()) for pron in pronouncing.phones_for_word(word)]


def _zipf(word: str) -> float:
    import wordfreq

    return wordfreq.zipf_frequency(word, "en")


class Lexicon:
    """The CMU dictionary indexed by pronunciation, for homophones, minimal pairs and containment."""

    def __init__(self) -> None:
        import pronouncing

        pronouncing.init_cmu()
        self.by_word: dict[str, list[tuple[str, ...]]] = {}
        for word, pron in pronouncing.pronunciations:
            if _WORD.match(word):
                self.by_word.setdefault(word, []).append(tuple(re.sub(r"\d", "", p) for p in pron.split()))

    def sounds_like(self, word: str, keywords: Iterable[str]) -> bool:
        """True when some pronunciation of ``word`` is exactly one of a keyword's."""
        keyword_prons = {p for k in keywords for p in self.by_word.get(k, [])}
        return any(p in keyword_prons for p in self.by_word.get(word, []))

    def minimal_pairs(self, keyword: str) -> set[str]:
        """Words one phone substitution, insertion or deletion away from a pronunciation of ``keyword``."""
        targets = self.by_word.get(keyword, [])
        found = set()
        for word, prons in self.by_word.items():
            if any(_one_edit_apart(p, t) for p in prons for t in targets):
                found.add(word)
        return found

    def containing(self, keyword: str) -> set[str]:
        """Longer words whose pronunciation contains a pronunciation of ``keyword``."""
        targets = self.by_word.get(keyword, [])
        found = set()
        for word, prons in self.by_word.items():
            if any(len(p) > len(t) and _contains(p, t) for p in prons for t in targets):
                found.add(word)
        return found


def _one_edit_apart(a: Sequence[str], b: Sequence[str]) -> bool:
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b)) == 1
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return any(tuple(long[:i]) + tuple(long[i + 1:]) == tuple(short) for i in range(len(long)))


def _contains(whole: Sequence[str], part: Sequence[str]) -> bool:
    n = len(part)
    return any(tuple(whole[i : i + n]) == tuple(part) for i in range(len(whole) - n + 1))


def choose_texts(
    keywords: Sequence[str],
    held_out: Iterable[str],
    *,
    common_words: int = 4000,
    phrases: int = 1500,
    near_misses_per_keyword: int = 60,
    seed: int = 0,
) -> list[Text]:
    """Every text of the corpus, deterministic for a seed; no held-out word and no homophone of a keyword."""
    import wordfreq

    rng = np.random.default_rng(seed)
    lexicon = Lexicon()
    held_out = set(held_out)
    keyword_set = set(keywords)

    def allowed(word: str) -> bool:
        return (word not in keyword_set and word not in held_out and word in lexicon.by_word
                and not lexicon.sounds_like(word, keywords))

    texts = [Text(k, "keyword", k) for k in keywords]
    texts += [Text(w, "speech_commands") for w in SPEECH_COMMANDS_WORDS if w not in keyword_set and w not in held_out]
    taken = {t.text for t in texts}
    for keyword in keywords:
        import pronouncing

        rhymes = {w for w in pronouncing.rhymes(keyword) if _WORD.match(w)}
        pairs = lexicon.minimal_pairs(keyword)
        near = sorted(w for w in rhymes | pairs if allowed(w) and w not in taken and _zipf(w) >= _MIN_ZIPF_NEAR_MISS)
        near.sort(key=lambda w: -_zipf(w))
        contains = sorted(w for w in lexicon.containing(keyword)
                          if allowed(w) and w not in taken and _zipf(w) >= _MIN_ZIPF_CONTAINS)
        contains.sort(key=lambda w: -_zipf(w))
        chosen = near[: near_misses_per_keyword * 2 // 3]
        chosen += [w for w in contains if w not in chosen][: near_misses_per_keyword - len(chosen)]
        for word in chosen:
            texts.append(Text(word, "near_miss", keyword))
            taken.add(word)
    common = [w for w in wordfreq.top_n_list("en", common_words * 3) if _WORD.match(w) and allowed(w) and w not in taken]
    common = common[:common_words]
    texts += [Text(w, "common") for w in common]
    taken.update(common)
    pool = common[:2000]
    for _ in range(phrases):
        n = int(rng.integers(2, 4))
        texts.append(Text(" ".join(pool[i] for i in rng.choice(len(pool), n, replace=False)), "phrase"))
    return texts
