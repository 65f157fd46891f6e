"""Model specs, loading/saving, determinism, answer-token resolution, vision-tower handling."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from kalm_eval.errors import ConfigError
from kalm_eval.knobs import from_mapping
from kalm_eval.fbnl.model import LoadedModel, answer_token_id, finish_model, load_model
from kalm_eval.fbnl.spec import ModelSpec
from kalm_eval.fbnl.synthetic import TINY_TEXT_CONFIG, build_model, build_tiny_model, random_t5gemma2, t5gemma2_config
from kalm_eval.fbnl.tiny_tokenizer import build_tiny_tokenizer
from kalm_eval.rerank.kalm import KalmReranker
from kalm_eval.testing.nano import pinned_checkpoint
from tests.fbnl.fbnl_testlib import kalm_scores

DOCS = {"d1": "The capital of China is Beijing.", "d2": "Gravity attracts bodies toward one another."}
QUERY = "What is the capital of China?"


def margins(loaded: LoadedModel, ratio: int = 1) -> list[float]:
    return [s.margin for s in kalm_scores(loaded, DOCS, [(QUERY, None, list(DOCS))], ratio)[1][0]]


@pytest.mark.parametrize("name", ["float16", "fp16", "half"])
def test_float16_is_refused(name):
    with pytest.raises(ConfigError, match="Use bfloat16 or float32 instead of float16"):
        ModelSpec(name="tiny", dtype=name)


def test_spec_defaults_and_pinned_presets():
    hf_id, revision = pinned_checkpoint("small")  # pins live in conf/model/*.yaml only
    assert hf_id == "KaLM-Embedding/KaLM-Reranker-V1-Small" and len(revision) == 40
    spec = ModelSpec(name="small", hf_id=hf_id, revision=revision)
    assert spec.doc_max_len == 1024 and spec.query_max_len == 512 and spec.attn_implementation == "auto"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert spec.resolved_device().type == expected
    assert spec.resolved_attn_implementation() == {"cpu": "grouped", "cuda": "sdpa"}[expected]
    assert ModelSpec(name="tiny", device="cpu", attn_implementation="sdpa").resolved_attn_implementation() == "sdpa"
    with pytest.raises(ConfigError, match="attn_implementation"):
        from_mapping(ModelSpec, {"name": "tiny", "attn_implementation": "flash"}, prefix="model")
    assert ModelSpec(name="tiny", device="cpu").resolved_dtype() == "float32"  # reference: fp32 on CPU
    assert ModelSpec(path="/some/dir").synthetic is False  # a local path needs no hub id
    with pytest.raises(ConfigError, match="model.dtype='int8'"):
        ModelSpec(name="tiny", dtype="int8")
    with pytest.raises(ConfigError, match="needs a pinned revision"):
        ModelSpec(name="mine", hf_id="org/model")
    with pytest.raises(ConfigError, match="names no checkpoint"):
        ModelSpec(name="nano")


def _char_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {c: i for i, c in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", *"abcdefghijklmnopqrstuvwxyz"])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>",
                                   bos_token="<bos>", unk_token="<unk>")


def test_multi_token_answer_word_is_a_clear_error(tmp_path):
    tokenizer = _char_tokenizer()
    with pytest.raises(ValueError, match=r"'yes' must encode to exactly one token, got token ids \[28, 8, 22\]"):
        answer_token_id(tokenizer, "yes")
    # the same check guards load_model on a local checkpoint
    tiny = build_tiny_model(seed=0)
    tiny.model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'yes' must encode to exactly one token"):
        load_model(ModelSpec(path=tmp_path, dtype="float32", device="cpu"))


def test_answer_ids_come_from_the_tokenizer(tiny):
    tokenizer = build_tiny_tokenizer()
    assert tiny.yes_id == tokenizer.convert_tokens_to_ids("yes") == 6
    assert tiny.no_id == tokenizer.convert_tokens_to_ids("no") == 7


def test_tiny_model_is_deterministic(tiny):
    again = build_tiny_model(seed=0)
    first, second = tiny.model.state_dict(), again.model.state_dict()
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert margins(tiny) == margins(again)
    assert again.identity == tiny.identity
    other = build_tiny_model(seed=1)
    assert margins(other) != margins(tiny)
    assert other.identity["encoder_fingerprint"] != tiny.identity["encoder_fingerprint"]


def test_save_and_reload_local_checkpoint(tiny, tmp_path):
    tiny.save_pretrained(tmp_path)
    reloaded = load_model(ModelSpec(path=tmp_path, dtype="float32", device="cpu"))
    assert (reloaded.yes_id, reloaded.no_id, reloaded.d_model) == (tiny.yes_id, tiny.no_id, 64)
    assert reloaded.identity["weights_fingerprint"].startswith("sha256:")
    assert reloaded.identity["encoder_fingerprint"] == tiny.identity["encoder_fingerprint"]
    assert reloaded.identity["tokenizer_fingerprint"] == tiny.identity["tokenizer_fingerprint"]
    assert reloaded.tokenizer.padding_side == "right"
    assert str(tmp_path) not in repr(reloaded.identity)  # no machine-specific paths in run signatures
    assert margins(reloaded, 4) == pytest.approx(margins(tiny, 4), abs=1e-6)
    # bf16 load of the same directory: a different dtype, same answer ids
    as_bf16 = load_model(ModelSpec(path=tmp_path, dtype="bfloat16", device="cpu"))
    assert as_bf16.model.dtype == torch.bfloat16 and as_bf16.identity["dtype"] == "bfloat16"


def test_vision_tower_is_not_loaded(tmp_path):
    """A checkpoint with a bigger vision tower loads with the tiny one; text weights and scores unchanged."""
    config = t5gemma2_config(TINY_TEXT_CONFIG)
    config.encoder.vision_config.hidden_size = 48
    config.encoder.vision_config.num_hidden_layers = 3
    source = random_t5gemma2(config, seed=5, std=0.1)
    source_loaded = finish_model(source, build_tiny_tokenizer(), ModelSpec(name="tiny", dtype="float32", device="cpu"),
                                 checkpoint="x", revision=None, weights_fingerprint="x")
    source_loaded.save_pretrained(tmp_path)
    loaded = load_model(ModelSpec(path=tmp_path, dtype="float32", device="cpu"))
    vision = loaded.model.get_encoder().vision_tower
    assert vision.config.hidden_size == 32 and vision.config.num_hidden_layers == 1
    assert sum(p.numel() for p in vision.parameters()) < 50_000
    assert margins(loaded) == pytest.approx(margins(source_loaded), abs=1e-6)


def test_missing_text_weights_are_an_error(tiny, tmp_path):
    tiny.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["model.decoder.layers.0.mlp.up_proj.weight"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="text weights missing or mismatched"):
        load_model(ModelSpec(path=tmp_path, dtype="float32", device="cpu"))


def test_build_model_builds_named_synthetic_models():
    loaded = build_model(ModelSpec(name="tiny", seed=3, dtype="float32", device="cpu"))
    assert loaded.identity["weights_fingerprint"].startswith("random:tiny:seed=3")
    with pytest.raises(ValueError, match="synthetic"):
        load_model(ModelSpec(name="tiny"))


def test_reranker_identity_has_everything_that_affects_scores(tiny):
    identity = KalmReranker(tiny, compression=[4]).identity()
    for key in ("doc_max_len", "query_max_len", "prompt_template_sha256", "yes_id", "no_id", "pooling_rule"):
        assert key in identity.inputs
    for key in ("checkpoint", "revision", "dtype", "weights_fingerprint", "encoder_fingerprint"):
        assert key in identity.checkpoint


@pytest.mark.slow
def test_hub_checkpoint_loads_offline_from_the_hf_cache(tmp_path):
    """ModelSpec(name="nano") resolves the pinned revision from a local HF cache with HF_HUB_OFFLINE=1.

    A tiny model stands in for the real weights; runs in a subprocess because the hub cache location is
    fixed when huggingface_hub is imported."""
    import os
    import subprocess
    import sys

    hf_id, revision = pinned_checkpoint("nano")
    snapshot = tmp_path / f"models--{hf_id.replace('/', '--')}" / "snapshots" / revision
    build_tiny_model(seed=0).save_pretrained(snapshot)
    code = (
        "from kalm_eval.fbnl.model import load_model\n"
        "from kalm_eval.fbnl.spec import ModelSpec\n"
        "from kalm_eval.testing.nano import hf_cache_snapshot\n"
        "assert hf_cache_snapshot('nano') is not None\n"
        f"m = load_model(ModelSpec(name='nano', hf_id='{hf_id}', revision='{revision}', device='cpu'))\n"
        f"assert m.identity['weights_fingerprint'] == 'hf:{hf_id}@{revision}', m.identity\n"
        "assert (m.yes_id, m.no_id) == (6, 7)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path)}
    repo_root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=300, cwd=repo_root)


def test_registry_builds_the_kalm_reranker_from_model_config(tmp_path):
    """The pipeline's entry point, fed the dict of conf/model/tiny.yaml."""
    from kalm_eval.knobs import from_mapping
    from kalm_eval.rerank import family
    from kalm_eval.rerank.settings import CacheSettings, RerankContext, RerankSettings

    config = {"name": "tiny", "family": "kalm", "hf_id": None, "revision": None, "path": None, "seed": 0,
              "dtype": "float32", "device": "cpu", "doc_max_len": 64, "query_max_len": 512, "attn_implementation": "sdpa"}
    kalm = family("kalm")
    spec = kalm.parse_model(config)
    settings = from_mapping(RerankSettings, {"name": "kalm", "compression": [1, 4], "batch_size": 8}, prefix="reranker")
    reranker = kalm.build(spec, settings, RerankContext(cache_dir=tmp_path, cache=CacheSettings()))
    _, [scores], result = kalm_scores(reranker.loaded, DOCS, [(QUERY, None, list(DOCS))], 4, reranker=reranker)
    assert result.counters["passages_encoded"] == 2 and set(result.scores) == {"r1", "r4"}
    assert len(scores) == 2 and reranker.identity().inputs["doc_max_len"] == 64
    with pytest.raises(ConfigError, match="model.dtpye: unknown setting"):
        kalm.parse_model({**config, "dtpye": "float32"})
