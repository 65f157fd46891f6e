"""LMEB loader on fixtures in the upstream layout (and MTEB's HF layout): file placement per dataset, id types,
text joiner, scene candidates, and a hand-computed nDCG@10 through the whole pipeline."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import pytest

from kalm_eval.data.lmeb import check_instructions, layout_of, scene_of
from kalm_eval.data.loaders import load_dataset
from kalm_eval.errors import DataError
from kalm_eval.config import RunConfig
from kalm_eval.pipeline import run
from kalm_eval.storage import read_json
from kalm_eval.retrieval.bm25 import BM25Retriever, BM25Settings
from tests.data.upstream_formats import LOCOMO_SUBSETS, shipped_lmeb, write_jsonl, write_lmeb_fixture, write_mteb_repo

INSTRUCTION = "Given a query, retrieve documents that answer the query"


def lmeb_cfg(root: Path, dataset: str, subset: str, subsets: dict | None = None, **extra) -> dict:
    subsets = subsets or {subset: INSTRUCTION}
    return {"name": f"lmeb/{dataset}", "loader": "lmeb", "dataset": dataset, **shipped_lmeb(dataset),
            "source": "local", "path": str(root), "split": "test", "joiner": " ", "subset": subset,
            "subsets": subsets, "instruction": subsets.get(subset),
            "quirks": {"ignore_identical_ids": False, "relevance_threshold": 1}, **extra}


@pytest.fixture
def lmeb_root(tmp_path) -> Path:
    return write_lmeb_fixture(tmp_path / "lmeb")


def test_locomo_subset_counts_ids_joiner_and_scenes(lmeb_root, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        ds = load_dataset(lmeb_cfg(lmeb_root, "LoCoMo", "single_hop"), tmp_path / "cache")
    assert ds.name == "lmeb/LoCoMo/single_hop" and ds.split == "test"
    # judged queries only (the unjudged conv-1_0_q9 is dropped), in file order; corpus shared by all subsets
    assert list(ds.queries) == ["conv-1_0_q1", "conv-2_0_q1", "conv-3_0_q1"]
    assert len(ds.corpus) == 6 and len(ds.qrels) == 3
    assert all(isinstance(d, str) for d in ds.corpus.ids) and "7" in ds.corpus  # int ids in JSON become strings
    assert ds.passage("conv-1_s2_t1") == "session 2 Alice said Biscuit loves the beach and swimming"
    assert ds.passage("conv-1_s1_t1") == "Alice adopted a puppy named Biscuit last spring"  # empty title: no joiner
    # scene = first two "_" parts of the query id; stale id "gone_1" dropped; conv-3_0 has no scene
    assert ds.candidates == {"conv-1_0_q1": ("conv-1_s1_t1", "conv-1_s1_t2", "conv-1_s2_t1"),
                             "conv-2_0_q1": ("conv-2_s1_t1", "conv-2_s1_t2", "7")}
    assert ds.candidates_for("conv-3_0_q1") is None
    assert ds.stats["candidate_ids_not_in_corpus"] == 1 and ds.stats["queries_without_candidates"] == 1
    assert "candidates" in ds.files and "candidates" in str(ds.identity())
    assert "without a candidate set" in caplog.text
    assert scene_of("conv-1_0_q1", "prefix2") == "conv-1_0" and scene_of("cq1", "query_id") == "cq1"


def test_file_placement_single_subset_and_scenario(lmeb_root, tmp_path):
    covid = load_dataset(lmeb_cfg(lmeb_root, "CovidQA", "Covid-QA"), tmp_path / "cache")
    assert covid.name == "lmeb/CovidQA/Covid-QA" and len(covid.corpus) == 4
    assert covid.candidates == {"cq1": ("p1", "p2", "p3"), "cq2": ("p1", "p2", "p3")}  # scene = query id
    assert covid.passage("p1") == "Transmission The virus spreads through droplets"
    ep = load_dataset(lmeb_cfg(lmeb_root, "EPBench", "default_claude_long__Times"), tmp_path / "cache")
    assert list(ep.queries) == ["q2"] and len(ep.corpus) == 2 and ep.candidates is None  # corpus at the scenario
    with pytest.raises(DataError, match="missing file"):
        load_dataset(lmeb_cfg(lmeb_root, "EPBench", "default_claude_short__Times"), tmp_path / "cache")
    with pytest.raises(DataError, match="has 2 subsets"):
        load_dataset(lmeb_cfg(lmeb_root, "LoCoMo", None, subsets=dict.fromkeys(LOCOMO_SUBSETS, INSTRUCTION)),
                     tmp_path / "cache")


def test_bm25_with_scenes_equals_full_ranking_filtered(lmeb_root, tmp_path):
    ds = load_dataset(lmeb_cfg(lmeb_root, "LoCoMo", "single_hop"), tmp_path / "cache")
    retriever = BM25Retriever(BM25Settings())
    scoped = {r.query_id: r for r in retriever.retrieve(ds, depth=100)}
    candidates, ds.candidates = ds.candidates, None
    full = {r.query_id: r for r in retriever.retrieve(ds, depth=100)}
    for qid, ranking in scoped.items():
        allowed = candidates.get(qid)
        expected = [c for c in full[qid].candidates if allowed is None or c.doc_id in allowed]
        assert [(c.doc_id, round(c.score, 5)) for c in ranking.candidates] == [
            (c.doc_id, round(c.score, 5)) for c in expected]
        if allowed is not None:
            assert {c.doc_id for c in ranking.candidates} == set(allowed)  # every candidate is ranked, nothing else
    assert scoped["conv-1_0_q1"].candidates[0].doc_id == "conv-1_s1_t1"
    assert len(scoped["conv-3_0_q1"].candidates) == 6  # no scene: whole corpus


def test_dense_scores_only_candidates(lmeb_root, tmp_path, monkeypatch):
    import types

    import torch

    from kalm_eval.retrieval.dense import DenseRetriever, DenseSettings

    class FakeModel:  # deterministic bag-of-letters embeddings; no weights needed
        def __init__(self, *args, **kwargs):
            self.max_seq_length = 0

        def encode(self, texts, **kwargs):
            vecs = torch.tensor([[t.lower().count(ch) for ch in "abcdefghijklmnopqrstuvwxyz"] for t in texts],
                                dtype=torch.float32)
            return torch.nn.functional.normalize(vecs, dim=1)

    # a stand-in module: importing the real sentence_transformers costs ~20 s on a loaded 2-core box
    monkeypatch.setitem(sys.modules, "sentence_transformers", types.SimpleNamespace(SentenceTransformer=FakeModel))
    ds = load_dataset(lmeb_cfg(lmeb_root, "LoCoMo", "single_hop"), tmp_path / "cache")
    runs = {r.query_id: r for r in DenseRetriever(DenseSettings(model="fake", device="cpu")).retrieve(ds, depth=100)}
    model = FakeModel()
    for qid, allowed in ds.candidates.items():
        assert {c.doc_id for c in runs[qid].candidates} == set(allowed)
        q = model.encode([ds.queries[qid].text])[0]
        for cand in runs[qid].candidates:
            assert cand.score == pytest.approx(float(q @ model.encode([ds.passage(cand.doc_id)])[0]), abs=1e-6)
    assert len(runs["conv-3_0_q1"].candidates) == 6


def _ndcg(gains: list[int], ideal: list[int]) -> float:
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains[:10]))
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(ideal, reverse=True)[:10]))
    return dcg / idcg


def test_hand_computed_ndcg_with_scenes_through_the_pipeline(lmeb_root, tmp_path, monkeypatch):
    """A given run ranks the whole corpus (as LMEB's reference does first); scenes then keep only candidates."""
    monkeypatch.chdir(tmp_path)
    run_file = tmp_path / "given.trec"
    ranked = {  # whole-corpus rankings, out-of-scene docs on top
        "conv-1_0_q2": ["conv-2_s1_t1", "conv-1_s1_t2", "7", "conv-1_s1_t1", "conv-2_s1_t2", "conv-1_s2_t1"],
        "conv-2_0_q2": ["conv-1_s2_t1", "conv-2_s1_t1", "conv-1_s1_t1", "7", "conv-2_s1_t2"],
    }
    run_file.write_text("".join(f"{q} Q0 {d} {i + 1} {10.0 - i} sys\n" for q, docs in ranked.items()
                                for i, d in enumerate(docs)))
    cfg = RunConfig.from_mapping(dict(benchmark=lmeb_cfg(lmeb_root, "LoCoMo", "multi_hop"),
                    retriever={"name": "trec_run", "depth": 100, "path": str(run_file), "system": "test"},
                    reranker={"name": "none"}, cache_dir=tmp_path / "cache",
                    output_dir=tmp_path / "out"))
    (out,) = run(cfg)
    record = read_json(out / "metrics.json")
    # conv-1_0_q2, scene conv-1_0 = {s1_t1, s1_t2, s2_t1}: filtered order s1_t2, s1_t1, s2_t1; qrels s2_t1=2, s1_t1=1
    q1 = _ndcg([0, 1, 2], [2, 1])  # = (1/log2 3 + 2/2) / (2 + 1/log2 3)
    # conv-2_0_q2, scene conv-2_0 = {s1_t1, s1_t2, 7}: order s1_t1, 7, s1_t2; both judged docs relevant (1)
    q2 = _ndcg([1, 0, 1], [1, 1])
    assert q1 == pytest.approx((1 / math.log2(3) + 1.0) / (2 + 1 / math.log2(3)))
    assert record["stages"]["first_stage"]["nDCG@10"] == pytest.approx((q1 + q2) / 2, abs=1e-12)
    manifest = read_json(next((tmp_path / "cache" / "first_stage").rglob("*.manifest.json")))
    assert manifest["validation"]["scene_filtered_lines"] == 5 and manifest["validation"]["scene_filtered_queries"] == 2
    assert "candidates" in manifest["dataset"]["files"]
    # the written first-stage run holds scene docs only
    lines = (out / "run.first_stage.trec.gz").read_bytes()
    import gzip
    docs = [line.split()[2] for line in gzip.decompress(lines).decode().splitlines()]
    assert "conv-2_s1_t1" not in docs[:3] and len(docs) == 6


def test_mteb_layout_with_top_ranked(tmp_path):
    corpus = [{"_id": "d1", "title": "A", "text": "alpha"}, {"_id": "d2", "title": "", "text": "beta"},
              {"_id": "d3", "title": "C", "text": "gamma"}]
    roles = {"corpus": corpus, "queries": [{"_id": "q1", "text": "alpha?"}, {"_id": "q2", "text": "beta?"}],
             "qrels": [{"query-id": q, "corpus-id": d, "score": 1} for q, d in (("q1", "d1"), ("q2", "d2"), ("q3", "d2"))],
             "top_ranked": [{"query-id": "q1", "corpus-ids": ["d1", "d3"]}, {"query-id": "q2", "corpus-ids": ["d2", "d9"]}]}
    # (q3 has no query text: dropped, as mteb does; d9 is a stale candidate id)
    repo = write_mteb_repo(tmp_path / "mteb_LoCoMo", {"multi_hop": roles}, split="test")
    cfg = lmeb_cfg(tmp_path, "LoCoMo", "multi_hop", source="mteb", mteb_repo=str(repo), mteb_revision=None)
    ds = load_dataset(cfg, tmp_path / "cache")
    assert list(ds.queries) == ["q1", "q2"] and ds.stats["qrels_queries_without_text"] == 1
    assert ds.candidates == {"q1": ("d1", "d3"), "q2": ("d2",)} and ds.stats["candidate_ids_not_in_corpus"] == 1
    assert ds.passage("d1") == "A alpha" and ds.passage("d2") == "beta"
    without = write_mteb_repo(tmp_path / "no_top", {"multi_hop": {k: v for k, v in roles.items() if k != "top_ranked"}},
                              split="test")
    with pytest.raises(DataError, match="top_ranked"):
        load_dataset({**cfg, "mteb_repo": str(without)}, tmp_path / "cache")


def test_task_instructions_cross_check(lmeb_root, tmp_path, caplog):
    table = {"LoCoMo": {"single_hop": INSTRUCTION}, "EPBench": {"Times": "T"}, "MemGovern": {"MemGovern": "M"}}
    def check(dataset, subsets):
        return check_instructions(table, dataset, layout_of(shipped_lmeb(dataset)), subsets)

    assert check("LoCoMo", {"single_hop": INSTRUCTION}) == []
    assert check("EPBench", {"default_claude_long__Times": "T"}) == []
    assert check("MemGovern", {"dask_dask": "M"}) == []
    (lmeb_root / "task_instructions.json").write_text(json.dumps({"LoCoMo": {"single_hop": "other"}}))
    with caplog.at_level(logging.WARNING):
        load_dataset(lmeb_cfg(lmeb_root, "LoCoMo", "single_hop"), tmp_path / "cache")
    assert "configured instruction differs" in caplog.text


def test_bad_candidates_line_names_file_and_line(lmeb_root, tmp_path):
    write_jsonl(lmeb_root / "Dialogue" / "LoCoMo" / "candidates.jsonl",
                [{"scene_id": "conv-1_0", "candidate_doc_ids": ["x"]}, {"scene_id": "conv-2_0"}])
    with pytest.raises(DataError, match=r"candidates.jsonl:2: missing field"):
        load_dataset(lmeb_cfg(lmeb_root, "LoCoMo", "single_hop"), tmp_path / "cache")
