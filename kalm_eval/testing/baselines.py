"""Random tiny checkpoints of the three baseline families, and the real shapes of the models they stand for.

The hub is unreachable in tests, so every baseline is exercised on a random checkpoint built here and saved to a
directory, with a tokenizer built by the `tokenizers` library (no download, identical on every machine):

* `build_tiny_qwen3(dir)`          Qwen3ForCausalLM + byte-level BPE with <|im_start|>, <|im_end|> (eos),
                                   <|endoftext|> (pad), <think>, </think>, and "yes"/"no" as single tokens;
* `build_tiny_cross_encoder(dir)`  XLMRobertaForSequenceClassification (num_labels=1) + Unigram tokenizer with the
                                   XLM-R pair layout "<s> A </s></s> B </s>", saved as a sentence-transformers
                                   CrossEncoder folder;
* `build_tiny_gemma(dir)`          GemmaForCausalLM + byte-level BPE with <pad>=0, <eos>=1, <bos>=2 (Gemma's ids),
                                   "Yes" as one token, left padding (GemmaTokenizer's default).

Weights are drawn from one seeded generator with a larger spread than HF's init (std 0.02 would leave every
yes/no margin near 0 and every P(yes) near 0.5, which makes exactness tests weak).

`real_shape_config(name)` returns the real layer / hidden / head dimensions (a transformers config) of
Qwen3-Reranker-0.6B/4B/8B, bge-reranker-v2-m3 and bge-reranker-v2-gemma, for cost benchmarks that build random
real-shape models (e.g. on the meta device, or with `from_config` on a GPU). Sources are listed per entry in
`REAL_SHAPES`; each shape's parameter count reproduces a published total exactly (tests/rerank checks it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    GemmaConfig,
    GemmaForCausalLM,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
    XLMRobertaTokenizerFast,
)

# Words that become single tokens (merges), so that test texts are not one token per character. Order matters:
# the answer words come first so that their merges win (BPE applies merges by rank).
_ANSWER_WORDS = ["yes", "no", "Yes", "No"]
_COMMON_WORDS = [
    "the", "of", "and", "to", "in", "is", "a", "what", "query", "passage", "document", "capital", "water",
    "Query", "Document", "Instruct", "Judge", "Given", "retrieve", "relevant", "passages", "answer", "search",
]


def _byte_level_bpe(specials: list[str], added: list[str], words: list[str]) -> Tokenizer:
    """A byte-level BPE (GPT-2 / Qwen style: any text encodes, no unknowns) with hand-written merges.

    `specials` get the first ids in the given order; each word gets left-to-right merges ("y"+"e", "ye"+"s"),
    bare and with the leading-space marker "Ġ"."""
    vocab: dict[str, int] = {}
    for token in specials:
        vocab[token] = len(vocab)
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(char, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in words:
        for form in (word, "Ġ" + word):
            current = form[0]
            for char in form[1:]:
                if (current, char) not in merges:
                    merges.append((current, char))
                current += char
                vocab.setdefault(current, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    if added:
        backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in added])
    return backend


def _fill_random(model: torch.nn.Module, seed: int, std: float, norm: str) -> None:
    """Overwrite every parameter from one seeded generator. `norm`: "one" (w * x norms) or "zero" ((1 + w) * x)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():  # tied parameters are listed once
            values = torch.empty(param.shape).normal_(0.0, std, generator=generator)
            if "norm" in name or "LayerNorm" in name:
                values = values * 0.5 + (1.0 if norm == "one" else 0.0)
            elif name.endswith("bias"):
                values = values * 0.5
            param.copy_(values)


# ---------------------------------------------------------------------------------------------------------------
# Qwen3 (causal LM, yes/no)
# ---------------------------------------------------------------------------------------------------------------

QWEN3_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN3_ADDED = ["<think>", "</think>"]  # added but not special, as in the real Qwen3 tokenizer


def build_tiny_qwen3_tokenizer() -> PreTrainedTokenizerFast:
    backend = _byte_level_bpe(QWEN3_SPECIALS, QWEN3_ADDED, _ANSWER_WORDS + _COMMON_WORDS)
    # As the real checkpoint: eos <|im_end|>, pad <|endoftext|> (the authors then set pad = eos), no BOS.
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   padding_side="left")


