"""KalmReranker: KaLM-Reranker-V1 behind the Reranker interface (fbnl does the model work).

Per chunk of passages: encode each passage once and pool it at every compression the run asks for (offline cost),
then, for every compression, score every pair of the chunk from the pooled states with the decoder only (online
cost); the chunk's states are dropped afterwards. One Variant per compression.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import torch

from kalm_eval.fbnl.model import LoadedModel, load_model
from kalm_eval.fbnl.passages import PassageEncoder, encoder_cache_key
from kalm_eval.fbnl.pooled_cache import PooledStateCache
from kalm_eval.fbnl.pooling import POOLING_RULE, pooled_length
from kalm_eval.fbnl.prompts import DEFAULT_INSTRUCTION, ENCODER_TEMPLATE, PAD_TO_MULTIPLE_OF, passage_token_ids_batch, \
    prompt_template_sha256, prompt_token_ids
from kalm_eval.fbnl.scorer import DecoderScorer
from kalm_eval.fbnl.spec import ModelSpec
from kalm_eval.fbnl.synthetic import build_model
from kalm_eval.rerank.base import ChunkScores, Identity, LatencyProbe, ScoringChunk, Variant
from kalm_eval.rerank.settings import RerankContext, RerankSettings
from kalm_eval.storage import sha256_text


class KalmReranker:
    name = "kalm"

    def __init__(self, loaded: LoadedModel, *, compression: Sequence[int], batch_size: int = 32,
                 encode_batch_size: int = 16, cache: PooledStateCache | None = None, persist: Sequence[int] = ()):
        if not compression:
            raise ValueError("KalmReranker needs at least one compression value")
        self.loaded = loaded
        self.compression = tuple(compression)
        self.encoder = PassageEncoder(loaded, encode_batch_size=encode_batch_size, cache=cache, persist=persist)
        self.scorer = DecoderScorer(loaded, batch_size=batch_size)
        self._prompts: dict[tuple[str, str], list[int]] = {}
        self.on_progress = None  # set by the engine
        self._probe_lengths: tuple[tuple[str, ...], list[int]] | None = None  # latency probe: token counts per passage

    @classmethod
    def build(cls, spec: ModelSpec, settings: RerankSettings, context: RerankContext) -> KalmReranker:
        if spec.device == "auto" and context.local_rank and torch.cuda.is_available():
            spec = dataclasses.replace(spec, device=f"cuda:{context.local_rank}")
        loaded = build_model(spec) if spec.synthetic else load_model(spec)
        persist = [r for r in context.cache.persist_compression if r in settings.compressions_scored]
        cache = None
        if persist:
            cache = PooledStateCache(context.cache_dir / "passages", encoder_cache_key(loaded),
                                     max_bytes=context.cache.max_bytes)
        return cls(loaded, compression=settings.compressions_scored, batch_size=settings.batch_size,
                   encode_batch_size=settings.encode_batch_size, cache=cache, persist=persist)

    # ---- identity ---------------------------------------------------------------------------------------------
    def identity(self) -> Identity:
        """Everything about the model and inputs that affects scores (the compression is per variant)."""
        spec = self.loaded.spec
        return Identity(self.name, checkpoint=dict(self.loaded.identity), inputs={
            "doc_max_len": spec.doc_max_len,
            "query_max_len": spec.query_max_len,
            "prompt_template_sha256": prompt_template_sha256(),
            "encoder_template": ENCODER_TEMPLATE,
            "pad_to_multiple_of": PAD_TO_MULTIPLE_OF,
            "yes_id": self.loaded.yes_id,
            "no_id": self.loaded.no_id,
            "pooling_rule": POOLING_RULE,
            "score": "margin=z_yes-z_no (float32), p_yes=sigmoid(margin), last non-padding decoder position",
        })

    def variants(self) -> list[Variant]:
        return [Variant(compression=r) for r in self.compression]

    def describe_device(self) -> dict[str, Any]:
        device = self.loaded.device
        name = f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)
        return {"device": name, "dtype": str(self.loaded.dtype).replace("torch.", "")}

    # ---- scoring ----------------------------------------------------------------------------------------------
    def score_chunk(self, chunk: ScoringChunk) -> ChunkScores:
        digests = [sha256_text(text) for _, text in chunk.passages]
        texts = dict(zip(digests, (text for _, text in chunk.passages)))
        pooled, stats = self.encoder.pooled(texts, self.compression, on_batch=self._progress("encode"))
        prompts = [self._prompt_ids(*query) for query in chunk.queries]
        pair_prompts = [prompts[q] for q, _ in chunk.pairs]
        prompt_tokens = sum(len(p) for p in pair_prompts)
        out = ChunkScores(scores={}, counters=stats.counters())
        vector_bytes = self.loaded.d_model * torch.empty((), dtype=self.loaded.dtype).element_size()
        for variant in self.variants():
            started = time.perf_counter()
            states = [pooled[variant.compression][digests[p]] for _, p in chunk.pairs]
            out.scores[variant.label] = self.scorer.score(pair_prompts, states, on_batch=self._progress("score"))
            vectors = stats.pooled_vectors[variant.compression]
            out.variant_counters[variant.label] = {"pairs": len(chunk.pairs), "prompt_tokens": prompt_tokens,
                                                   "score_seconds": time.perf_counter() - started,
                                                   "pooled_vectors": vectors, "stored_bytes": vectors * vector_bytes}
        return out

    def latency_probe(self, chunk: ScoringChunk, variant: Variant, batch_size: int) -> LatencyProbe:
        """Batches of `batch_size` pairs (in chunk order) with pooled states ready: only the decoder is timed.

        The states have each passage's exact shape (ceil(tokens / r) vectors of width d, in the model dtype) but
        seeded random values instead of the encoder's: the decoder's work does not depend on the values (dense
        kernels, no data-dependent paths) and the probe's scores are discarded, so the timing is the same while the
        run no longer encodes the probe's passages again for every r (that re-encoding was ~70% of a whole run's
        encode time with model=tiny on SciFact; see docs/cost.md)."""
        compression = variant.compression
        texts = tuple(text for _, text in chunk.passages)
        if self._probe_lengths is None or self._probe_lengths[0] != texts:  # the same heads for every r: count once
            spec, tokenizer = self.loaded.spec, self.loaded.tokenizer
            self._probe_lengths = (texts, [len(ids) for ids in passage_token_ids_batch(tokenizer, texts, spec.doc_max_len)])
        generator = torch.Generator().manual_seed(0)
        states = [torch.randn(pooled_length(n, compression), self.loaded.d_model, generator=generator).to(self.loaded.dtype)
                  for n in self._probe_lengths[1]]
        prompts = [self._prompt_ids(*query) for query in chunk.queries]
        pairs = list(chunk.pairs)
        batches = []
        for start in range(0, len(pairs), batch_size):
            rows = pairs[start : start + batch_size]
            batches.append(([prompts[q] for q, _ in rows], [states[p] for _, p in rows]))
        return LatencyProbe(batches=batches, score=lambda batch: self.scorer.score(*batch),
                            pairs_per_batch=[len(b[0]) for b in batches])

    def _progress(self, kind: str):
        return (lambda n: self.on_progress(kind, n)) if self.on_progress else None

    def _prompt_ids(self, query: str, instruction: str | None) -> list[int]:
        key = (query, DEFAULT_INSTRUCTION if instruction is None else instruction)
        if key not in self._prompts:
            self._prompts[key] = prompt_token_ids(self.loaded.tokenizer, key[0], key[1], self.loaded.spec.query_max_len)
        return self._prompts[key]
