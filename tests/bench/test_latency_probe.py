"""KalmReranker.latency_probe times the decoder on states of each passage's exact pooled shape without re-encoding."""

from __future__ import annotations

import pytest

from kalm_eval.fbnl.passages import PassageEncoder
from kalm_eval.fbnl.pooling import pooled_length
from kalm_eval.fbnl.prompts import passage_token_ids
from kalm_eval.fbnl.synthetic import build_tiny_model
from kalm_eval.rerank.base import ScoringChunk, Variant
from kalm_eval.rerank.kalm import KalmReranker


@pytest.fixture(scope="module")
def reranker():
    return KalmReranker(build_tiny_model(), compression=[1, 4, 32], batch_size=4)


def test_probe_states_have_the_pooled_shapes_and_no_encoder_runs(reranker, monkeypatch):
    passages = [("d1", "the capital of china is beijing " * 7), ("d2", "water"), ("d3", "gravity attracts " * 30)]
    chunk = ScoringChunk(passages=passages, queries=[("what is the capital", None), ("water query", None)],
                         pairs=[(0, 0), (0, 1), (0, 2), (1, 2), (1, 0)])
    monkeypatch.setattr(PassageEncoder, "_encode", lambda *a, **k: pytest.fail("the probe must not encode"))
    for r in (1, 4, 32):
        probe = reranker.latency_probe(chunk, Variant(compression=r), batch_size=2)
        assert probe.pairs_per_batch == [2, 2, 1]
        states = [s for _, batch_states in probe.batches for s in batch_states]
        expected = [pooled_length(len(passage_token_ids(reranker.loaded.tokenizer, passages[p][1], 1024)), r)
                    for _, p in chunk.pairs]
        assert [int(s.shape[0]) for s in states] == expected
        assert all(s.shape[1] == reranker.loaded.d_model and s.dtype == reranker.loaded.dtype for s in states)
        assert len(probe.score(probe.batches[0])) == 2


def test_batched_passage_tokenisation_is_identical_to_one_call_per_passage(reranker):
    from kalm_eval.fbnl.prompts import passage_token_ids_batch

    tokenizer = reranker.loaded.tokenizer
    texts = ["the capital of china is beijing " * 40, "", "water", "<Document>: gravity", "yes no " * 700]
    for limit in (1024, 5):
        assert passage_token_ids_batch(tokenizer, texts, limit) == [passage_token_ids(tokenizer, t, limit) for t in texts]
