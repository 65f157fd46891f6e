"""Metrics with ir-measures (pytrec_eval backend), per query, over every judged query.

Rules, all recorded in each result:
- the evaluated order is the run's rank order (scores are replaced by descending rank values before scoring); every
  run kalm-eval ranks is in trec_eval's order of its scores (kalm_eval.ranking.trec_order, checked by write_trec),
  so the metric equals trec_eval's on the written run file, ties included (tests/test_trec_eval_parity.py);
- with the ignore_identical_ids quirk, a hit whose doc id equals the query id is dropped first;
- a judged query with no retrieved documents scores 0 (trec_eval -c), so the mean is over all judged queries."""

from __future__ import annotations

from collections.abc import Iterable

import ir_measures
from ir_measures import Qrel, ScoredDoc

from kalm_eval.data.quirks import Quirks
from kalm_eval.records import RankedList, StageResult

MAIN_MEASURE = "nDCG@10"
RECALL_CUTOFFS = (1, 5, 10, 20, 50, 100, 200, 500, 1000)


def measures_for(depth: int, quirks: Quirks) -> list:
    rel = quirks.relevance_threshold
    names = ["nDCG@10", f"RR(rel={rel})@10"] + [f"R(rel={rel})@{k}" for k in RECALL_CUTOFFS if k <= depth]
    if depth not in RECALL_CUTOFFS:
        names.append(f"R(rel={rel})@{depth}")
    return [ir_measures.parse_measure(name) for name in names]


def definitions(depth: int, quirks: Quirks) -> dict:
    return {
        "provider": f"ir_measures=={ir_measures.__version__} (pytrec_eval)",
        "measures": [str(m) for m in measures_for(depth, quirks)],
        "order": "rank order of the run file",
        "missing_queries": "scored 0, mean over all judged queries",
        "ignore_identical_ids": quirks.ignore_identical_ids,
        "relevance_threshold": quirks.relevance_threshold,
    }


def evaluate(name: str, rankings: Iterable[RankedList], qrels: list[Qrel], quirks: Quirks, depth: int,
             block: int = 2000) -> StageResult:
    """Per-query values of every measure over all judged queries, and their means. The run is consumed `block`
    queries at a time (each query's value depends only on its own ranking and qrels), so memory does not grow
    with the number of (query, candidate) pairs."""
    measures = measures_for(depth, quirks)
    judged = list(dict.fromkeys(q.query_id for q in qrels))
    qrels_of: dict[str, list[Qrel]] = {}
    for qrel in qrels:
        qrels_of.setdefault(qrel.query_id, []).append(qrel)
    per_query: dict[str, dict[str, float]] = {str(m): dict.fromkeys(judged, 0.0) for m in measures}
    for chunk in _blocks(rankings, block):
        chunk_qrels = [q for ranking in chunk for q in qrels_of.get(ranking.query_id, ())]
        for metric in ir_measures.iter_calc(measures, chunk_qrels, list(_scored_docs(chunk, quirks))):
            if metric.query_id in per_query[str(metric.measure)]:
                per_query[str(metric.measure)][metric.query_id] = float(metric.value)
    aggregate = {m: (sum(values.values()) / len(values) if values else 0.0) for m, values in per_query.items()}
    return StageResult(name=name, aggregate=aggregate, per_query=per_query, extra={"queries": len(judged)})


def _blocks(rankings: Iterable[RankedList], size: int) -> Iterable[list[RankedList]]:
    chunk: list[RankedList] = []
    for ranking in rankings:
        chunk.append(ranking)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _scored_docs(rankings: Iterable[RankedList], quirks: Quirks) -> Iterable[ScoredDoc]:
    for ranking in rankings:
        kept = [c for c in ranking.candidates if not (quirks.ignore_identical_ids and c.doc_id == ranking.query_id)]
        n = len(kept)
        for position, cand in enumerate(kept):
            yield ScoredDoc(ranking.query_id, cand.doc_id, float(n - position))


ROC_AUC_DEFINITION = ("scikit-learn roc_auc_score of the reranker margin; positive = qrel grade >= relevance_threshold, "
                      "every other reranked candidate negative (unjudged included). roc_auc: pooled over all reranked "
                      "(query, candidate) pairs of the dataset; roc_auc_query_mean: mean of per-query AUCs over the "
                      "roc_auc_queries queries whose candidates hold both classes")


def roc_auc(query_ids: list[str], doc_ids: list[str], scores: list[float], qrels: list[Qrel],
            quirks: Quirks) -> dict[str, float | int | None]:
    """ROC-AUC of a reranker's scores over its reranked pairs (see ROC_AUC_DEFINITION); None where undefined."""
    import numpy as np
    from sklearn import config_context
    from sklearn.metrics import roc_auc_score as sklearn_roc_auc

    def roc_auc_score(labels: np.ndarray, values: np.ndarray) -> float:
        with config_context(skip_parameter_validation=True):  # inputs are built right here; validation ~3 ms/call
            return sklearn_roc_auc(labels, values)

    relevant = {(q.query_id, q.doc_id) for q in qrels if q.relevance >= quirks.relevance_threshold}
    labels = np.array([(q, d) in relevant for q, d in zip(query_ids, doc_ids)], dtype=bool)
    values = np.asarray(scores, dtype=np.float64)
    pooled = float(roc_auc_score(labels, values)) if 0 < labels.sum() < len(labels) else None
    per_query = []
    order = np.argsort(np.asarray(query_ids), kind="stable")
    sorted_ids = np.asarray(query_ids)[order]
    bounds = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1], True])
    for start, end in zip(bounds[:-1], bounds[1:]):
        rows = order[start:end]
        if 0 < labels[rows].sum() < len(rows):
            per_query.append(float(roc_auc_score(labels[rows], values[rows])))
    return {"roc_auc": pooled, "roc_auc_query_mean": float(np.mean(per_query)) if per_query else None,
            "roc_auc_queries": len(per_query)}
