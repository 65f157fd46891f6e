"""Encode-once-pool-many and the on-disk pooled-state cache (hits, corruption, keys)."""

import json
import logging

import pytest

from kalm_eval.fbnl.model import build_tiny_model
from kalm_eval.fbnl.passages import PassageStore
from kalm_eval.fbnl.pooling import pooled_length
from kalm_eval.fbnl.prompts import passage_token_ids
from kalm_eval.fbnl.rerank import KalmReranker, RerankSettings

DOCS = {
    "a": "The capital of China is Beijing.",
    "b": "Gravity attracts bodies toward one another.",
    "c": "The protein expression in human cells was increased in patients with cancer. " * 4,
    "d": "Mice with the gene had a higher risk of disease.",
    "e": "The capital of China is Beijing.",  # same text as "a": one passage, two doc ids
}
UNIQUE = 4
QUERY = "What is the capital of China?"


def _reranker(loaded, tmp_path, ratios=(1, 4, 32), shard=2):
    reranker = KalmReranker(loaded, RerankSettings(ratios=list(ratios), cache_dir=tmp_path))
    reranker.passages.cache.passages_per_shard = shard  # small shards: several files to corrupt
    return reranker


def _margins(reranker, ratio):
    return [s.margin for s in reranker.score(QUERY, None, list(DOCS), ratio)]


def test_encode_once_pool_many(tiny, monkeypatch):
    encoder = tiny.model.get_encoder()
    rows_seen = []
    original = encoder.forward

    def counting_forward(*args, **kwargs):
        rows_seen.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(encoder, "forward", counting_forward)
    reranker = KalmReranker(tiny, RerankSettings(ratios=[1, 4, 32], encode_batch_size=3))
    reranker.prepare(DOCS)
    stats = reranker.stats()
    assert sum(rows_seen) == UNIQUE == stats["passages_encoded"] == stats["unique_passages"]
    lengths = [len(passage_token_ids(tiny.tokenizer, DOCS[k], 1024)) for k in "abcd"]
    assert stats["tokens_encoded"] == sum(lengths)
    for ratio in (1, 4, 32):
        expected = sum(pooled_length(n, ratio) for n in lengths) / UNIQUE
        assert stats["pooled_vectors_per_passage"][ratio] == pytest.approx(expected)
        assert stats["stored_bytes_per_passage"][ratio] == pytest.approx(expected * 64 * 4)  # d=64, fp32
    reranker.prepare(DOCS)  # already in memory: nothing more to encode
    assert sum(rows_seen) == UNIQUE
    scores = reranker.score(QUERY, None, ["a", "e"], 4)
    assert scores[0] == scores[1]


def test_second_run_hits_the_cache(tiny, tmp_path):
    first = _reranker(tiny, tmp_path)
    first.prepare(DOCS)
    assert first.stats()["passages_encoded"] == UNIQUE and first.stats()["cache_hits"] == 0
    second = _reranker(tiny, tmp_path)
    second.prepare(DOCS)
    assert second.stats()["passages_encoded"] == 0
    assert second.stats()["cache_hits"] == UNIQUE
    for ratio in (1, 4, 32):
        assert _margins(second, ratio) == _margins(first, ratio)  # bit-identical states from disk


