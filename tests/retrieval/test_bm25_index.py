"""The out-of-core bm25s index: equal to bm25s' own in-memory index, saved once, reused memory-mapped, rebuilt if damaged."""

from __future__ import annotations

import json
import logging

import bm25s
import numpy as np
import pytest

from kalm_eval.data.dataset import Dataset
from kalm_eval.retrieval import bm25_index
from kalm_eval.retrieval.bm25 import BM25Retriever, BM25Settings
from tests.retrieval.synthetic import make_dataset


def reference_index(dataset: Dataset, settings: BM25Settings) -> bm25s.BM25:
    """What kalm-eval did before: bm25s.tokenize over every text in one list, then BM25.index()."""
    texts = [doc.passage(dataset.joiner) for doc in dataset.corpus]
    stemmer = bm25_index.make_stemmer(settings.stemmer)
    index = bm25s.BM25(method=settings.method, k1=settings.k1, b=settings.b)
    index.index(bm25s.tokenize(texts, stopwords=settings.stopwords, stemmer=stemmer, show_progress=False),
                show_progress=False)
    return index


def query_tokens(dataset: Dataset, settings: BM25Settings) -> list[list[str]]:
    return bm25s.tokenize([q.text for q in dataset.queries.values()], stopwords=settings.stopwords,
                          stemmer=bm25_index.make_stemmer(settings.stemmer), show_progress=False, return_ids=False)


@pytest.mark.parametrize("method, stemmer, bucket", [("lucene", "english", 1 << 25), ("lucene", "english", 64),
                                                     ("robertson", None, 50), ("bm25+", "english", 1 << 25)])
def test_streamed_index_scores_equal_bm25s(tmp_path, cache_dir, monkeypatch, method, stemmer, bucket):
    monkeypatch.setattr(bm25_index, "BUCKET_ENTRIES", bucket)  # small buckets: many column buckets
    monkeypatch.setattr(bm25_index, "SPILL_READ_DOCS", 37)
    dataset = make_dataset(tmp_path / "ds", cache_dir, duplicates=4)
    settings = BM25Settings(method=method, stemmer=stemmer)
    retriever = BM25Retriever(settings, cache_dir=cache_dir, batch_size=23)
    ours = retriever.load_index(dataset)
    ref = reference_index(dataset, settings)
    assert ours.scores["num_docs"] == ref.scores["num_docs"] == len(dataset.corpus)
    assert len(ours.scores["data"]) == len(ref.scores["data"])
    assert isinstance(ours.scores["data"], np.memmap)  # reused memory-mapped
    for tokens in query_tokens(dataset, settings):
        if tokens:  # bit-identical score vectors
            assert np.array_equal(ours.get_scores(tokens), ref.get_scores(tokens)), tokens
    ids_ours, scores_ours = ours.retrieve(query_tokens(dataset, settings), k=20, show_progress=False)
    ids_ref, scores_ref = ref.retrieve(query_tokens(dataset, settings), k=20, show_progress=False)
    assert np.array_equal(scores_ours, scores_ref) and np.array_equal(ids_ours, ids_ref)


def test_index_saved_once_then_reused(tmp_path, cache_dir, monkeypatch):
    dataset = make_dataset(tmp_path / "ds", cache_dir, ignore_identical_ids=True, duplicates=3)
    first = BM25Retriever(BM25Settings(), cache_dir=cache_dir)
    runs = list(first.retrieve(dataset, depth=10))
    assert first.index_built and (first.index_path / bm25_index.META).exists()
    meta = json.loads((first.index_path / bm25_index.META).read_text())
    assert meta["key"]["corpus_sha256"] == dataset.corpus.sha256 and meta["key"]["joiner"] == " "
    assert all(len(f["sha256"]) == 64 for f in meta["files"].values())

    def no_build(*args, **kwargs):
        raise AssertionError("index rebuilt although it was saved")

    monkeypatch.setattr(bm25_index, "build_index", no_build)
    second = BM25Retriever(BM25Settings(), cache_dir=cache_dir)
    assert list(second.retrieve(dataset, depth=10)) == runs and not second.index_built
    assert all(r.query_id != c.doc_id for r in runs for c in r.candidates)  # identical ids dropped
    assert all(len(r.candidates) == 10 for r in runs)
    # another analyzer is another index
    other = BM25Retriever(BM25Settings(stemmer=None), cache_dir=cache_dir)
    assert other.index_key(dataset) != second.index_key(dataset)


