"""TREC run files (`qid Q0 docid rank score tag`, ranks 1..k), read and written in THE ranking rule of every run
(kalm_eval.ranking.trec_order: trec_eval's order)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from kalm_eval import failpoints
from kalm_eval.data.readers import read_lines
from kalm_eval.errors import DataError, InvariantError, ScoreError
from kalm_eval.ranking import TIE_BREAK, scores_below, trec_order  # noqa: F401  (re-exported: the run files' rule)
from kalm_eval.records import Candidate, RankedList
from kalm_eval.storage import atomic_open


def check_finite(score: float, where: str) -> float:
    """`score`, or ScoreError naming `where`: nan, inf and overflows cannot be ranked (a sort with NaN is
    undefined)."""
    if not math.isfinite(score):
        raise ScoreError(f"{where}: score {score!r} is not a finite number (nan, inf and values beyond the float "
                         "range cannot be ranked)")
    return score


def rank(query_id: str, scored: Iterable[tuple[str, float]], depth: int, *, ignore_identical_ids: bool,
         source: str = "first stage") -> RankedList:
    """Sort by TIE_BREAK, drop the query's own id if the dataset says so, keep the top `depth`. A non-finite score
    is a ScoreError naming the query, the doc and `source`."""
    checked = [(doc_id, check_finite(float(score), f"{source}, query {query_id!r}, doc {doc_id!r}"))
               for doc_id, score in scored]
    ordered = trec_order(checked)
    if ignore_identical_ids:
        ordered = [pair for pair in ordered if pair[0] != query_id]
    return RankedList(query_id, tuple(Candidate(doc_id, score) for doc_id, score in ordered[:depth]))


def in_trec_order(candidates: Sequence[Candidate]) -> bool:
    """Whether `candidates` are already in trec_eval's order (scores finite, non-increasing; ties by doc id desc)."""
    for above, below in zip(candidates, candidates[1:]):
        if (below.score, below.doc_id) >= (above.score, above.doc_id):
            return False
    return all(math.isfinite(c.score) for c in candidates)


def write_trec(path: Path, rankings: Iterable[RankedList], tag: str) -> int:
    """Write rankings atomically; returns the number of queries written. Every ranking must be in `trec_order`
    (InvariantError otherwise, and nothing is left behind), so the file ranks as its rank column says."""
    count = 0
    with atomic_open(path) as fh:
        for ranking in rankings:
            if not in_trec_order(ranking.candidates):
                raise InvariantError(f"{path}: query {ranking.query_id!r} is not in trec_eval's order ({TIE_BREAK}); "
                                     "trec_eval would rank the written run differently (a bug)")
            for position, cand in enumerate(ranking.candidates, start=1):
                fh.write(f"{ranking.query_id} Q0 {cand.doc_id} {position} {cand.score!r} {tag}\n")
            count += 1
        failpoints.reach("run.write")
    return count


def iter_trec(path: Path) -> Iterator[RankedList]:
    """Stream a run file one query at a time, in file order. Lines of one query must be contiguous and the file
    must be in rank order (as written by `write_trec`); use `read_trec_validated` for arbitrary user files."""
    current: str | None = None
    candidates: list[Candidate] = []
    seen: set[str] = set()
    for lineno, qid, doc_id, _rank, score in _parse(path):
        if qid != current:
            if current is not None:
                yield RankedList(current, tuple(candidates))
            if qid in seen:
                raise DataError(f"{path}:{lineno}: lines of query {qid!r} are not contiguous")
            seen.add(qid)
            current, candidates = qid, []
        candidates.append(Candidate(doc_id, score))
    if current is not None:
        yield RankedList(current, tuple(candidates))


def _parse(path: Path) -> Iterator[tuple[int, str, str, int, float]]:
    for lineno, line in read_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise DataError(f"{path}:{lineno}: expected 6 columns 'qid Q0 docid rank score tag', got {len(fields)}")
        qid, _q0, doc_id, rank_text, score_text, _tag = fields
        try:
            rank_value, score = int(rank_text), float(score_text)
        except ValueError:
            raise DataError(f"{path}:{lineno}: rank {rank_text!r} / score {score_text!r} not numeric") from None
        if not math.isfinite(score):
            raise DataError(f"{path}:{lineno}: score {score_text!r} is not a finite number (nan, inf and values "
                            "beyond the float range cannot be ranked)")
        yield lineno, qid, doc_id, rank_value, score


def read_trec_validated(
    path: Path, *, queries: set[str], corpus, depth: int, ignore_identical_ids: bool, on_unknown: str, on_duplicate: str,
    dropped_queries: frozenset[str] = frozenset()
) -> tuple[list[RankedList], dict[str, int]]:
    """Read a user-supplied run, check it against the dataset, and rank it by `trec_order` (as trec_eval reads it:
    lines in any order, the rank column ignored; a non-finite score is an error naming file and line).

    on_unknown: "error" | "drop" — lines whose query or doc id the dataset does not know.
    on_duplicate: "error" | "keep_first" — a doc listed twice for one query (first = higher score).
    dropped_queries: judged queries an input policy left out; their lines are skipped and counted, not unknown."""
    if on_unknown not in ("error", "drop") or on_duplicate not in ("error", "keep_first"):
        raise ValueError("on_unknown must be error|drop and on_duplicate error|keep_first")
    per_query: dict[str, dict[str, float]] = {}
    report = {"lines": 0, "unknown_query_lines": 0, "unknown_doc_lines": 0, "duplicate_lines": 0}
    for lineno, qid, doc_id, _rank, score in _parse(path):
        report["lines"] += 1
        if qid in dropped_queries and qid not in queries:
            report["dropped_query_lines"] = report.get("dropped_query_lines", 0) + 1
            continue
        for known, kind, key in ((qid in queries, "query", "unknown_query_lines"), (doc_id in corpus, "doc", "unknown_doc_lines")):
            if not known:
                if on_unknown == "error":
                    raise DataError(f"{path}:{lineno}: unknown {kind} id {qid if kind == 'query' else doc_id!r} (retriever.on_unknown=drop to skip)")
                report[key] += 1
                break
        else:
            docs = per_query.setdefault(qid, {})
            if doc_id in docs:
                if on_duplicate == "error":
                    raise DataError(f"{path}:{lineno}: doc {doc_id!r} listed twice for query {qid!r} (retriever.on_duplicate=keep_first to keep the higher-scored)")
                report["duplicate_lines"] += 1
                if score <= docs[doc_id]:
                    continue
            docs[doc_id] = score
    rankings = []
    for qid, docs in per_query.items():
        # trec_eval ignores the rank column: ties of a given run are broken by doc id, like every other run.
        ordered = trec_order(docs.items())
        if ignore_identical_ids:
            ordered = [item for item in ordered if item[0] != qid]
        rankings.append(RankedList(qid, tuple(Candidate(d, s) for d, s in ordered[:depth])))
    report["queries"] = len(rankings)
    report["queries_without_candidates"] = len(queries - set(per_query))
    return rankings, report
