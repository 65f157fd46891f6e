"""KalmReranker: the API the evaluation pipeline calls.

    reranker = KalmReranker(load_model(ModelSpec(name="nano")), RerankSettings(ratios=[1, 4, 32], cache_dir=...))
    reranker.prepare({doc_id: passage_text, ...})          # offline: encode each unique passage once, pool at
                                                           # every ratio, fill/use the disk cache
    scores = reranker.score(query, instruction, doc_ids, ratio=4)           # online: decoder only
    many = reranker.score_many([ScoreRequest(q, inst, ids), ...], ratio=4)  # pairs batched across queries
    reranker.identity()  # → run signatures;  reranker.stats()  # → cost report

The pipeline builds it from a `conf/model/*.yaml` dict with `build_reranker(cfg.model, ratios=..., cache_dir=...)`.

Offline (encode) and online (score) time are measured separately, as the paper's cost split requires.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .model import LoadedModel, ModelSpec, load_model
from .passages import PassageStore
from .pooling import POOLING_RULE, check_ratio
from .prompts import DEFAULT_INSTRUCTION, ENCODER_TEMPLATE, PAD_TO_MULTIPLE_OF, prompt_template_sha256, prompt_token_ids
from .scorer import DecoderScorer, PairScore


@dataclass
class RerankSettings:
    ratios: list[int]  # pooling ratios to prepare (1 = no pooling); the paper's default is 4
    depth: int = 100  # candidates per query the runner hands over (kept here for the run signature)
    batch_size: int = 32  # decoder pairs per batch (shrinks x3/4 on CUDA OOM)
    encode_batch_size: int = 16  # passages per encoder batch
    cache_dir: Path | None = None  # pooled-state cache; None = in memory only


@dataclass(frozen=True)
class ScoreRequest:
    query: str
    instruction: str | None  # None → DEFAULT_INSTRUCTION
    doc_ids: Sequence[str]


class KalmReranker:
    def __init__(self, loaded: LoadedModel, settings: RerankSettings):
        if not settings.ratios:
            raise ValueError("settings.ratios must name at least one pooling ratio")
        for ratio in settings.ratios:
            check_ratio(ratio)
        self.loaded = loaded
        self.settings = settings
        self.passages = PassageStore(
            loaded,
            cache_dir=Path(settings.cache_dir) if settings.cache_dir is not None else None,
            encode_batch_size=settings.encode_batch_size,
        )
        self.scorer = DecoderScorer(loaded, batch_size=settings.batch_size)
        self._prompt_cache: dict[tuple[str, str], list[int]] = {}

    def identity(self) -> dict[str, Any]:
        """Everything about the model and inputs that affects scores (the pooling ratio is per call: add it)."""
        spec = self.loaded.spec
        return {
            "model": dict(self.loaded.identity),
            "doc_max_len": spec.doc_max_len,
            "query_max_len": spec.query_max_len,
            "prompt_template_sha256": prompt_template_sha256(),
            "encoder_template": ENCODER_TEMPLATE,
            "pad_to_multiple_of": PAD_TO_MULTIPLE_OF,
            "yes_id": self.loaded.yes_id,
            "no_id": self.loaded.no_id,
            "pooling_rule": POOLING_RULE,
            "score": "margin=z_yes-z_no (float32), p_yes=sigmoid(margin), last non-padding decoder position",
        }

    def prepare(self, passages: dict[str, str]) -> None:
        """doc_id → passage text. Encode once, pool at every ratio in settings.ratios, use/fill the cache."""
        self.passages.add(passages, self.settings.ratios)

    def score(self, query: str, instruction: str | None, doc_ids: list[str], ratio: int) -> list[PairScore]:
        """Scores for (query, doc) pairs, same order as doc_ids."""
        return self.score_many([ScoreRequest(query, instruction, doc_ids)], ratio)[0]

    def score_many(self, requests: Sequence[ScoreRequest], ratio: int) -> list[list[PairScore]]:
        """Score several queries' candidates in shared, length-sorted batches (much faster than one by one)."""
        check_ratio(ratio)
        prompts: list[list[int]] = []
        states = []
        for request in requests:
            prompt = self._prompt_ids(request.query, request.instruction)
            pooled = self.passages.pooled(list(request.doc_ids), ratio)
            prompts.extend([prompt] * len(pooled))
            states.extend(pooled)
        flat = self.scorer.score(prompts, states, ratio=ratio)
        results, start = [], 0
        for request in requests:
            results.append(flat[start : start + len(request.doc_ids)])
            start += len(request.doc_ids)
        return results

    def _prompt_ids(self, query: str, instruction: str | None) -> list[int]:
        instruction = DEFAULT_INSTRUCTION if instruction is None else instruction
        key = (query, instruction)
        if key not in self._prompt_cache:
            self._prompt_cache[key] = prompt_token_ids(
                self.loaded.tokenizer, query, instruction, self.loaded.spec.query_max_len
            )
        return self._prompt_cache[key]

    def stats(self) -> dict[str, Any]:
        """Offline (encode) and online (score) costs, plus cache behaviour and pooled sizes."""
        passage = asdict(self.passages.stats)
        scorer = self.scorer.stats
        return {
            "unique_passages": passage["unique_passages"],
            "passages_encoded": passage["passages_encoded"],
            "cache_hits": passage["cache_hits"],
            "corrupt_shards": passage["corrupt_shards"],
            "tokens_encoded": passage["tokens_encoded"],
            "encode_seconds": passage["encode_seconds"],  # offline
            "cache_read_seconds": passage["cache_read_seconds"],
            "cache_write_seconds": passage["cache_write_seconds"],
            "cache_bytes_written": passage["bytes_written"],
            "pooled_vectors_per_passage": passage["pooled_vectors_per_passage"],
            "stored_bytes_per_passage": passage["stored_bytes_per_passage"],
            "pairs": scorer.pairs,
            "prompt_tokens": scorer.prompt_tokens,
            "score_batches": scorer.batches,
            "score_batch_size": scorer.batch_size,
            "score_seconds": scorer.score_seconds,  # online
            "score_by_ratio": {r: dict(v) for r, v in scorer.by_ratio.items()},
        }


def build_reranker(
    model: Mapping[str, Any],
    *,
    ratios: Sequence[int],
    cache_dir: Path | None = None,
    batch_size: int = 32,
    encode_batch_size: int = 16,
    depth: int = 100,
) -> KalmReranker:
    """Pipeline entry point: a model config dict (the fields of ModelSpec, as in conf/model/*.yaml) → reranker.

    Unknown keys are an error (a typo must not silently fall back to a default); None values mean "default"."""
    known = {f.name for f in fields(ModelSpec)}
    unknown = sorted(set(model) - known)
    if unknown:
        raise ValueError(f"unknown model settings {unknown}; expected some of {sorted(known)}")
    spec = ModelSpec(**{k: v for k, v in model.items() if v is not None})
    settings = RerankSettings(ratios=list(ratios), depth=depth, batch_size=batch_size,
                              encode_batch_size=encode_batch_size, cache_dir=Path(cache_dir) if cache_dir else None)
    return KalmReranker(load_model(spec), settings)
