"""kalm_eval.metrics.roc_auc on a case computed by hand, with tied scores.

ROC-AUC = P(score(pos) > score(neg)) + 0.5 * P(score(pos) == score(neg)) over every (positive, negative) pair:
the Mann-Whitney form, which is what scikit-learn's trapezoidal ROC area equals when scores tie."""

from __future__ import annotations

import pytest
from ir_measures import Qrel

from kalm_eval.data.quirks import Quirks
from kalm_eval.metrics import roc_auc

QRELS = [Qrel("q1", "d1", 2), Qrel("q1", "d3", 0), Qrel("q1", "d4", 1), Qrel("q2", "d5", 1), Qrel("q4", "d10", 3)]
# (query, doc, score); unjudged docs (d2, d9, d6, d7, d8) are negatives, so is d3 (grade 0)
PAIRS = [
    ("q1", "d1", 0.9), ("q1", "d2", 0.9), ("q1", "d3", 0.1), ("q1", "d4", 0.1), ("q1", "d9", 0.0),
    ("q2", "d5", 0.5), ("q2", "d6", 0.7), ("q2", "d7", 0.5),
    ("q3", "d8", 0.05),  # negatives only
    ("q4", "d10", 0.2),  # a positive only
]


def auc_of(pairs, quirks=Quirks()):
    return roc_auc([p[0] for p in pairs], [p[1] for p in pairs], [p[2] for p in pairs], QRELS, quirks)


def test_pooled_and_per_query_auc_with_ties():
    # Threshold 1: positives q1d1 0.9, q1d4 0.1, q2d5 0.5, q4d10 0.2 (4); negatives 0.9, 0.1, 0.0, 0.7, 0.5, 0.05 (6).
    #   pos 0.9: tie 0.9 (0.5) + beats 0.1, 0.0, 0.7, 0.5, 0.05 (5)  = 5.5
    #   pos 0.1: tie 0.1 (0.5) + beats 0.0, 0.05 (2)                  = 2.5
    #   pos 0.5: tie 0.5 (0.5) + beats 0.1, 0.0, 0.05 (3)             = 3.5
    #   pos 0.2: beats 0.1, 0.0, 0.05 (3)                             = 3.0
    #   pooled = 14.5 / (4 * 6) = 29/48
    # Per query (both classes needed): q1 pos {0.9, 0.1} neg {0.9, 0.1, 0.0}: (0.5+1+1) + (0+0.5+1) = 4 / 6 = 2/3;
    #   q2 pos {0.5} neg {0.7, 0.5}: (0 + 0.5) / 2 = 1/4; q3 (no positive) and q4 (no negative) excluded.
    #   mean = (2/3 + 1/4) / 2 = 11/24 over 2 queries.
    result = auc_of(PAIRS)
    assert result["roc_auc"] == pytest.approx(29 / 48, abs=1e-12)
    assert result["roc_auc_query_mean"] == pytest.approx(11 / 24, abs=1e-12)
    assert result["roc_auc_queries"] == 2


def test_relevance_threshold_moves_grade_one_to_the_negatives():
    # Threshold 2: positives q1d1 0.9, q4d10 0.2; negatives 0.9, 0.1, 0.1 (d4), 0.0, 0.7, 0.5, 0.5 (d5), 0.05 (8).
    #   pos 0.9: 0.5 + 7 = 7.5; pos 0.2: beats 0.1, 0.1, 0.0, 0.05 = 4  -> pooled 11.5 / 16 = 23/32
    #   q1: pos {0.9} neg {0.9, 0.1, 0.1, 0.0}: 3.5 / 4 = 7/8; q2 has no positive, q4 no negative -> 1 query
    result = auc_of(PAIRS, Quirks(relevance_threshold=2))
    assert result["roc_auc"] == pytest.approx(23 / 32, abs=1e-12)
    assert result["roc_auc_query_mean"] == pytest.approx(7 / 8, abs=1e-12)
    assert result["roc_auc_queries"] == 1


def test_undefined_without_both_classes():
    assert auc_of([p for p in PAIRS if p[0] == "q3"]) == {"roc_auc": None, "roc_auc_query_mean": None,
                                                           "roc_auc_queries": 0}
