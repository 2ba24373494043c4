"""The decision rule: per-keyword thresholds turn class scores into the answer."""

import numpy as np
import pytest

from model.decision import DecisionRule
from model.vocabulary import KWS10_LABELS

YES, NO, UNKNOWN, SILENCE = (KWS10_LABELS.index(x) for x in ("yes", "no", "_unknown_", "_silence_"))


def scores(**values):
    row = np.zeros(len(KWS10_LABELS))
    for label, value in values.items():
        row[KWS10_LABELS.index(label)] = value
    return row


def test_without_thresholds_the_answer_is_the_top_label():
    rows = np.stack([scores(yes=0.4, no=0.1, _unknown_=0.3), scores(_silence_=0.6, no=0.3)])
    assert DecisionRule(KWS10_LABELS).decide(rows).tolist() == [YES, SILENCE]


def test_a_keyword_under_its_threshold_becomes_the_likelier_non_keyword():
    rule = DecisionRule(KWS10_LABELS, {"yes": 0.5, "no": 0.2})
    rows = np.stack([scores(yes=0.45, _unknown_=0.2, _silence_=0.3),  # yes under 0.5: silence is the likelier
                     scores(yes=0.55, _unknown_=0.4),  # clears it
                     scores(no=0.25, yes=0.2, _unknown_=0.5),  # the top label is unknown already
                     scores(no=0.21, yes=0.19, _unknown_=0.18)])  # no clears its own, lower threshold
    assert rule.decide(rows).tolist() == [SILENCE, YES, UNKNOWN, NO]


def test_a_long_clip_is_answered_by_its_best_keyword_window():
    rule = DecisionRule(KWS10_LABELS, {"yes": 0.5})
    windows = np.stack([scores(_unknown_=0.9), scores(yes=0.6, _unknown_=0.3), scores(yes=0.45, _unknown_=0.2)])
    assert rule.answer_window(windows) == (1, YES)
    quiet = np.stack([scores(_unknown_=0.5, yes=0.4), scores(_silence_=0.8)])
    assert rule.answer_window(quiet) == (1, SILENCE)


def test_thresholds_round_trip_through_metadata_and_name_keywords_only():
    rule = DecisionRule(KWS10_LABELS, {"yes": 0.61, "go": 0.7})
    assert DecisionRule.from_metadata(KWS10_LABELS, rule.to_metadata()).thresholds == {"yes": 0.61, "go": 0.7}
    assert DecisionRule.from_metadata(KWS10_LABELS, {}).thresholds == {}
    with pytest.raises(ValueError, match="not keywords"):
        DecisionRule(KWS10_LABELS, {"_unknown_": 0.5})
