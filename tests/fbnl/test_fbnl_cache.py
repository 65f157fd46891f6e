"""Encode once, pool at every compression; the persisted pooled-state cache (policy, hits, keys, damage, size cap)."""

import dataclasses
import logging

import numpy as np
import pytest
import torch

from kalm_eval.fbnl.passages import PassageEncoder, encoder_cache_key
from kalm_eval.fbnl.pooled_cache import PooledStateCache
from kalm_eval.fbnl.pooling import pooled_length
from kalm_eval.fbnl.prompts import passage_token_ids
from kalm_eval.fbnl.synthetic import build_tiny_model
from kalm_eval.storage import sha256_text
from tests.fbnl.fbnl_testlib import kalm_scores

DOCS = {
    "a": "The capital of China is Beijing.",
    "b": "Gravity attracts bodies toward one another.",
    "c": "The protein expression in human cells was increased in patients with cancer. " * 4,
    "d": "Mice with the gene had a higher risk of disease.",
    "e": "The capital of China is Beijing.",  # same text as "a": one passage, two doc ids
}
TEXTS = {sha256_text(t): t for t in DOCS.values()}
UNIQUE = 4
QUERY = "What is the capital of China?"
ALL = (1, 4, 32)


def _encoder(loaded, root, persist=ALL, max_bytes=None):
    cache = PooledStateCache(root, encoder_cache_key(loaded), max_bytes=max_bytes) if root is not None else None
    return PassageEncoder(loaded, encode_batch_size=3, cache=cache, persist=persist)


def test_encode_once_pool_many(tiny, monkeypatch):
    encoder = tiny.model.get_encoder()
    rows_seen = []
    original = encoder.forward

    def counting_forward(*args, **kwargs):
        rows_seen.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(encoder, "forward", counting_forward)
    pooled, stats = _encoder(tiny, None).pooled(TEXTS, ALL)
    assert sum(rows_seen) == UNIQUE == stats.passages_encoded == stats.passages and stats.cache_hits == 0
    lengths = {h: len(passage_token_ids(tiny.tokenizer, t, 1024)) for h, t in TEXTS.items()}
    assert stats.tokens_encoded == sum(lengths.values())
    for r in ALL:
        assert {h: s.shape[0] for h, s in pooled[r].items()} == {h: pooled_length(n, r) for h, n in lengths.items()}
        assert stats.pooled_vectors[r] == sum(pooled_length(n, r) for n in lengths.values())
    _, [scores], _ = kalm_scores(tiny, DOCS, [(QUERY, None, ["a", "e"])], 4)
    assert scores[0] == scores[1]  # identical texts, identical states


def test_second_run_hits_the_cache_bit_identically(tiny, tmp_path):
    first, stats = _encoder(tiny, tmp_path).pooled(TEXTS, ALL)
    assert stats.passages_encoded == UNIQUE and stats.cache_bytes_written > 0
    second, stats = _encoder(tiny, tmp_path).pooled(TEXTS, ALL)
    assert stats.passages_encoded == 0 and stats.cache_hits == UNIQUE
    for r in ALL:
        assert all(torch.equal(first[r][h], second[r][h]) for h in TEXTS)


def test_persist_policy_chooses_the_compressions(tiny, tmp_path):
    _encoder(tiny, tmp_path, persist=(32,)).pooled(TEXTS, (4, 32))
    key_dir = next(p for p in tmp_path.iterdir() if p.is_dir())
    assert sorted(p.name for p in key_dir.iterdir() if p.is_dir()) == ["r32"]  # r=4 is not persisted
    # r=4 is not on disk, so a run asking for (4, 32) still encodes; a run asking for 32 alone does not
    assert _encoder(tiny, tmp_path, persist=(32,)).pooled(TEXTS, (4, 32))[1].passages_encoded == UNIQUE
    assert _encoder(tiny, tmp_path, persist=(32,)).pooled(TEXTS, (32,))[1].passages_encoded == 0


