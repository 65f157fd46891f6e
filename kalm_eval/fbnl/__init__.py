"""fbnl: the KaLM-Reranker-V1 model side ("fast but not late" interaction: cached pooled passages + online decoder).

Modules, one idea each:
    model.py          ModelSpec / LoadedModel; load real checkpoints; build random tiny / Nano-shape models
    tiny_tokenizer.py deterministic word-level tokenizer for the tiny model
    gemma_tokenizer.py the real Gemma 3 tokenizer from an installed GGUF package (offline)
    prompts.py        exact encoder/decoder texts, query truncation, padding
    pooling.py        Matryoshka Embedding Pooling (MEP)
    pooled_cache.py   sharded, checksummed on-disk cache of pooled passage states
    passages.py       PassageStore: encode each passage once, pool at every ratio, use the cache
    batching.py       length-sorted batches with CUDA-OOM back-off
    scorer.py         decoder-only yes/no scoring from pooled states
    rerank.py         KalmReranker + build_reranker: the API the pipeline calls
    reference.py      slow reference-style scorer (full forward, full logits) for tests and benchmarks
"""

from .model import KNOWN_CHECKPOINTS, LoadedModel, ModelSpec, build_random_nano, build_tiny_model, load_model
from .pooling import SUPPORTED_RATIOS, mep_pool
from .prompts import DEFAULT_INSTRUCTION
from .rerank import KalmReranker, RerankSettings, ScoreRequest, build_reranker
from .scorer import PairScore

__all__ = [
    "DEFAULT_INSTRUCTION",
    "KNOWN_CHECKPOINTS",
    "KalmReranker",
    "LoadedModel",
    "ModelSpec",
    "PairScore",
    "RerankSettings",
    "SUPPORTED_RATIOS",
    "ScoreRequest",
    "build_random_nano",
    "build_reranker",
    "build_tiny_model",
    "load_model",
    "mep_pool",
]
