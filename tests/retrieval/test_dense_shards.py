"""Sharded dense search: equal to brute force (ties included), resumable, shared between workers, scene-aware."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pytest

from kalm_eval.parallel import Workers
from kalm_eval.records import Candidate, RankedList
from kalm_eval.retrieval import dense
from kalm_eval.retrieval.dense import DenseRetriever, DenseSettings, UnitsPending
from kalm_eval.retrieval.dense_encoders import RandomEncoder
from kalm_eval.retrieval.topk import TopK
from tests.retrieval.synthetic import make_dataset


class IntEncoder:
    """Small-integer vectors keyed by the text: every dot product is exact in float16/float32, so any summation
    order gives the same score and equal texts tie exactly."""

    dim = 6

    def __init__(self, fail_after: int | None = None):
        self.fail_after = fail_after
        self.passages = 0  # passages encoded

    def identity(self):
        return {"model": "int-test-encoder"}

    def _vec(self, text: str) -> np.ndarray:
        digest = hashlib.sha256(text.encode()).digest()
        return (np.frombuffer(digest[: self.dim], dtype=np.uint8) % 5).astype(np.float32) - 2

    def encode_passages(self, texts):
        if self.fail_after is not None and self.passages + len(texts) > self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.passages += len(texts)
        return np.stack([self._vec(t) for t in texts])

    def encode_queries(self, texts):
        return np.stack([self._vec(t) for t in texts])


SETTINGS = DenseSettings(model="int-test", shard_docs=7, batch_size=4, normalize=False, device="cpu")


def brute_force(dataset, encoder, depth: int) -> list[RankedList]:
    """Score every passage, order by the run rule (score desc, then doc id desc), drop identical ids, cut."""
    ids = list(dataset.corpus.ids)
    docs = np.stack([encoder._vec(d.passage(dataset.joiner)) for d in dataset.corpus]).astype(np.float64)
    out = []
    for query in dataset.queries.values():
        scores = docs @ encoder._vec(query.text).astype(np.float64)
        allowed = dataset.candidates_for(query.id)
        pairs = [(d, s) for d, s in zip(ids, scores.tolist()) if allowed is None or d in allowed]
        pairs = sorted(sorted(pairs, key=lambda p: p[0], reverse=True), key=lambda p: -p[1])
        if dataset.quirks.ignore_identical_ids:
            pairs = [p for p in pairs if p[0] != query.id]
        out.append(RankedList(query.id, tuple(Candidate(d, float(s)) for d, s in pairs[:depth])))
    return out


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(dense, "SEARCH_CHUNK", 3)  # several chunks per shard
    monkeypatch.setattr(dense, "QUERY_BLOCK", 4)  # several query blocks


@pytest.mark.parametrize("store_dtype, shard_docs, chunk, depth", [("float16", 7, 3, 10), ("bfloat16", 7, 3, 10),
                                                                   ("float32", 40, 16, 3), ("float16", 1000, 50, 2), ("float16", 1000, 200, 2)])
def test_sharded_search_equals_brute_force_with_ties(tmp_path, cache_dir, monkeypatch, store_dtype, shard_docs,
                                                     chunk, depth):
    monkeypatch.setattr(dense, "SEARCH_CHUNK", chunk)
    monkeypatch.setattr(dense, "QUERY_BLOCK", 4)
    dataset = make_dataset(tmp_path / "ds", cache_dir, n_docs=90, duplicates=25, ignore_identical_ids=True)
    settings = DenseSettings(**{**SETTINGS.__dict__, "store_dtype": store_dtype, "shard_docs": shard_docs})
    retriever = DenseRetriever(settings, cache_dir=cache_dir, encoder=IntEncoder())
    runs = list(retriever.retrieve(dataset, depth=depth))
    assert runs == brute_force(dataset, IntEncoder(), depth)
    assert sorted(retriever.encoded_units) == list(range((len(dataset.corpus) + shard_docs - 1) // shard_docs))
    # ties at the cut are real here: duplicated passages score the same
    assert any(len({c.score for c in r.candidates}) < len(r.candidates) for r in runs)


def test_topk_keeps_every_tie_at_the_cut():
    import torch

    scores = torch.tensor([[3.0, 1.0, 3.0, 3.0, 0.0, 3.0, 2.0], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    best = TopK(2, 2, torch.device("cpu"))
    best.add_scores(scores[:, :4], 0)  # topk(2) of the first row's chunk would cut one of its three 3.0s
    best.add_scores(scores[:, 4:], 4)
    (values, positions), (values2, positions2) = best.rows()
    assert sorted(positions.tolist()) == [0, 2, 3, 5] and values.tolist() == [3.0] * 4
    assert positions2.tolist() == [6, 5] and values2.tolist() == [6.0, 5.0]


def test_resume_after_interruption_encodes_only_missing_shards(tmp_path, cache_dir, small_blocks):
    dataset = make_dataset(tmp_path / "ds", cache_dir, n_docs=60)
    units = (len(dataset.corpus) + 6) // 7
    interrupted = DenseRetriever(SETTINGS, cache_dir=cache_dir, encoder=IntEncoder(fail_after=30))
    with pytest.raises(KeyboardInterrupt):
        list(interrupted.retrieve(dataset, depth=10))
    done = sorted(interrupted.encoded_units)
    assert done == list(range(len(done))) and 0 < len(done) < units
    assert not list(interrupted.shard_store(dataset).root.glob(".*tmp*"))  # no half-written shard left behind

    resumed_encoder = IntEncoder()
    resumed = DenseRetriever(SETTINGS, cache_dir=cache_dir, encoder=resumed_encoder)
    runs = list(resumed.retrieve(dataset, depth=10))
    assert sorted(resumed.encoded_units) == list(range(len(done), units))
    assert resumed_encoder.passages == len(dataset.corpus) - 7 * len(done)
    clean = DenseRetriever(SETTINGS, cache_dir=tmp_path / "clean", encoder=IntEncoder())
    assert runs == list(clean.retrieve(dataset, depth=10))


def test_shard_without_sidecar_or_damaged_is_recomputed(tmp_path, cache_dir, caplog):
    dataset = make_dataset(tmp_path / "ds", cache_dir, n_docs=40)
    first = DenseRetriever(SETTINGS, cache_dir=cache_dir, encoder=IntEncoder())
    runs = list(first.retrieve(dataset, depth=5))
    store = first.shard_store(dataset)
    store.path(1).with_suffix(".json").unlink()  # killed between the shard and its sidecar
    garbled = store.path(3)
    raw = bytearray(garbled.read_bytes())
    raw[-5:] = b"\x7f\x7f\x7f\x7f\x7f"  # same size, other bytes: only the sha256 tells
    garbled.write_bytes(bytes(raw))
    for part in store.root.glob("search/*/part-000003.npz"):
        part.unlink()  # so shard 3 is read again
    again = DenseRetriever(SETTINGS, cache_dir=cache_dir, encoder=IntEncoder())
    with caplog.at_level(logging.WARNING, logger="kalm_eval.retrieval"):
        assert list(again.retrieve(dataset, depth=5)) == runs
    assert sorted(again.encoded_units) == [1, 3]
    assert str(garbled) in caplog.text


def test_workers_share_units_and_the_last_one_merges(tmp_path, cache_dir):
    dataset = make_dataset(tmp_path / "ds", cache_dir, n_docs=50)
    units = (len(dataset.corpus) + 6) // 7
    w0 = DenseRetriever(SETTINGS, cache_dir=cache_dir, workers=Workers(rank=0, world=2), encoder=IntEncoder())
    with pytest.raises(UnitsPending, match="still missing"):
        list(w0.retrieve(dataset, depth=8))
    assert w0.encoded_units == list(range(0, units, 2))
    w1 = DenseRetriever(SETTINGS, cache_dir=cache_dir, workers=Workers(rank=1, world=2), encoder=IntEncoder())
    runs = list(w1.retrieve(dataset, depth=8))
    assert w1.encoded_units == list(range(1, units, 2))
    assert runs == brute_force(dataset, IntEncoder(), 8)
    # a later single worker (another world size) reuses every unit
    single = DenseRetriever(SETTINGS, cache_dir=cache_dir, encoder=IntEncoder())
    assert list(single.retrieve(dataset, depth=8)) == runs and single.encoded_units == []


def test_scene_candidates_read_embeddings_by_position(tmp_path, cache_dir):
    dataset = make_dataset(tmp_path / "ds", cache_dir, n_docs=60, duplicates=5)
    qids = list(dataset.queries)
    dataset.candidates = {qids[0]: ("doc3", "doc59", "dup2", "doc10"), qids[1]: ()}
    runs = {r.query_id: r for r in DenseRetriever(SETTINGS, cache_dir=cache_dir, encoder=IntEncoder()).retrieve(dataset, 10)}
    expected = {r.query_id: r for r in brute_force(dataset, IntEncoder(), 10)}
    assert runs == expected
    assert {c.doc_id for c in runs[qids[0]].candidates} == {"doc3", "doc59", "dup2", "doc10"}
    assert runs[qids[1]].candidates == ()


def test_random_encoder_is_deterministic_and_keyed():
    a, b = RandomEncoder(16), RandomEncoder(16)
    x = a.encode_passages(["one", "two"])
    assert np.array_equal(x, b.encode_passages(["one", "two"])) and x.dtype == np.float32
    assert np.allclose(np.linalg.norm(x, axis=1), 1)
    assert not np.array_equal(x, RandomEncoder(16, seed=1).encode_passages(["one", "two"]))
    retriever = DenseRetriever(DenseSettings(model="random:16"))
    assert retriever.identity()["model"] == "random:16" and isinstance(retriever.encoder, RandomEncoder)


class NormalisingEncoder(IntEncoder):
    """IntEncoder vectors divided by their norm, as a naive encoder does: the empty passage (a zero vector) turns
    into NaN; `scale` multiplies every vector (an overflow); `bad_query` gives one query a NaN vector."""

    def __init__(self, scale: float = 1.0, bad_query: str | None = None, normalise: bool = True):
        super().__init__()
        self.scale, self.bad_query, self.normalise = scale, bad_query, normalise

    def _vec(self, text: str) -> np.ndarray:
        vec = np.zeros(self.dim, np.float32) if not text.strip() else super()._vec(text)
        with np.errstate(invalid="ignore", divide="ignore"):
            vec = vec / np.linalg.norm(vec) if self.normalise else vec
        return (vec * np.float32(self.scale)).astype(np.float32)

    def encode_queries(self, texts):
        out = super().encode_queries(texts)
        if self.bad_query is not None:
            out[texts.index(self.bad_query)] = np.nan
        return out


def test_non_finite_embeddings_and_similarities_are_refused_naming_the_text(tmp_path, cache_dir):
    from kalm_eval.errors import ScoreError

    dataset = make_dataset(tmp_path / "ds", cache_dir, n_docs=30)
    empty = [d.id for d in dataset.corpus if not d.passage(dataset.joiner).strip()]
    nonzero = [d.id for d in dataset.corpus if d.id not in empty]
    assert empty and nonzero

    def retrieve(encoder, name, **settings):
        retriever = DenseRetriever(DenseSettings(**{**SETTINGS.__dict__, **settings}), cache_dir=cache_dir / name,
                                   encoder=encoder)
        return list(retriever.retrieve(dataset, depth=5))

    with pytest.raises(ScoreError,
                       match=rf"embedding of passage '{empty[0]}' is not finite \(a zero vector normalised\?\)"):
        retrieve(NormalisingEncoder(), "zero", store_dtype="float32")
    with pytest.raises(ScoreError, match=rf"embedding of passage '{nonzero[0]}' overflows float16 storage"):
        retrieve(NormalisingEncoder(scale=1e6, normalise=False), "overflow", store_dtype="float16")
    first_query = next(iter(dataset.queries.values()))
    with pytest.raises(ScoreError, match=rf"embedding of query '{first_query.id}' is not finite"):
        retrieve(NormalisingEncoder(bad_query=first_query.text, normalise=False), "query", store_dtype="float32")
    with pytest.raises(ScoreError, match=r"dense similarity \(a zero or overflowing embedding\?\), query '[^']+', "
                                         r"doc '[^']+': score inf is not a finite number"):
        retrieve(NormalisingEncoder(scale=1e20, normalise=False), "similarity", store_dtype="float32")
