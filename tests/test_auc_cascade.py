"""The paper's two analyses as acceptance checks on real SciFact (BM25 top-30 -> tiny KaLM model, rerank depth 20),
all through the CLI config path:

- ROC-AUC per compression ratio (compression=[2,32]): each record's stages.reranked.roc_auc equals scikit-learn's
  roc_auc_score over that record's own scores.reranked.tsv.gz pairs (score = margin, labels from the qrels file read
  here: grade >= 1 positive, everything else negative), and roc_auc_query_mean the mean of per-query AUCs over the
  queries holding both classes;
- the cascade top-20 @ r=32 -> top-5 @ r=2 (one record): every passage encoded once, its final order what the two
  single-ratio records imply (top 5 of the r=32 order re-sorted by the r=2 margins, ties by the r=32 order, then the
  rest of the r=32 order, then the first-stage tail), and its online cost = sum_k depth_k x ms_per_pair_p50_k.

The single-ratio records are the two records of the compression=[2,32] run (one record per ratio, the same first
stage, the same scoring code as a compression=2 or compression=32 run alone). Runtime: about 4 CPU-minutes (6,000 pairs
scored at two ratios, twice; 3,209 passages encoded once)."""

from __future__ import annotations

import csv
import gzip
from collections import defaultdict

import numpy as np
import pytest

from kalm_eval.storage import read_json
from tests.conftest import shared_dataset
from tests.helpers import run_overrides

DEPTH = 20
FIRST_STAGE_DEPTH = 30
CASCADE = "reranker.cascade=[{depth:20,compression:32},{depth:5,compression:2}]"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    data = shared_dataset("beir", "scifact")
    tmp = tmp_path_factory.mktemp("auc_cascade")
    common = ["benchmark=beir/scifact", f"data_dir={shared_dataset()}", "retriever=bm25",
              f"retriever.depth={FIRST_STAGE_DEPTH}", "reranker=kalm", f"reranker.depth={DEPTH}", "model=tiny",
              "model.doc_max_len=128", "reranker.latency_batches=3", f"cache_dir={tmp / 'cache'}",
              "cache.persist_compression=[2,32]"]
    # The cascade runs first and encodes every passage (and persists its pooled states); the single-ratio run then
    # reads those states from disk (bit-identical, tests/test_rerank_pipeline.py) instead of encoding them again.
    [cascade] = run_overrides(*common, CASCADE, f"output_dir={tmp / 'cascade'}")
    singles = run_overrides(*common, "compression=[2,32]", f"output_dir={tmp / 'sweep'}")
    return data, {int(p.name[1:]): p for p in singles}, cascade


def qrels_positive(data) -> set[tuple[str, str]]:
    with open(data / "qrels" / "test.tsv", newline="") as fh:
        return {(r["query-id"], r["corpus-id"]) for r in csv.DictReader(fh, delimiter="\t") if int(r["score"]) >= 1}


def score_rows(out) -> list[dict]:
    with gzip.open(out / "scores.reranked.tsv.gz", "rt") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def trec(path) -> dict[str, list[str]]:
    ranked: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for line in gzip.open(path, "rt"):
        qid, _, doc, rank, _, _ = line.split()
        ranked[qid].append((int(rank), doc))
    return {q: [d for _, d in sorted(v)] for q, v in ranked.items()}


# ---- ROC-AUC per ratio --------------------------------------------------------------------------------------

@pytest.mark.parametrize("ratio", [2, 32])
def test_roc_auc_equals_sklearn_over_the_records_pairs(runs, ratio):
    from sklearn.metrics import roc_auc_score

    data, singles, _ = runs
    record = read_json(singles[ratio] / "metrics.json")
    assert record["protocol"]["reranker"]["compression"] == ratio
    rows = score_rows(singles[ratio])
    assert len(rows) == record["counts"]["pairs"] == 300 * DEPTH
    positive = qrels_positive(data)
    labels = np.array([(r["query_id"], r["doc_id"]) in positive for r in rows])
    margins = np.array([float(r["margin"]) for r in rows])
    stage = record["stages"]["reranked"]
    assert 0 < labels.sum() < len(labels)
    assert stage["roc_auc"] == roc_auc_score(labels, margins)

    by_query: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_query[r["query_id"]].append(i)
    per_query = [roc_auc_score(labels[idx], margins[idx]) for _, idx in sorted(by_query.items())
                 if 0 < labels[idx].sum() < len(idx)]
    assert stage["roc_auc_queries"] == len(per_query) > 100
    # the same values summed in another order may differ in the last bit; nothing else may differ
    assert stage["roc_auc_query_mean"] == pytest.approx(sum(per_query) / len(per_query), rel=0, abs=1e-12)


