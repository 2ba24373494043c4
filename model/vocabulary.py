"""The label vocabulary: which labels exist, which are keywords, and the two that are not.

One definition for training (datasets), export (written into the ONNX metadata as ``keywords``) and the
service (which reads ``keywords`` back from the metadata, falling back to :func:`keywords_of` for files
exported before the field existed). No torch, no numpy: the service imports it.
"""

from __future__ import annotations

from collections.abc import Iterable

UNKNOWN = "_unknown_"  # a word that is not a keyword
SILENCE = "_silence_"  # no speech: silence or non-speech sound
NON_KEYWORDS = frozenset({UNKNOWN, SILENCE})

KWS10_KEYWORDS = ("yes", "no", "up", "down", "left", "right", "stop", "go")
KWS10_LABELS = (*KWS10_KEYWORDS, UNKNOWN, SILENCE)


def is_keyword(label: str) -> bool:
    return label not in NON_KEYWORDS


def keywords_of(labels: Iterable[str]) -> list[str]:
    """The labels that are keywords, in label order."""
    return [label for label in labels if is_keyword(label)]
