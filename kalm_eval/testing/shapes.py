"""Random-weight models in the real shapes the cost benchmark times: KaLM-Reranker-V1 Nano / Small / Large
(T5Gemma 2 270m-270m / 1b-1b / 4b-4b text stacks) and the baselines of `baselines.REAL_SHAPES`.

Shapes (reference §3.1): Nano is exact (NANO_TEXT_CONFIG in fbnl/synthetic.py); Small and Large are inferred from
Gemma-3-1B / 4B, whose parameter counts they reproduce (hidden, layers, heads, MLP). `text_stack_parameters`
recomputes the paper's "Non-Embedding" column from them (tests/fbnl checks 100,325,376 / 697,894,912 /
3,209,008,128).

Memory: a real-shape model is built directly in the target dtype with Hugging Face's init switched off, the stack
it is not timed with cut to one layer (`parts="decoder"`: the online path and the full-logits head;
`parts="encoder"`: the offline passage encoder), then filled from one seeded generator. Large in bf16 is then
~7.8 GB per part instead of ~14 GB (both stacks) or ~28 GB (fp32 first). Weights: N(0, std) like
`synthetic.random_t5gemma2` (tensors above 16M values repeat a shifted 4M-value random block: filling 4B values
one by one would take minutes; for cost this changes nothing).
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedTokenizerBase,
    T5Gemma2Config,
    T5Gemma2ForConditionalGeneration,
)
from transformers.initialization import no_init_weights

from kalm_eval.catalogue import preset
from kalm_eval.fbnl.model import LoadedModel, finish_model
from kalm_eval.fbnl.spec import ModelSpec, resolve_attn_implementation
from kalm_eval.fbnl.synthetic import NANO_TEXT_CONFIG, config_hash, gemma3_layer_types, t5gemma2_config
from kalm_eval.testing.baselines import real_shape_config

# T5Gemma 2 1b-1b text stack (inferred from Gemma-3-1B: 26 layers, 4/1 heads, head_dim 256, MLP 6912, window 512).
# Heads, head_dim and window are Nano's.
SMALL_TEXT_CONFIG: dict[str, Any] = dict(
    NANO_TEXT_CONFIG,
    hidden_size=preset("small").d_model,
    intermediate_size=6912,
    num_hidden_layers=26,
    layer_types=gemma3_layer_types(26),
)

# T5Gemma 2 4b-4b text stack (inferred from Gemma-3-4B: 34 layers, 8/4 heads, head_dim 256, MLP 10240, window 1024).
LARGE_TEXT_CONFIG: dict[str, Any] = dict(
    NANO_TEXT_CONFIG,
    hidden_size=preset("large").d_model,
    intermediate_size=10240,
    num_hidden_layers=34,
    num_attention_heads=8,
    num_key_value_heads=4,
    sliding_window=1024,
    layer_types=gemma3_layer_types(34),
    max_position_embeddings=131_072,
)


@dataclass(frozen=True)
class KalmShape:
    name: str  # nano | small | large (the conf/model preset names)
    paper_row: str  # the paper's row name
    text_config: dict[str, Any]


KALM_SHAPES: dict[str, KalmShape] = {
    "nano": KalmShape("nano", "KaLM-Reranker-V1-Nano", NANO_TEXT_CONFIG),
    "small": KalmShape("small", "KaLM-Reranker-V1-Small", SMALL_TEXT_CONFIG),
    "large": KalmShape("large", "KaLM-Reranker-V1-Large", LARGE_TEXT_CONFIG),
}

# Baseline shape name -> (paper row, family of its input layout)
BASELINE_ROWS: dict[str, tuple[str, str]] = {
    "qwen3-reranker-0.6b": ("Qwen3-Reranker-0.6B", "qwen3"),
    "qwen3-reranker-4b": ("Qwen3-Reranker-4B", "qwen3"),
    "qwen3-reranker-8b": ("Qwen3-Reranker-8B", "qwen3"),
    "bge-reranker-v2-m3": ("bge-reranker-v2-m3", "cross_encoder"),
    "bge-reranker-v2-gemma": ("bge-reranker-v2-gemma", "bge_gemma"),
}


def text_stack_parameters(text_config: dict[str, Any]) -> int:
    """Parameters of one T5Gemma 2 text stack without its embedding (the paper's "Non-Embedding" column)."""
    d, inter, layers = text_config["hidden_size"], text_config["intermediate_size"], text_config["num_hidden_layers"]
    heads, kv, hd = text_config["num_attention_heads"], text_config["num_key_value_heads"], text_config["head_dim"]
    attention = d * heads * hd * 2 + d * kv * hd * 2 + 2 * hd  # q, o, k, v + q_norm, k_norm
    mlp = 3 * d * inter
    norms = 4 * d  # input / post-attention / pre-MLP / post-MLP RMSNorms
    return layers * (attention + mlp + norms)  # the paper's column leaves out the final norm


def fill_random_(model: torch.nn.Module, seed: int, std: float, block: int = 1 << 22) -> None:
    """Fill every parameter (tied ones once) in place, in the model's own dtype: N(0, std); norms N(0, 0.1)."""
    generator = torch.Generator().manual_seed(seed)
    pool = torch.empty(block).normal_(0.0, std, generator=generator)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.numel() <= block:
                values = torch.empty(param.shape).normal_(0.0, 0.1 if "norm" in name else std, generator=generator)
                param.copy_(values)
                continue
            pool = pool.to(param.device)  # big tensors: filled where they live (a GPU fills at memory speed)
            flat = param.view(-1)
            for start in range(0, flat.numel(), block):
                chunk = flat[start : start + block]
                chunk.copy_(pool[: chunk.numel()])
                pool = pool.roll(7919)


@contextmanager
def _built_in(dtype: torch.dtype, device: str = "cpu"):
    """Construct modules directly in `dtype` on `device` with Hugging Face's init switched off (filled right after)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with no_init_weights(), torch.device(device):
            yield
    finally:
        torch.set_default_dtype(before)


def kalm_config(shape: str, parts: str = "full", attn_implementation: str = "sdpa") -> T5Gemma2Config:
    """T5Gemma 2 config of a KaLM shape; parts="decoder" keeps one encoder layer only, "encoder" one decoder layer."""
    if parts not in ("full", "decoder", "encoder"):
        raise ValueError(f"parts must be full, decoder or encoder, got {parts!r}")
    text = dict(KALM_SHAPES[shape].text_config)
    stub = dict(text, num_hidden_layers=1, layer_types=["full_attention"])
    config = t5gemma2_config(text, attn_implementation)
    if parts != "full":
        other = t5gemma2_config(stub, attn_implementation)
        if parts == "decoder":
            config.encoder.text_config = other.encoder.text_config
        else:
            config.decoder = other.decoder
    return config


def build_random_kalm(shape: str, *, dtype: str = "bfloat16", parts: str = "full", seed: int = 0,
                      tokenizer: PreTrainedTokenizerBase, device: str = "cpu", attn_implementation: str = "auto",
                      std: float = 0.02) -> LoadedModel:
    """A KaLM-shaped T5Gemma 2 with random weights, built directly in `dtype`.

    parts: "full"; "decoder" (the online path and the full-logits head: the encoder keeps one layer); "encoder"
    (the offline passage encoder: the decoder keeps one layer). Large in bf16 is then ~7.8 GB instead of ~14 GB."""
    spec = ModelSpec(name=f"random-{shape}", hf_id=f"random:{shape}", revision="none", dtype=dtype, device=device,
                     seed=seed, attn_implementation=attn_implementation)
    config = kalm_config(shape, parts, spec.resolved_attn_implementation())
    torch_dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    with _built_in(torch_dtype, device):
        model = T5Gemma2ForConditionalGeneration(config)
    model.tie_weights()
    fill_random_(model, seed, std)
    model.eval().requires_grad_(False)
    return finish_model(model, tokenizer, spec, checkpoint=f"random:{shape}:{parts}", revision=None,
                        weights_fingerprint=f"random:{shape}:{parts}:seed={seed}:config={config_hash(config)}")


def build_random_baseline(name: str, *, dtype: str = "bfloat16", seed: int = 0, device: str = "cpu",
                          attn_implementation: str = "auto", std: float = 0.02) -> torch.nn.Module:
    """A baseline model in its real shape (baselines.REAL_SHAPES) with random weights, on `device`, eval mode.
    attn_implementation "auto": the KaLM models' per-device choice (fbnl/spec.py AUTO_ATTENTION), so a cost
    comparison runs every model on the same attention kernel."""
    config: PretrainedConfig = real_shape_config(name)
    config._attn_implementation = resolve_attn_implementation(attn_implementation, device)
    torch_dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    auto = AutoModelForSequenceClassification if BASELINE_ROWS[name][1] == "cross_encoder" else AutoModelForCausalLM
    with _built_in(torch_dtype, device):
        model = auto.from_config(config, dtype=torch_dtype)
    model.tie_weights()
    fill_random_(model, seed, std)
    return model.eval().requires_grad_(False).to(device)


def release(*objects: Any) -> None:
    """Drop references and give memory back (between real-shape models: build one at a time)."""
    del objects
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
