"""TREC run files, our ranking rule, and validation of user-given runs."""

from __future__ import annotations

import gzip

import pytest

from kalm_eval.errors import DataError, InvariantError, ScoreError
from kalm_eval.records import Candidate, RankedList
from kalm_eval.retrieval.runfile import (in_trec_order, iter_trec, rank, read_trec_validated, scores_below,
                                         trec_order, write_trec)


def test_rank_breaks_ties_like_trec_eval_and_drops_identical_ids():
    ranked = rank("q1", [("a", 1.0), ("c", 2.0), ("b", 2.0), ("q1", 5.0), ("d", 0.5)], 3, ignore_identical_ids=True)
    # equal scores: doc id descending, as trec_eval orders them
    assert [c.doc_id for c in ranked.candidates] == ["c", "b", "a"]
    kept = rank("q1", [("q1", 5.0), ("a", 1.0)], 3, ignore_identical_ids=False)
    assert [c.doc_id for c in kept.candidates] == ["q1", "a"]


def test_write_then_stream_roundtrip(tmp_path):
    runs = [RankedList("q2", (Candidate("d1", 3.5), Candidate("d2", 1.25))), RankedList("q1", (Candidate("d3", 0.1),))]
    path = tmp_path / "run.trec.gz"
    assert write_trec(path, runs, tag="t") == 2
    lines = gzip.open(path, "rt").read().splitlines()
    assert lines[0] == "q2 Q0 d1 1 3.5 t" and lines[1] == "q2 Q0 d2 2 1.25 t"  # ranks start at 1
    assert list(iter_trec(path)) == runs
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temp file


def test_stream_rejects_interleaved_queries(tmp_path):
    path = tmp_path / "run.trec"
    path.write_text("q1 Q0 a 1 1 t\nq2 Q0 b 1 1 t\nq1 Q0 c 2 0 t\n")
    with pytest.raises(DataError, match=r"run\.trec:3: lines of query 'q1' are not contiguous"):
        list(iter_trec(path))


def test_malformed_run_line(tmp_path):
    path = tmp_path / "run.trec"
    path.write_text("q1 Q0 a 1 1 t\nq1 Q0 b 2\n")
    with pytest.raises(DataError, match=r"run\.trec:2: expected 6 columns"):
        list(iter_trec(path))
    path.write_text("q1 Q0 a one 1 t\n")
    with pytest.raises(DataError, match=r"run\.trec:1: rank 'one' / score '1' not numeric"):
        list(iter_trec(path))


RUN = "q1 Q0 d1 1 9 s\nq1 Q0 d2 2 9 s\nq1 Q0 zz 3 1 s\nqX Q0 d1 1 1 s\nq1 Q0 d1 4 0.5 s\n"


def validate(path, **kwargs):
    defaults = dict(queries={"q1", "q2"}, corpus={"d1", "d2", "d3"}, depth=10, ignore_identical_ids=False,
                    on_unknown="error", on_duplicate="error")
    return read_trec_validated(path, **{**defaults, **kwargs})


def test_given_run_errors_name_file_and_line(tmp_path):
    path = tmp_path / "given.trec"
    path.write_text(RUN)
    with pytest.raises(DataError, match=r"given\.trec:3: unknown doc id 'zz'"):
        validate(path)
    with pytest.raises(DataError, match=r"given\.trec:4: unknown query id 'qX'"):
        validate(path, corpus={"d1", "d2", "zz"})
    with pytest.raises(DataError, match=r"given\.trec:5: doc 'd1' listed twice for query 'q1'"):
        validate(path, on_unknown="drop")


def test_given_run_counted_policy(tmp_path):
    path = tmp_path / "given.trec.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(RUN)
    rankings, report = validate(path, on_unknown="drop", on_duplicate="keep_first")
    assert report == {"lines": 5, "unknown_query_lines": 1, "unknown_doc_lines": 1, "duplicate_lines": 1,
                      "queries": 1, "queries_without_candidates": 1}
    # tie at 9: trec_eval ignores the file's rank column (d1 rank 1, d2 rank 2) and breaks it by doc id descending;
    # duplicate d1 keeps the higher score
    assert rankings == [RankedList("q1", (Candidate("d2", 9.0), Candidate("d1", 9.0)))]


@pytest.mark.parametrize("score", ["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e400"])
def test_non_finite_score_is_refused_naming_file_and_line(tmp_path, score):
    path = tmp_path / "given.trec"
    path.write_text(f"q1 Q0 d1 1 9 s\nq1 Q0 d2 2 8 s\nq1 Q0 d3 3 {score} s\n")
    message = rf"given\.trec:3: score '{score}' is not a finite number"
    with pytest.raises(DataError, match=message):
        validate(path)
    with pytest.raises(DataError, match=message):
        list(iter_trec(path))


def test_given_run_ranks_as_trec_eval_reads_it(tmp_path):
    """Lines in any order, ranks that contradict the scores, ties, negative and exponent-notation scores."""
    path = tmp_path / "given.trec"
    path.write_text("q1 Q0 d1 1 -2.5e-1 s\nq1 Q0 d3 2 1E2 s\nq1 Q0 d2 3 -0.25 s\nq1 Q0 zz9 7 100 s\n"
                    "q1 Q0 d10 4 -3 s\n")
    rankings, _ = validate(path, corpus={"d1", "d2", "d3", "d10", "zz9"})
    assert [(c.doc_id, c.score) for c in rankings[0].candidates] == [
        ("zz9", 100.0), ("d3", 100.0), ("d2", -0.25), ("d1", -0.25), ("d10", -3.0)]


def test_rank_refuses_non_finite_scores_naming_query_doc_and_source():
    with pytest.raises(ScoreError, match=r"dense similarity, query 'q1', doc 'b': score nan is not a finite number"):
        rank("q1", [("a", 1.0), ("b", float("nan"))], 3, ignore_identical_ids=False, source="dense similarity")
    with pytest.raises(ScoreError, match=r"doc 'a': score -inf"):
        rank("q1", [("a", float("-inf"))], 3, ignore_identical_ids=False)


def test_trec_order_is_the_one_rule_and_write_trec_refuses_anything_else(tmp_path):
    items = [("a", 1.0), ("c", 2.0), ("b", 2.0), ("B", 2.0), ("é", 2.0), ("d", -0.0), ("e", 0.0)]
    assert [d for d, _ in trec_order(items)] == ["é", "c", "b", "B", "a", "e", "d"]  # strcmp order, byte-wise
    ranked = [Candidate(d, s) for d, s in trec_order(items)]
    assert in_trec_order(ranked) and not in_trec_order(ranked[::-1])
    bad = RankedList("q1", (Candidate("a", 1.0), Candidate("b", 1.0)))  # a tie in doc id ascending order
    with pytest.raises(InvariantError, match=r"out\.trec\.gz: query 'q1' is not in trec_eval's order"):
        write_trec(tmp_path / "out.trec.gz", [bad], tag="t")
    assert not (tmp_path / "out.trec.gz").exists()


def test_scores_below_stay_strictly_decreasing_at_any_magnitude():
    assert scores_below(0.5, 3) == [-0.5, -1.5, -2.5]
    huge = scores_below(1e300, 4)
    assert all(b < a for a, b in zip([1e300] + huge, huge))
