"""Random-weight T5Gemma 2 models that kalm-eval builds itself: the `tiny` model behind `model=tiny` (the whole
pipeline offline in seconds, with the word-level tokenizer of tiny_tokenizer.py), and the building blocks the
real-shape cost models in kalm_eval/testing reuse (NANO_TEXT_CONFIG: the exact 270m-270m text stack)."""

from __future__ import annotations

import json
from typing import Any

import torch
from transformers import T5Gemma2Config, T5Gemma2ForConditionalGeneration
from transformers.initialization import no_init_weights

from kalm_eval.storage import sha256_text

from .model import TINY_MM_TOKENS_PER_IMAGE, TINY_VISION_CONFIG, LoadedModel, finish_model
from .spec import ModelSpec
from .tiny_tokenizer import build_tiny_tokenizer

# RoPE of Gemma 3 270m: full-attention layers linear factor 8, theta 1e6; sliding layers default, theta 1e4.
GEMMA3_ROPE = {
    "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
    "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
}

def gemma3_layer_types(layers: int) -> list[str]:
    """Gemma 3's attention pattern: five sliding-window layers, then one global layer, repeated."""
    return ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)]


# Exact Nano (T5Gemma 2 270m-270m) text stack, reference §3.1; encoder text stack = decoder stack.
NANO_TEXT_CONFIG: dict[str, Any] = dict(
    vocab_size=262_144,
    hidden_size=640,
    intermediate_size=2048,
    num_hidden_layers=18,
    num_attention_heads=4,
    num_key_value_heads=1,
    head_dim=256,
    hidden_activation="gelu_pytorch_tanh",
    sliding_window=512,
    layer_types=gemma3_layer_types(18),
    max_position_embeddings=32_768,
    rope_parameters=GEMMA3_ROPE,
    query_pre_attn_scalar=256,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    final_logit_softcapping=None,
    attn_logit_softcapping=None,
    pad_token_id=0,
    eos_token_id=1,
    bos_token_id=2,
)

# Tiny stack for fast tests: a sliding window of 8 so short texts still cross window borders.
TINY_TEXT_CONFIG: dict[str, Any] = dict(
    NANO_TEXT_CONFIG,
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=32,
    sliding_window=8,
    layer_types=["sliding_attention", "full_attention"],
    max_position_embeddings=4096,
    query_pre_attn_scalar=32,
)


def t5gemma2_config(text_config: dict[str, Any], attn_implementation: str = "sdpa") -> T5Gemma2Config:
    """A T5Gemma 2 config with identical encoder/decoder text stacks and the tiny vision tower."""
    config = T5Gemma2Config(
        encoder=dict(
            text_config=dict(text_config),
            vision_config=dict(TINY_VISION_CONFIG),
            mm_tokens_per_image=TINY_MM_TOKENS_PER_IMAGE,
        ),
        decoder=dict(text_config),
        tie_word_embeddings=True,
    )
    config._attn_implementation = attn_implementation
    return config


def random_t5gemma2(config: T5Gemma2Config, seed: int, std: float) -> T5Gemma2ForConditionalGeneration:
    """Build with HF init switched off, then fill every (tied-once) parameter from one seeded generator.

    Why: HF's own init draws ~2x more numbers (before tying) and took ~17 s for the Nano shape; this is
    deterministic by construction (same seed -> bit-identical weights) and takes a few seconds. Norm weights
    get small random values (RMSNorm scales by 1 + w) so tests exercise them; the eoi embedding too (unused by
    text). Tensors above 16M values (only the 262k x 640 embedding) repeat a 4M-value random block: drawing
    168M normals alone took ~4 s, and a periodic embedding is as good as any for random-weight tests."""
    with no_init_weights():
        model = T5Gemma2ForConditionalGeneration(config)
    model.tie_weights()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():  # shared (tied) parameters are listed once
            _fill_normal(param, 0.1 if "norm" in name else std, generator)
    return model.eval().requires_grad_(False)


def _fill_normal(param: torch.Tensor, std: float, generator: torch.Generator, block: int = 1 << 22) -> None:
    if param.numel() <= 4 * block:
        param.normal_(0.0, std, generator=generator)
        return
    pool = torch.empty(block).normal_(0.0, std, generator=generator)
    flat = param.view(-1)
    for start in range(0, flat.numel(), block):
        chunk = flat[start : start + block]
        chunk.copy_(pool[: chunk.numel()])
        pool = pool.roll(7919)  # shift each repeat so rows do not line up exactly


def build_model(spec: ModelSpec) -> LoadedModel:
    """The synthetic model a spec names (today: `tiny`)."""
    if spec.name == "tiny":
        return build_tiny_model(spec=spec)
    raise ValueError(f"no synthetic model named {spec.name!r} (known: tiny)")


def build_tiny_model(seed: int = 0, dtype: str = "float32", spec: ModelSpec | None = None) -> LoadedModel:
    """Random tiny T5Gemma 2 (hidden 64, 2 layers, heads 2/1, head_dim 32) + the built word-level tokenizer.

    std 0.1 keeps yes/no margins of order 1 at this width, so exactness tests compare meaningful numbers."""
    spec = spec or ModelSpec(name="tiny", dtype=dtype, device="cpu", seed=seed)
    seed = spec.seed
    tokenizer = build_tiny_tokenizer()
    config = t5gemma2_config(TINY_TEXT_CONFIG, spec.resolved_attn_implementation())
    assert len(tokenizer) <= config.decoder.vocab_size
    model = random_t5gemma2(config, seed=seed, std=0.1).to(spec.torch_dtype())
    return finish_model(model, tokenizer, spec, checkpoint="random:tiny", revision=None,
                   weights_fingerprint=f"random:tiny:seed={seed}:config={config_hash(config)}")


def config_hash(config: T5Gemma2Config) -> str:
    data = config.to_dict()
    data.pop("transformers_version", None)
    return sha256_text(json.dumps(data, sort_keys=True, default=str))[:16]
