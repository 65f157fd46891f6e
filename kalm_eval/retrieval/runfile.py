"""TREC run files (`qid Q0 docid rank score tag`, ranks 1..k) and the ranking rules shared by every first stage."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from kalm_eval.errors import DataError
from kalm_eval.data.readers import read_lines
from kalm_eval.records import Candidate, RankedList
from kalm_eval.storage import atomic_open

# trec_eval's own order (score desc, then docno desc), so a run file ranks exactly as trec_eval would rank its scores;
# this matters: ArguAna BM25 has many tied scores, and MTEB's published numbers come from trec_eval's ordering.
TIE_BREAK = "score desc, then doc id desc (trec_eval)"


def rank(query_id: str, scored: Iterable[tuple[str, float]], depth: int, *, ignore_identical_ids: bool) -> RankedList:
    """Sort by TIE_BREAK, drop the query's own id if the dataset says so, keep the top `depth`."""
    ordered = sorted(sorted(scored, key=lambda pair: pair[0], reverse=True), key=lambda pair: -pair[1])
    if ignore_identical_ids:
        ordered = [pair for pair in ordered if pair[0] != query_id]
    return RankedList(query_id, tuple(Candidate(doc_id, float(score)) for doc_id, score in ordered[:depth]))


def write_trec(path: Path, rankings: Iterable[RankedList], tag: str) -> int:
    """Write rankings atomically; returns the number of queries written."""
    count = 0
    with atomic_open(path) as fh:
        for ranking in rankings:
            for position, cand in enumerate(ranking.candidates, start=1):
                fh.write(f"{ranking.query_id} Q0 {cand.doc_id} {position} {cand.score!r} {tag}\n")
            count += 1
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
            yield lineno, qid, doc_id, int(rank_text), float(score_text)
        except ValueError:
            raise DataError(f"{path}:{lineno}: rank {rank_text!r} / score {score_text!r} not numeric") from None


def read_trec_validated(
    path: Path, *, queries: set[str], corpus, depth: int, ignore_identical_ids: bool, on_unknown: str, on_duplicate: str,
    dropped_queries: frozenset[str] = frozenset()
) -> tuple[list[RankedList], dict[str, int]]:
    """Read a user-supplied run, check it against the dataset, and re-rank it by our rules.

    on_unknown: "error" | "drop" — lines whose query or doc id the dataset does not know.
    on_duplicate: "error" | "keep_first" — a doc listed twice for one query (first = higher score).
    dropped_queries: judged queries an input policy left out; their lines are skipped and counted, not unknown."""
    if on_unknown not in ("error", "drop") or on_duplicate not in ("error", "keep_first"):
        raise ValueError("on_unknown must be error|drop and on_duplicate error|keep_first")
    per_query: dict[str, dict[str, tuple[float, int]]] = {}
    report = {"lines": 0, "unknown_query_lines": 0, "unknown_doc_lines": 0, "duplicate_lines": 0}
    for lineno, qid, doc_id, rank_value, score in _parse(path):
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
                if score <= docs[doc_id][0]:
                    continue
            docs[doc_id] = (score, rank_value)
    rankings = []
    for qid, docs in per_query.items():
        # Given runs may carry ties; the file's own rank breaks them first, then TIE_BREAK's doc id rule.
        ordered = sorted(sorted(docs.items(), key=lambda item: item[0], reverse=True),
                         key=lambda item: (-item[1][0], item[1][1]))
        if ignore_identical_ids:
            ordered = [item for item in ordered if item[0] != qid]
        rankings.append(RankedList(qid, tuple(Candidate(d, s) for d, (s, _) in ordered[:depth])))
    report["queries"] = len(rankings)
    report["queries_without_candidates"] = len(queries - set(per_query))
    return rankings, report