def test_roc_auc_differs_between_ratios(runs):
    _, singles, _ = runs
    aucs = [read_json(singles[r] / "metrics.json")["stages"]["reranked"]["roc_auc"] for r in (2, 32)]
    assert aucs[0] != aucs[1]  # the per-ratio analysis reads two different numbers


# ---- cascade --------------------------------------------------------------------------------------------------

def test_cascade_encodes_each_passage_once(runs):
    _, _, cascade = runs
    record = read_json(cascade / "metrics.json")
    first = trec(cascade / "run.first_stage.trec.gz")
    unique = {d for docs in first.values() for d in docs[:DEPTH]}
    counts = record["counts"]
    assert counts["unique_passages"] == len(unique)
    assert counts["passages_encoded"] == len(unique)  # one encoder pass serves both steps (r = 32 and r = 2)
    assert counts["compression_sharing_encode"] == [32, 2]
    assert record["protocol"]["reranker"]["cascade"] == [{"depth": 20, "compression": 32}, {"depth": 5, "compression": 2}]
    assert set(record["stages"]) == {"first_stage", "cascade_1", "reranked"}


def test_cascade_order_is_what_the_single_ratio_runs_imply(runs):
    _, singles, cascade = runs
    first = trec(cascade / "run.first_stage.trec.gz")
    assert first == trec(singles[32] / "run.first_stage.trec.gz")  # the same first stage
    r32 = trec(singles[32] / "run.reranked.trec.gz")  # r = 32 head (margin desc, ties by doc id desc) + tail
    r2_margin = {(r["query_id"], r["doc_id"]): float(r["margin"]) for r in score_rows(singles[2])}
    final = trec(cascade / "run.reranked.trec.gz")
    assert set(final) == set(first)
    changed = 0
    for qid, order in r32.items():
        top = order[:5]
        resorted = sorted(top, key=lambda d: (r2_margin[(qid, d)], d), reverse=True)
        expected = resorted + order[5:DEPTH] + first[qid][DEPTH:]
        assert final[qid] == expected, qid
        assert len(final[qid]) == FIRST_STAGE_DEPTH
        changed += resorted != top
    assert changed > 50  # the second step really reorders (random tiny model: r = 2 and r = 32 disagree)
    # the first step alone is the r = 32 run: same metrics
    cascade_stages = read_json(cascade / "metrics.json")["stages"]
    assert cascade_stages["cascade_1"]["nDCG@10"] == read_json(singles[32] / "metrics.json")["stages"]["reranked"]["nDCG@10"]


def test_cascade_scores_file_holds_each_pairs_deepest_step(runs):
    _, singles, cascade = runs
    r32 = trec(singles[32] / "run.reranked.trec.gz")
    margins = {r: {(x["query_id"], x["doc_id"]): float(x["margin"]) for x in score_rows(singles[r])} for r in (2, 32)}
    for row in score_rows(cascade):
        key = (row["query_id"], row["doc_id"])
        deepest = 2 if row["doc_id"] in r32[row["query_id"]][:5] else 32
        assert float(row["margin"]) == margins[deepest][key]


def test_cascade_online_cost_is_the_sum_over_its_steps(runs):
    _, _, cascade = runs
    timings = read_json(cascade / "metrics.json")["timings"]
    steps = timings["cascade"]
    assert [(s["step"], s["depth"], s["compression"]) for s in steps] == [(1, 20, 32), (2, 5, 2)]
    assert all(s["ms_per_pair_p50"] > 0 and s["latency"]["timed_batches"] == 3 for s in steps)
    assert timings["online_ms_per_query"] == sum(s["depth"] * s["ms_per_pair_p50"] for s in steps)