def build_tiny_qwen3(directory: str | Path, seed: int = 0, std: float = 0.25) -> Path:
    """Random Qwen3ForCausalLM (2 layers, hidden 32, 4/2 heads, head_dim 8) + tokenizer, saved to `directory`."""
    directory = Path(directory)
    tokenizer = build_tiny_qwen3_tokenizer()
    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=4096,
        tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config).eval()
    _fill_random(model, seed, std, norm="one")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# ---------------------------------------------------------------------------------------------------------------
# XLM-RoBERTa sequence classification, as a sentence-transformers CrossEncoder
# ---------------------------------------------------------------------------------------------------------------

_XLMR_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3 as in XLM-R
_XLMR_CHARS = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"()-/%")


def build_tiny_xlmr_tokenizer() -> XLMRobertaTokenizerFast:
    words = sorted(set(w.lower() for w in _ANSWER_WORDS + _COMMON_WORDS))
    pieces = [("▁", -2.0)] + [("▁" + w, -1.0) for w in words] + [(c, -3.0) for c in _XLMR_CHARS]
    pieces += [("▁" + c, -2.5) for c in _XLMR_CHARS]
    vocab = [(t, 0.0) for t in _XLMR_SPECIALS] + pieces + [("<mask>", 0.0)]
    backend = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in _XLMR_SPECIALS + ["<mask>"]])
    return XLMRobertaTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                   cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")


def build_tiny_cross_encoder(directory: str | Path, seed: int = 0, std: float = 0.5, max_length: int = 512) -> Path:
    """Random XLM-R cross-encoder (2 layers, hidden 32, num_labels=1) saved as a CrossEncoder folder."""
    from sentence_transformers import CrossEncoder

    directory = Path(directory)
    tokenizer = build_tiny_xlmr_tokenizer()
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=max_length + 2, type_vocab_size=1, num_labels=1,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=0, eos_token_id=2,
    )
    torch.manual_seed(seed)
    model = XLMRobertaForSequenceClassification(config).eval()
    _fill_random(model, seed, std, norm="one")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    cross_encoder = CrossEncoder(str(directory), max_length=max_length, device="cpu")
    cross_encoder.save(str(directory))  # adds the sentence-transformers files (modules.json, ...)
    return directory


# ---------------------------------------------------------------------------------------------------------------
# Gemma (causal LM, "Yes" logit)
# ---------------------------------------------------------------------------------------------------------------

GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]  # ids 0..3 as in Gemma


def build_tiny_gemma_tokenizer(padding_side: str = "left") -> PreTrainedTokenizerFast:
    backend = _byte_level_bpe(GEMMA_SPECIALS, [], _ANSWER_WORDS + _COMMON_WORDS)
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>",
                                   bos_token="<bos>", unk_token="<unk>", padding_side=padding_side)


def build_tiny_gemma(directory: str | Path, seed: int = 0, std: float = 0.25, padding_side: str = "left") -> Path:
    """Random GemmaForCausalLM (2 layers, hidden 32, 4/1 heads, head_dim 8) + tokenizer, saved to `directory`."""
    directory = Path(directory)
    tokenizer = build_tiny_gemma_tokenizer(padding_side)
    config = GemmaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, head_dim=8, max_position_embeddings=4096,
        pad_token_id=0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = GemmaForCausalLM(config).eval()
    _fill_random(model, seed, std, norm="zero")  # Gemma's RMSNorm scales by (1 + weight)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# ---------------------------------------------------------------------------------------------------------------
# Real shapes
# ---------------------------------------------------------------------------------------------------------------

_QWEN3_COMMON = dict(vocab_size=151_669, head_dim=128, max_position_embeddings=40_960, rope_theta=1_000_000.0,
                     rms_norm_eps=1e-6, hidden_act="silu", attention_bias=False)