def test_cache_files_carry_the_full_key(tiny, tmp_path):
    reranker = _reranker(tiny, tmp_path)
    reranker.prepare(DOCS)
    manifests = sorted(tmp_path.glob("*/r4/*.json"))
    assert len(manifests) == 2  # 4 passages, 2 per shard
    manifest = json.loads(manifests[0].read_text())
    assert manifest["key"] == reranker.passages.cache_key
    assert manifest["key"]["doc_max_len"] == 1024 and manifest["key"]["dtype"] == "float32"
    assert len(manifest["sha256"]) == 64
    blob = manifests[0].with_suffix(".safetensors").read_bytes()
    assert b"encoder_fingerprint" in blob[:20000]  # the key is in the shard header too


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "garbage_manifest", "missing_shard"])
def test_corrupt_shard_is_detected_and_rebuilt(tiny, tmp_path, caplog, damage):
    first = _reranker(tiny, tmp_path)
    first.prepare(DOCS)
    expected = {r: _margins(first, r) for r in (1, 4, 32)}
    manifest = sorted(tmp_path.glob("*/r4/*.json"))[0]
    shard = manifest.with_suffix(".safetensors")
    damaged_passages = len(json.loads(manifest.read_text())["passages"])
    if damage == "flip_byte":
        data = bytearray(shard.read_bytes())
        data[-10] ^= 0xFF
        shard.write_bytes(bytes(data))
    elif damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:100])
    elif damage == "garbage_manifest":
        manifest.write_text("{not json")
    else:
        shard.unlink()

    with caplog.at_level(logging.WARNING, logger="kalm_eval.fbnl.pooled_cache"):
        second = _reranker(tiny, tmp_path)
        second.prepare(DOCS)
    stats = second.stats()
    assert stats["corrupt_shards"] == 1
    assert "corrupt" in caplog.text or "unreadable" in caplog.text
    assert stats["passages_encoded"] == damaged_passages  # only the damaged shard's passages
    assert stats["cache_hits"] == UNIQUE - damaged_passages
    for ratio in (1, 4, 32):
        assert _margins(second, ratio) == pytest.approx(expected[ratio], abs=1e-6)

    third = _reranker(tiny, tmp_path)  # rebuilt: everything from disk again
    third.prepare(DOCS)
    assert third.stats()["passages_encoded"] == 0 and third.stats()["corrupt_shards"] == 0


def test_key_changes_with_dtype_and_doc_max_len(tiny, tmp_path):
    base = PassageStore(tiny, cache_dir=tmp_path)
    base.add(DOCS, [4])
    short = build_tiny_model(seed=0)
    short.spec.doc_max_len = 8
    bf16 = build_tiny_model(seed=0, dtype="bfloat16")
    for other in (short, bf16):
        store = PassageStore(other, cache_dir=tmp_path)
        assert store.cache.key_id != base.cache.key_id
        store.add(DOCS, [4])
        assert store.stats.cache_hits == 0 and store.stats.passages_encoded == UNIQUE
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 3
    # the decoder side does not matter: same encoder weights + settings -> same key
    same = build_tiny_model(seed=0)
    same.spec.query_max_len = 16
    assert PassageStore(same, cache_dir=tmp_path).cache.key_id == base.cache.key_id


def test_new_ratio_later_encodes_only_what_is_missing(tiny, tmp_path):
    first = _reranker(tiny, tmp_path, ratios=[4])
    first.prepare(DOCS)
    second = _reranker(tiny, tmp_path, ratios=[4, 8])
    second.prepare(DOCS)
    assert second.stats()["passages_encoded"] == UNIQUE  # r=8 was never stored
    third = _reranker(tiny, tmp_path, ratios=[4, 8])
    third.prepare(DOCS)
    assert third.stats()["passages_encoded"] == 0 and third.stats()["cache_hits"] == UNIQUE


def test_unprepared_doc_or_ratio_is_a_clear_error(tiny):
    reranker = KalmReranker(tiny, RerankSettings(ratios=[4]))
    reranker.prepare({"a": DOCS["a"]})
    with pytest.raises(KeyError, match="never prepared"):
        reranker.score(QUERY, None, ["zzz"], 4)
    with pytest.raises(KeyError, match="ratio 8 was not prepared"):
        reranker.score(QUERY, None, ["a"], 8)


def test_interrupted_run_keeps_finished_shards(tiny, tmp_path, monkeypatch):
    first = _reranker(tiny, tmp_path, shard=2)
    original = first.passages._encode
    calls = []

    def dies_on_second_chunk(token_ids, ratios):
        if calls:
            raise KeyboardInterrupt
        calls.append(len(token_ids))
        return original(token_ids, ratios)

    monkeypatch.setattr(first.passages, "_encode", dies_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        first.prepare(DOCS)
    again = _reranker(tiny, tmp_path, shard=2)
    again.prepare(DOCS)
    assert again.stats()["cache_hits"] == 2 and again.stats()["passages_encoded"] == UNIQUE - 2