def test_cache_files_carry_the_full_key(tiny, tmp_path):
    encoder = _encoder(tiny, tmp_path)
    encoder.pooled(TEXTS, (4,))
    (index_file,) = sorted(tmp_path.glob("*/r4/*.index.npz"))
    with np.load(index_file) as index:
        assert str(index["key_id"]) == encoder.cache.key_id and int(index["compression"]) == 4
        assert sorted(d.hex() for d in index["digests"]) == sorted(TEXTS)
    assert encoder.cache.key["doc_max_len"] == 1024 and encoder.cache.key["dtype"] == "float32"
    blob = index_file.with_name(index_file.name.replace(".index.npz", ".safetensors")).read_bytes()
    assert b"encoder_fingerprint" in blob[:20000]  # the key is in the segment header too


def test_lookup_reads_single_passages(tiny, tmp_path):
    pooled, _ = _encoder(tiny, tmp_path).pooled(TEXTS, (4,))
    cache = PooledStateCache(tmp_path, encoder_cache_key(tiny))
    one = next(iter(TEXTS))
    found = cache.lookup(4, [one, "0" * 64])
    assert list(found) == [one] and torch.equal(found[one], pooled[4][one])


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "garbage_index", "missing_segment"])
def test_damaged_segment_is_named_deleted_and_rebuilt(tiny, tmp_path, caplog, damage):
    halves = [dict(list(TEXTS.items())[:2]), dict(list(TEXTS.items())[2:])]
    expected = {}
    for half in halves:  # two segments per compression
        pooled, _ = _encoder(tiny, tmp_path).pooled(half, ALL)
        for r in ALL:
            expected.update({(r, h): s for h, s in pooled[r].items()})
    index_file = sorted(tmp_path.glob("*/r4/*.index.npz"))[0]
    segment = index_file.with_name(index_file.name.replace(".index.npz", ".safetensors"))
    if damage == "flip_byte":
        data = bytearray(segment.read_bytes())
        data[-10] ^= 0xFF
        segment.write_bytes(bytes(data))
    elif damage == "truncate":
        segment.write_bytes(segment.read_bytes()[:100])
    elif damage == "garbage_index":
        index_file.write_bytes(b"not an npz")
    else:
        segment.unlink()
    with caplog.at_level(logging.WARNING, logger="kalm_eval.fbnl.pooled_cache"):
        encoder = _encoder(tiny, tmp_path)
        pooled, stats = encoder.pooled(TEXTS, ALL)
    assert encoder.cache.corrupt_segments == 1 and str(tmp_path) in caplog.text
    assert stats.passages_encoded == 2 and stats.cache_hits == UNIQUE - 2  # only the damaged segment's passages
    for (r, h), state in expected.items():
        torch.testing.assert_close(pooled[r][h], state, atol=1e-6, rtol=0)
    again = _encoder(tiny, tmp_path)  # rebuilt: everything from disk again
    assert again.pooled(TEXTS, ALL)[1].passages_encoded == 0 and again.cache.corrupt_segments == 0


def test_key_changes_with_dtype_and_doc_max_len_but_not_the_decoder(tiny, tmp_path):
    base = PooledStateCache(tmp_path, encoder_cache_key(tiny)).key_id
    short = build_tiny_model(seed=0)
    short.spec = dataclasses.replace(short.spec, doc_max_len=8)
    bf16 = build_tiny_model(seed=0, dtype="bfloat16")
    for other in (short, bf16):
        assert PooledStateCache(tmp_path, encoder_cache_key(other)).key_id != base
    same = build_tiny_model(seed=0)
    same.spec = dataclasses.replace(same.spec, query_max_len=16)
    assert PooledStateCache(tmp_path, encoder_cache_key(same)).key_id == base


def test_max_bytes_caps_persisting(tiny, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="kalm_eval.fbnl.pooled_cache"):
        pooled, stats = _encoder(tiny, tmp_path, max_bytes=1).pooled(TEXTS, ALL)
    assert stats.cache_bytes_written == 0 and "cache.max_bytes" in caplog.text
    assert not list(tmp_path.glob("*/r*/*.safetensors")) and len(pooled[4]) == UNIQUE
