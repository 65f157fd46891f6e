"""Metric rules: rank order decides, identical ids dropped on request, unretrieved judged queries count as 0."""

from __future__ import annotations

import math

import pytest
from ir_measures import Qrel

from kalm_eval.data.quirks import Quirks
from kalm_eval.metrics import evaluate, measures_for
from kalm_eval.records import Candidate, RankedList


def ndcg(gains_in_rank_order, ideal_gains):
    """trec_eval ndcg_cut: linear gains (what BEIR and MTEB report through pytrec_eval)."""
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains_in_rank_order[:10]))
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(ideal_gains, reverse=True)[:10]))
    return dcg / idcg


QRELS = [Qrel("q1", "a", 2), Qrel("q1", "b", 1), Qrel("q2", "c", 1), Qrel("q3", "z", 1)]


def test_hand_computed_ndcg_and_missing_query_scores_zero():
    # q1: ranks x, b, a (scores are deliberately non-monotone: the rank order is what counts)
    runs = [RankedList("q1", (Candidate("x", 0.0), Candidate("b", 5.0), Candidate("a", 1.0))),
            RankedList("q2", (Candidate("c", 1.0),))]
    result = evaluate("s", runs, QRELS, Quirks(), depth=100)
    q1 = ndcg([0, 1, 2], [2, 1])
    assert result.per_query["nDCG@10"]["q1"] == pytest.approx(q1, abs=1e-12)
    assert result.per_query["nDCG@10"]["q2"] == pytest.approx(1.0)
    assert result.per_query["nDCG@10"]["q3"] == 0.0  # judged, never retrieved
    assert result.aggregate["nDCG@10"] == pytest.approx((q1 + 1.0 + 0.0) / 3)
    assert result.aggregate["RR@10"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert result.extra["queries"] == 3


def test_identical_ids_dropped_only_when_asked():
    runs = [RankedList("q2", (Candidate("q2", 9.0), Candidate("c", 1.0)))]
    qrels = [Qrel("q2", "c", 1), Qrel("q2", "q2", 1)]
    on = evaluate("s", runs, qrels, Quirks(ignore_identical_ids=True), depth=10)
    off = evaluate("s", runs, qrels, Quirks(), depth=10)
    assert on.per_query["R@1"]["q2"] == pytest.approx(0.5)  # c moved to rank 1
    assert off.per_query["R@1"]["q2"] == pytest.approx(0.5)  # q2 itself at rank 1 counts when not ignored
    assert on.per_query["nDCG@10"]["q2"] != off.per_query["nDCG@10"]["q2"]


def test_measures_follow_depth_and_threshold():
    names = [str(m) for m in measures_for(100, Quirks())]
    assert names[:2] == ["nDCG@10", "RR@10"] and "R@100" in names and "R@200" not in names
    assert "R(rel=2)@100" in [str(m) for m in measures_for(100, Quirks(relevance_threshold=2))]
    assert "R@30" in [str(m) for m in measures_for(30, Quirks())]


def test_evaluating_twice_gives_identical_numbers():
    runs = [RankedList("q1", (Candidate("a", 1.0), Candidate("b", 0.5)))]
    first = evaluate("s", runs, QRELS, Quirks(), depth=10)
    second = evaluate("s", runs, QRELS, Quirks(), depth=10)
    assert first.aggregate == second.aggregate


def test_blockwise_evaluation_equals_one_pass():
    runs = [RankedList(f"q{i}", (Candidate("a", 1.0), Candidate(f"x{i}", 0.5), Candidate("b", 0.1))) for i in range(7)]
    qrels = [Qrel(f"q{i}", doc, grade) for i in range(8) for doc, grade in (("a", i % 3), ("b", 1))]
    whole = evaluate("s", runs, qrels, Quirks(), depth=10, block=100)
    for block in (1, 2, 3):
        blocked = evaluate("s", iter(runs), qrels, Quirks(), depth=10, block=block)
        assert blocked.per_query == whole.per_query and blocked.aggregate == whole.aggregate
    assert whole.per_query["nDCG@10"]["q7"] == 0.0 and whole.extra["queries"] == 8
