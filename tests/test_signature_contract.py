"""The run key's contract, which skip-if-done rests on: a knob that affects a number changes the key, a knob that
only affects how the work is done (batch sizes, unit size, devices, workers, progress) leaves it unchanged and is
logged instead. And a value the user did not set follows the ones they did."""

from __future__ import annotations

import pytest

from kalm_eval.config import RunConfig
from kalm_eval.errors import ConfigError
from kalm_eval.storage import signature_of
from tests.helpers import compose_config

BASE = ["benchmark=local", "benchmark.path=/nonexistent/mini", "benchmark.label=mini", "reranker=kalm", "model=tiny",
        "compression=4"]


def _config(tmp_path, *overrides: str) -> RunConfig:
    return RunConfig.from_hydra(compose_config(*BASE, f"cache_dir={tmp_path / 'cache'}",
                                               f"results_dir={tmp_path / 'runs'}", *overrides))


def _key(tmp_path, *overrides: str) -> str:
    return signature_of(_config(tmp_path, *overrides).key())


@pytest.mark.parametrize("override", [
    "reranker.batch_size=3", "reranker.encode_batch_size=5", "reranker.chunk_passages=7", "reranker.latency_batches=0",
    "reranker.latency_warmup=0", "model.device=cpu", "workers=4", "worker=1", "progress=false", "force=true",
])
def test_logged_only_knobs_leave_the_key_unchanged(tmp_path, override):
    base = _key(tmp_path, "workers=2") if override == "worker=1" else _key(tmp_path)
    changed = _key(tmp_path, override, "workers=2") if override == "worker=1" else _key(tmp_path, override)
    assert changed == base


@pytest.mark.parametrize("override", [
    "compression=8", "reranker.depth=50", "retriever.depth=50", "model.dtype=bfloat16", "model.doc_max_len=512",
    "model.query_max_len=64", "reranker.instruction=other", "reranker.tail=drop", "benchmark.joiner=' | '",
    "model.attn_implementation=eager", "retriever.k1=1.2", "retriever.stemmer=porter",
])
def test_knobs_that_affect_a_number_change_the_key(tmp_path, override):
    assert _key(tmp_path, override) != _key(tmp_path)


def test_logged_knobs_are_the_ones_left_out_of_the_key(tmp_path):
    cfg = _config(tmp_path)
    logged = cfg.logged_knobs()
    assert set(logged["reranker"]) == {"batch_size", "encode_batch_size", "chunk_passages", "latency_batches",
                                       "latency_warmup"}
    assert not set(logged["reranker"]) & set(cfg.key()["reranker"])
    assert "device" in logged["model"] and "device" not in cfg.key()["model"]


CASCADE = "reranker.cascade=[{depth:20,compression:32},{depth:5,compression:2}]"


def test_an_unset_rerank_depth_follows_the_cascade(tmp_path):
    cfg = _config(tmp_path, CASCADE)
    assert cfg.reranker.depth == 20 and [s.depth for s in cfg.reranker.cascade] == [20, 5]


def test_an_explicit_rerank_depth_that_contradicts_the_cascade_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"reranker.cascade\[0\].depth=20 must equal reranker.depth=30"):
        _config(tmp_path, CASCADE, "reranker.depth=30")


def test_an_unset_rerank_depth_follows_the_first_stage(tmp_path):
    assert _config(tmp_path, "retriever.depth=40").reranker.depth == 40
