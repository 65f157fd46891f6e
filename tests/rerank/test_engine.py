"""Passage-major units: chunking, world-size-free computation, resume, damaged units (a deterministic fake reranker
stands in for a model, so these run in milliseconds)."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from kalm_eval.parallel import Workers
from kalm_eval.records import Candidate, PairScore, RankedList
from kalm_eval.rerank.base import ChunkScores, Identity, ScoringChunk, Variant
from kalm_eval.rerank.engine import (IncompleteUnits, RerankJob, compute_units, merge_units, missing_units,
                                     unit_directory)
from tests.helpers import poison_unit

TEXTS = {f"d{i}": f"passage {i % 37} " + "word " * (i % 7) for i in range(120)}  # d0 and d37 share a text
QUERIES = {f"q{i}": f"query {i}" for i in range(15)}


class FakeReranker:
    """Scores are a hash of (query, passage text, variant): any mix-up of pairs, texts or variants shows."""

    name = "fake"

    def __init__(self):
        self.chunks_seen = 0

    def identity(self):
        return Identity("fake", checkpoint={}, inputs={"score": "hash"})

    def variants(self):
        return [Variant(compression=1), Variant(compression=4)]

    def score_chunk(self, chunk: ScoringChunk) -> ChunkScores:
        self.chunks_seen += 1
        scores = {}
        for variant in self.variants():
            scores[variant.label] = [self._score(chunk.queries[q][0], chunk.passages[p][1], variant.label)
                                     for q, p in chunk.pairs]
        return ChunkScores(scores=scores, counters={"passages_encoded": len({t for _, t in chunk.passages})},
                           variant_counters={v.label: {"pairs": len(chunk.pairs)} for v in self.variants()})

    @staticmethod
    def _score(query, text, label):
        value = int(hashlib.sha256(f"{query}|{text}|{label}".encode()).hexdigest()[:8], 16) / 2**32 - 0.5
        return PairScore(margin=float(np.float32(value)), p_yes=float(np.float32(1 / (1 + np.exp(-value)))))


def rankings():
    rng = np.random.default_rng(0)
    for qid in QUERIES:
        docs = rng.choice(len(TEXTS), size=20, replace=False)
        yield RankedList(qid, tuple(Candidate(f"d{d}", float(20 - i)) for i, d in enumerate(docs)))


def job(chunk_passages=16):
    return RerankJob.build(rankings(), depth=12, query_text=QUERIES.__getitem__, instruction=None,
                           passage_text=TEXTS.__getitem__, chunk_passages=chunk_passages)


def run_all(tmp_path, name, worlds):
    """Compute every unit with the given sequence of world sizes (each world's ranks one after another)."""
    the_job, reranker = job(), FakeReranker()
    units = unit_directory(tmp_path / name, "local/x", reranker, reranker.variants(), the_job)
    computed = 0
    for world in worlds:
        for rank in range(world):
            computed += compute_units(the_job, reranker, units, Workers(rank, world), TEXTS.__getitem__)
    return the_job, units, merge_units(the_job, reranker.variants(), units), computed


def test_chunks_partition_the_pairs_by_passage_text(tmp_path):
    the_job = job()
    assert the_job.pairs == 15 * 12 and the_job.chunks == -(-the_job.unique_texts // 16)
    parts = the_job.unit_pairs()
    assert sorted(np.concatenate(parts).tolist()) == list(range(the_job.pairs))  # each pair in exactly one unit
    chunk_of = the_job.chunk_of_docs()
    by_text = {}
    for d, digest in enumerate(the_job.digests):
        by_text.setdefault(digest, set()).add(int(chunk_of[d]))
    assert all(len(chunks) == 1 for chunks in by_text.values())  # identical texts always share a unit
    chunk = the_job.scoring_chunk(parts[0], TEXTS.__getitem__)
    assert all(chunk.passages[p][1] == TEXTS[chunk.passages[p][0]] for _, p in chunk.pairs)


def test_world_size_does_not_change_a_single_byte(tmp_path):
    _, one_units, one, computed = run_all(tmp_path, "one", [1])
    _, three_units, three, _ = run_all(tmp_path, "three", [3])
    assert computed == job().chunks
    for label in ("r1", "r4"):
        assert np.array_equal(one.margin[label], three.margin[label]) and not np.isnan(one.margin[label]).any()
        assert np.array_equal(one.p_yes[label], three.p_yes[label])
    for unit in sorted(one_units.path.glob("*.npz")):
        assert unit.read_bytes() == (three_units.path / unit.name).read_bytes()
    assert one.counters == three.counters


def test_resume_computes_only_what_is_missing_whatever_the_world(tmp_path):
    the_job, reranker = job(), FakeReranker()
    units = unit_directory(tmp_path, "local/x", reranker, reranker.variants(), the_job)
    compute_units(the_job, reranker, units, Workers(0, 3), TEXTS.__getitem__)  # one of three ranks, then "killed"
    first = len(list(units.path.glob("*.npz")))
    victim = missing_units(the_job, units)[0]  # a unit in flight when the process died
    units.marker(victim).write_text(json.dumps({"host": os.uname().nodename, "pid": 2**22 + 7, "started": 0}))
    status = units.status(the_job.chunks)
    assert (status["done"], status["interrupted"], status["in_flight"]) == (first, 1, 0)
    resumed = FakeReranker()
    computed = sum(compute_units(the_job, resumed, units, Workers(r, 2), TEXTS.__getitem__) for r in range(2))
    assert computed == resumed.chunks_seen == the_job.chunks - first  # nothing done is done again
    assert not list(units.path.glob("*.inflight"))
    merged = merge_units(the_job, reranker.variants(), units)
    _, _, reference, _ = run_all(tmp_path, "reference", [1])
    assert np.array_equal(merged.margin["r4"], reference.margin["r4"])


def test_a_damaged_unit_is_named_deleted_and_recomputed(tmp_path, caplog):
    the_job, units, original, _ = run_all(tmp_path, "x", [1])
    damaged = sorted(units.path.glob("*.npz"))[1]
    intact = damaged.read_bytes()
    damaged.write_bytes(intact[:50])
    with pytest.raises(IncompleteUnits, match="1 unit"):
        merge_units(the_job, FakeReranker().variants(), units)
    assert str(damaged) in caplog.text and not damaged.exists()
    assert compute_units(the_job, FakeReranker(), units, Workers(), TEXTS.__getitem__) == 1
    assert damaged.read_bytes() == intact  # the recomputed unit is the one that was damaged, byte for byte
    recomputed = merge_units(the_job, FakeReranker().variants(), units)
    for label in original.margin:
        assert np.array_equal(recomputed.margin[label], original.margin[label])
        assert np.array_equal(recomputed.p_yes[label], original.p_yes[label])


def test_units_of_another_job_are_never_mixed_in(tmp_path):
    first, reranker = job(chunk_passages=16), FakeReranker()
    other = job(chunk_passages=8)  # other units: another directory, never read as this job's
    assert unit_directory(tmp_path, "local/x", reranker, reranker.variants(), first).path != \
        unit_directory(tmp_path, "local/x", reranker, reranker.variants(), other).path


class NonFiniteReranker(FakeReranker):
    """Like FakeReranker, but one (query, passage) pair gets `value` as its r4 margin (a bf16 overflow, say)."""

    def __init__(self, query_text, doc_id, value):
        super().__init__()
        self.target, self.value = (query_text, doc_id), value

    def score_chunk(self, chunk: ScoringChunk) -> ChunkScores:
        result = super().score_chunk(chunk)
        for i, (q, p) in enumerate(chunk.pairs):
            if (chunk.queries[q][0], chunk.passages[p][0]) == self.target:
                result.scores["r4"][i] = PairScore(margin=self.value, p_yes=0.5)
        return result


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_margin_is_refused_naming_pair_model_and_variant_before_anything_is_written(tmp_path, value):
    from kalm_eval.errors import ScoreError

    the_job = job()
    qid, doc = the_job.query_ids[int(the_job.pair_query[7])], the_job.doc_ids[int(the_job.pair_doc[7])]
    reranker = NonFiniteReranker(QUERIES[qid], doc, value)
    units = unit_directory(tmp_path, "local/x", reranker, reranker.variants(), the_job)
    unit = int(the_job.chunk_of_docs()[the_job.pair_doc[7]])
    with pytest.raises(ScoreError, match=rf"^query '{qid}', doc '{doc}': margin {value!r} is not a finite number "
                                         rf"\(model fake, variant 'r4'; 1 of \d+ pairs of unit {unit}\); neither the "
                                         "unit nor any result was written"):
        compute_units(the_job, reranker, units, Workers(), TEXTS.__getitem__)
    assert not units.done(unit)


def test_a_cached_unit_holding_a_non_finite_score_is_named_discarded_and_recomputed(tmp_path, caplog):
    the_job, units, reference, _ = run_all(tmp_path, "x", [1])
    damaged = sorted(units.path.glob("*.npz"))[2]
    poison_unit(damaged, "r1", 0, np.inf)
    with pytest.raises(IncompleteUnits, match="1 unit"):
        merge_units(the_job, FakeReranker().variants(), units)
    assert f"rerank unit {damaged} is unusable (it holds non-finite scores (variant 'r1'))" in caplog.text
    assert not damaged.exists()
    assert compute_units(the_job, FakeReranker(), units, Workers(), TEXTS.__getitem__) == 1
    again = merge_units(the_job, FakeReranker().variants(), units)
    assert np.array_equal(again.margin["r1"], reference.margin["r1"])


def test_which_worker_computes_a_unit_turns_with_the_run(tmp_path):
    """Unit c goes to worker (c + offset) % world, the offset read from the run's units key: a suite of one-unit
    datasets does not load worker 0 alone, and the workers of one run still split its units exactly."""
    from kalm_eval.rerank.engine import UnitDirectory

    the_job, reranker = job(), FakeReranker()
    done = {}
    for offset in (0, 1):
        units = UnitDirectory(tmp_path / f"{offset:08x}{'0' * 16}")
        units.path.mkdir()
        assert units.worker_offset() == offset
        compute_units(the_job, reranker, units, Workers(1, 2), TEXTS.__getitem__)
        done[offset] = {c for c in range(the_job.chunks) if units.done(c)}
    assert done[0] == {c for c in range(the_job.chunks) if c % 2 == 1}
    assert done[1] == {c for c in range(the_job.chunks) if c % 2 == 0}  # the other half
