"""The Reranker interface every reranker family implements, and the records it exchanges with the engine.

The engine (rerank/engine.py) hands a reranker its work in *chunks*: a set of unique passages and every
(query, passage) pair of the run that involves them. A reranker returns one score per pair for each of its
*variants* (KaLM: one per compression ratio r, sharing one encoder pass; a cross-encoder: a single variant).

    class Reranker(Protocol):
        name: str                                 # registry name (conf/reranker/<name>.yaml)
        def identity(self) -> Identity            # everything about model + inputs that affects a score
        def variants(self) -> list[Variant]       # scored conditions; each becomes one result record
        def score_chunk(self, chunk) -> ChunkScores
        def latency_probe(self, chunk, variant, batch_size) -> LatencyProbe   # warm, separately timed online cost
        def describe_device(self) -> dict         # device, dtype (for the latency record)

`PairwiseReranker` implements all but `identity` and `score_pairs` for rerankers that score each pair whole
(nothing of the passage can be cached): cross-encoders and LLM rerankers.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from kalm_eval.records import PairScore, compression_label


@dataclass(frozen=True)
class Variant:
    """One scored condition of a reranker: KaLM has one per compression ratio r, other families a single one
    (compression None)."""

    compression: int | None = None  # the MEP ratio r this variant is scored at

    @property
    def label(self) -> str:
        """Output-directory suffix and score key ("r4"); "" for a single-variant reranker."""
        return "" if self.compression is None else compression_label(self.compression)

    @property
    def protocol(self) -> dict[str, Any]:
        """What it adds to protocol.reranker (and so to the record's signature)."""
        return {} if self.compression is None else {"compression": self.compression}


@dataclass(frozen=True)
class Identity:
    """Everything about a reranker that affects its scores, in one shape for every family: `checkpoint` = the weights
    and how they are loaded (hub id or "local", revision, weights / tokenizer fingerprints, dtype, kernel ...),
    `inputs` = how pairs are fed and read (lengths, templates, padding, instruction, score rule). Written (protocol
    reranker.model, unit keys) as {"family", "checkpoint": {...}, **inputs}."""

    family: str
    checkpoint: dict[str, Any]
    inputs: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"family": self.family, "checkpoint": dict(self.checkpoint), **self.inputs}


@dataclass(frozen=True)
class ScoringChunk:
    """Unique passages and every pair of the run that involves them.

    `pairs[i] = (query index, passage index)` into `queries` and `passages`; scores come back in `pairs` order."""

    passages: Sequence[tuple[str, str]]  # (doc id, passage text)
    queries: Sequence[tuple[str, str | None]]  # (query text, instruction; None = the reranker's default)
    pairs: Sequence[tuple[int, int]]
    first_stage_scores: Sequence[float] = ()  # per pair: its first-stage score (the `first_stage` control reads it)

    def triples(self) -> list[tuple[str, str | None, str]]:
        """(query, instruction, passage text) per pair, for rerankers that read the pair as text."""
        return [(*self.queries[q], self.passages[p][1]) for q, p in self.pairs]


@dataclass
class ChunkScores:
    """Scores per variant label (in chunk.pairs order) and the chunk's cost counters (summed over chunks)."""

    scores: dict[str, list[PairScore]]
    counters: dict[str, float] = field(default_factory=dict)  # e.g. passages_encoded, encode_seconds
    # per variant label: pairs, score_seconds, prompt_tokens; KaLM also pooled_vectors, stored_bytes (its r's states)
    variant_counters: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class LatencyProbe:
    """Batches ready to be scored online, and the function that scores one (returns once the device is done)."""

    batches: list[Any]
    score: Callable[[Any], object]
    pairs_per_batch: list[int]


class Reranker(Protocol):
    name: str
    on_progress: Callable[[str, int], None] | None  # set by the engine: ("encode" | "score", how many just done)

    def identity(self) -> Identity: ...

    def variants(self) -> list[Variant]: ...

    def score_chunk(self, chunk: ScoringChunk) -> ChunkScores: ...

    def latency_probe(self, chunk: ScoringChunk, variant: Variant, batch_size: int) -> LatencyProbe: ...

    def describe_device(self) -> dict[str, Any]: ...


class PairwiseReranker(ABC):
    """Base for rerankers that score each (query, passage) pair whole, with a single variant."""

    name: ClassVar[str]
    SINGLE = Variant()
    on_progress: Callable[[str, int], None] | None = None

    @abstractmethod
    def identity(self) -> Identity:
        """Checkpoint (+ revision / weights fingerprint, dtype) and inputs (max length, prompt template hash, score
        rule)."""

    @abstractmethod
    def score_pairs(self, triples: Sequence[tuple[str, str | None, str]]) -> list[PairScore]:
        """Scores of (query, instruction or None, passage) triples, in input order (batched inside)."""

    @abstractmethod
    def describe_device(self) -> dict[str, Any]:
        """{"device": "cpu" | "cuda:0 (NVIDIA H200)", "dtype": "float32" | "bfloat16"}."""

    @classmethod
    def build(cls, model: Any, settings: Any, context: Any) -> PairwiseReranker:
        """Registry entry point: a torchrun rank takes the GPU of its local rank when the device is "auto"."""
        import dataclasses

        import torch

        if getattr(model, "device", None) == "auto" and context.local_rank and torch.cuda.is_available():
            model = dataclasses.replace(model, device=f"cuda:{context.local_rank}")
        return cls(model, batch_size=settings.batch_size)

    def variants(self) -> list[Variant]:
        return [self.SINGLE]

    def score_chunk(self, chunk: ScoringChunk) -> ChunkScores:
        started = time.perf_counter()
        scores = self.score_pairs(chunk.triples())
        seconds = time.perf_counter() - started
        if self.on_progress:
            self.on_progress("score", len(scores))
        return ChunkScores(scores={self.SINGLE.label: scores},
                           variant_counters={self.SINGLE.label: {"pairs": len(scores), "score_seconds": seconds}})

    def latency_probe(self, chunk: ScoringChunk, variant: Variant, batch_size: int) -> LatencyProbe:
        triples = chunk.triples()
        batches = [triples[i : i + batch_size] for i in range(0, len(triples), batch_size)]
        return LatencyProbe(batches=batches, score=self.score_pairs, pairs_per_batch=[len(b) for b in batches])