def test_run_equals_full_sort_of_bm25s_scores(tmp_path, cache_dir):
    """The run is the full score list of bm25s' in-memory index ordered by the run rule (score desc, doc id desc),
    cut at depth: ties at the cut are resolved by doc id, never by how a partial sort happened to pick."""
    dataset = make_dataset(tmp_path / "ds", cache_dir, duplicates=12)
    settings = BM25Settings()
    runs = {r.query_id: r for r in BM25Retriever(settings, cache_dir=cache_dir).retrieve(dataset, depth=15)}
    ref = reference_index(dataset, settings)
    ids = list(dataset.corpus.ids)
    tied_cuts = 0
    for query, tokens in zip(dataset.queries.values(), query_tokens(dataset, settings)):
        scores = ref.get_scores(tokens) if tokens else np.zeros(len(ids), np.float32)
        expected = sorted(sorted(zip(ids, scores.tolist()), key=lambda p: p[0], reverse=True), key=lambda p: -p[1])
        got = [(c.doc_id, c.score) for c in runs[query.id].candidates]
        if np.count_nonzero(scores) >= 15:
            assert got == expected[:15], query.id
            tied_cuts += expected[14][1] == expected[15][1]
        else:  # zeros fill the list (any of them: they are all tied)
            assert got[:np.count_nonzero(scores)] == expected[:np.count_nonzero(scores)]
    assert tied_cuts  # the data has ties exactly at the cut


def test_top_k_with_ties():
    from kalm_eval.retrieval.bm25 import top_k_with_ties

    scores = np.array([0, 3, 1, 3, 0, 2, 3, 0], dtype=np.float32)
    assert sorted(top_k_with_ties(scores, 2).tolist()) == [1, 3, 6]
    assert sorted(top_k_with_ties(scores, 4).tolist()) == [1, 3, 5, 6]
    assert len(top_k_with_ties(scores, 6)) == 6  # fewer non-zero scores than k: zeros fill up
    assert len(top_k_with_ties(scores, 8)) == 8


def test_damaged_index_is_named_and_rebuilt(tmp_path, cache_dir, caplog):
    dataset = make_dataset(tmp_path / "ds", cache_dir)
    retriever = BM25Retriever(BM25Settings(), cache_dir=cache_dir)
    runs = list(retriever.retrieve(dataset, depth=10))
    data = retriever.index_path / "data.csc.index.npy"
    data.write_bytes(data.read_bytes()[:-8])
    again = BM25Retriever(BM25Settings(), cache_dir=cache_dir)
    with caplog.at_level(logging.WARNING, logger="kalm_eval.retrieval.bm25"):
        assert list(again.retrieve(dataset, depth=10)) == runs
    assert again.index_built and str(again.index_path) in caplog.text and "data.csc.index.npy" in caplog.text


def test_scene_candidates_score_only_allowed_docs(tmp_path, cache_dir):
    dataset = make_dataset(tmp_path / "ds", cache_dir)
    qid = next(iter(dataset.queries))
    allowed = ("doc3", "doc40", "doc7", "doc100")
    dataset.candidates = {qid: allowed}
    runs = {r.query_id: r for r in BM25Retriever(BM25Settings(), cache_dir=cache_dir).retrieve(dataset, depth=10)}
    assert {c.doc_id for c in runs[qid].candidates} == set(allowed)
    full = {r.query_id: r for r in BM25Retriever(BM25Settings(), cache_dir=cache_dir).retrieve(
        make_dataset(tmp_path / "ds2", cache_dir), depth=300)}
    expected = [c for c in full[qid].candidates if c.doc_id in allowed]  # rank the corpus, then filter
    assert list(runs[qid].candidates) == expected


def test_memory_guard_points_to_trec_runs(monkeypatch):
    monkeypatch.setattr(bm25_index, "_mem_available", lambda: 1 << 20)
    with pytest.raises(Exception, match="retriever=trec_run"):
        bm25_index.MemoryGuard("BM25 index of 33M passages").check()