# name -> (config class, config kwargs, published parameter count it reproduces, source)
REAL_SHAPES: dict[str, tuple[type[PretrainedConfig], dict[str, Any], int, str]] = {
    "qwen3-reranker-0.6b": (
        Qwen3Config,
        dict(_QWEN3_COMMON, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
             num_attention_heads=16, num_key_value_heads=8, tie_word_embeddings=True),
        595_776_512,
        "Qwen/Qwen3-0.6B config.json (hidden 1024, 28 layers, 16/8 heads, head_dim 128, MLP 3072, tied); vocab "
        "151669 = mteb 2.26 ModelMeta n_embedding_parameters 155309056 / 1024; total = mteb n_parameters "
        "(mteb/models/model_implementations/qwen3_reranker.py, revision 6e9e6983)",
    ),
    "qwen3-reranker-4b": (
        Qwen3Config,
        dict(_QWEN3_COMMON, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
             num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True),
        4_021_784_576,
        "Qwen/Qwen3-Reranker-4B config (hidden 2560, 36 layers, 32/8 heads, vocab 151669: the model's OpenVINO "
        "redistribution card kread/Qwen3-Reranker-4B-int8-ov); MLP 9728 and tied embeddings as Qwen3-4B; total = "
        "mteb n_parameters 4021784576 (qwen3_reranker.py, revision f16fc5d5)",
    ),
    "qwen3-reranker-8b": (
        Qwen3Config,
        dict(_QWEN3_COMMON, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
             num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False),
        8_188_548_096,
        "Qwen3-8B dims (hidden 4096, 36 layers, 32/8 heads, MLP 12288, untied); total = mteb n_parameters "
        "8188548096 (qwen3_reranker.py, revision 5fa94080)",
    ),
    "bge-reranker-v2-m3": (
        XLMRobertaConfig,
        dict(vocab_size=250_002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
             intermediate_size=4096, max_position_embeddings=8194, type_vocab_size=1, num_labels=1,
             layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2),
        567_755_777,
        "XLM-RoBERTa-large (BGE-M3) dims with 8194 positions; vocab 250002 = mteb n_embedding_parameters "
        "256002048 / 1024 (rerankers_custom.py, revision 953dc6f6); the fp32 size of this shape, 2165.8 MiB, "
        "is mteb's memory_usage_mb 2166",
    ),
    "bge-reranker-v2-gemma": (
        GemmaConfig,
        dict(vocab_size=256_000, hidden_size=2048, intermediate_size=16_384, num_hidden_layers=18,
             num_attention_heads=8, num_key_value_heads=1, head_dim=256, max_position_embeddings=8192,
             rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh", rope_theta=10_000.0,
             pad_token_id=0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=True),
        2_506_172_416,
        "google/gemma-2b config (the base model per FlagEmbedding research/llm_reranker/README.md): hidden 2048, "
        "18 layers, 8/1 heads, head_dim 256, MLP 16384, vocab 256000; 2506172416 parameters (the paper's 2.5B)",
    ),
}


def real_shape_config(name: str) -> PretrainedConfig:
    """The transformers config of a real baseline shape (random weights only: no tokenizer, no checkpoint)."""
    try:
        config_class, kwargs, _count, _source = REAL_SHAPES[name]
    except KeyError:
        raise KeyError(f"unknown real shape {name!r}; known: {', '.join(REAL_SHAPES)}") from None
    return config_class(**kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Command line: python -m kalm_eval.testing.baselines <family> <directory> [--seed N]
# ---------------------------------------------------------------------------------------------------------------

BUILDERS = {"qwen3": build_tiny_qwen3, "cross_encoder": build_tiny_cross_encoder, "bge_gemma": build_tiny_gemma}


def main(argv: list[str] | None = None) -> int:
    """Save a random tiny checkpoint of one baseline family, for offline end-to-end runs:
    `kalm-eval reranker=<family> model.path=<directory> model.hf_id=null model.dtype=float32`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m kalm_eval.testing.baselines", description=main.__doc__)
    parser.add_argument("family", choices=sorted(BUILDERS))
    parser.add_argument("directory", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(BUILDERS[args.family](args.directory, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
