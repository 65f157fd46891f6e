"""The `reranker` config group (every family) and the pooled-state cache policy, as validated settings."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from kalm_eval.errors import ConfigError
from kalm_eval.knobs import knob

SUPPORTED_COMPRESSION = (1, 2, 4, 8, 16, 32)  # the vLLM plugin's trained set; the paper's default is 4


@dataclass(frozen=True)
class CascadeStep:
    depth: int = knob(minimum=1)
    compression: int = knob(minimum=1)


@dataclass(frozen=True)
class RerankSettings:
    name: str = knob(doc="reranker family (registry name)")
    depth: int = knob(100, minimum=1, doc="rerank the first stage's top `depth` per query")
    instruction: str | None = knob(None, doc="None = the family's default instruction")
    tail: str = knob("first_stage", choices=("first_stage", "drop"),
                     doc="final run = reranked head + first-stage tail (or the head only)")
    compression: tuple[int, ...] = knob((), minimum=1, doc="KaLM: MEP compression r, one record each")
    cascade: tuple[CascadeStep, ...] | None = knob(None, doc="KaLM: rerank top depth_k of step k-1 at compression_k")
    batch_size: int = knob(32, minimum=1, logged=True)
    encode_batch_size: int = knob(16, minimum=1, logged=True)
    chunk_passages: int = knob(2048, minimum=1, logged=True, doc="unique passages per unit of work (bounds memory)")
    latency_batches: int = knob(10, minimum=0, logged=True, doc="warm, separately timed batches (0 = off)")
    latency_warmup: int = knob(2, minimum=0, logged=True)

    def __post_init__(self) -> None:
        for r in self.compression + tuple(step.compression for step in self.cascade or ()):
            if r not in SUPPORTED_COMPRESSION:
                warnings.warn(f"compression {r} is outside the trained set {SUPPORTED_COMPRESSION}; "
                              "scores may be off-distribution", stacklevel=2)
        if len(set(self.compression)) != len(self.compression):
            raise ConfigError(f"reranker.compression={list(self.compression)}: a value is listed twice")
        if self.cascade is not None:
            depths = [step.depth for step in self.cascade]
            if len(depths) < 2:
                raise ConfigError("reranker.cascade: a cascade needs at least two steps")
            if depths[0] != self.depth:
                raise ConfigError(f"reranker.cascade[0].depth={depths[0]} must equal reranker.depth={self.depth}")
            if any(b >= a for a, b in zip(depths, depths[1:])):
                raise ConfigError(f"reranker.cascade depths {depths}: each step must rerank fewer candidates")

    @property
    def compressions_scored(self) -> tuple[int, ...]:
        """Every compression the encoder pass must pool at (the sweep's, or the cascade's steps')."""
        if self.cascade is not None:
            return tuple(dict.fromkeys(step.compression for step in self.cascade))
        return self.compression


@dataclass(frozen=True)
class CacheSettings:
    """Persisted pooled states: which compressions to keep on disk, and a size cap. Default: none (see
    fbnl/pooled_cache.py: every run encodes its passages once anyway; persisting pays only for re-runs)."""

    persist_compression: tuple[int, ...] = knob((), minimum=1)
    max_bytes: int = knob(50 * 10**9, minimum=0)


@dataclass(frozen=True)
class RerankContext:
    """Where a reranker keeps its caches and which device slot it owns (a torchrun rank's local rank)."""

    cache_dir: Path
    cache: CacheSettings
    local_rank: int = 0
