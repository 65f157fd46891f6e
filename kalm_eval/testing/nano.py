"""Random-weight models in the exact Nano (T5Gemma 2 270m-270m) shape, for exactness tests and cost benchmarks,
and the pinned real checkpoints when a local Hugging Face cache holds them."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import yaml
from transformers import PreTrainedTokenizerBase

from kalm_eval.fbnl.model import LoadedModel, finish_model
from kalm_eval.fbnl.spec import ModelSpec
from kalm_eval.fbnl.synthetic import NANO_TEXT_CONFIG, config_hash, random_t5gemma2, t5gemma2_config
from kalm_eval.fbnl.tiny_tokenizer import build_tiny_tokenizer
from kalm_eval.testing.gemma_tokenizer import gemma3_tokenizer_or_none


def build_random_nano(
    dtype: str = "bfloat16",
    seed: int = 0,
    tokenizer: PreTrainedTokenizerBase | None = None,
    spec: ModelSpec | None = None,
) -> LoadedModel:
    """Random weights in the exact Nano shape (hidden 640, 18 layers, 4/1 heads, head_dim 256, vocab 262144).

    Tokenizer: the given one, else the real Gemma 3 tokenizer when its package is installed (realistic token
    counts), else the tiny word-level tokenizer (ids are just ids to a random model)."""
    spec = spec or ModelSpec(name="random-nano", hf_id="random:nano", revision="none", dtype=dtype, device="cpu", seed=seed)
    if tokenizer is None:
        tokenizer = gemma3_tokenizer_or_none() or build_tiny_tokenizer()
    config = t5gemma2_config(NANO_TEXT_CONFIG, spec.resolved_attn_implementation())
    model = random_t5gemma2(config, seed=seed, std=0.02).to(spec.torch_dtype())
    return finish_model(model, tokenizer, spec, checkpoint="random:nano", revision=None,
                   weights_fingerprint=f"random:nano:seed={seed}:config={config_hash(config)}")


def pinned_checkpoint(preset: str) -> tuple[str, str]:
    """(hub id, revision) of a model preset, read from the shipped conf/model/<preset>.yaml (the only place pins live)."""
    text = (importlib.resources.files("kalm_eval.conf") / "model" / f"{preset}.yaml").read_text(encoding="utf-8")
    config = yaml.safe_load(text)
    return config["hf_id"], config["revision"]


def hf_cache_snapshot(name: str) -> Path | None:
    """The local HF-cache directory of a preset's pinned checkpoint, or None (never downloads)."""
    hf_id, revision = pinned_checkpoint(name)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(hf_id, revision=revision, local_files_only=True))
    except Exception:  # not cached (or hub library unavailable): the caller decides what to do
        return None
