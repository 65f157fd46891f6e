"""Online cost measured apart from the evaluation pass: warm, separately timed batches of real pairs.

The same procedure for every reranker family: `warmup` untimed batches, then `batches` timed ones, each one query's
head (its first min(depth, batch_size) candidates), scored through the reranker's online path only (for KaLM:
pooled states already made, only the decoder is timed). Scoring returns Python floats, so the device has finished."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

from kalm_eval.records import RankedList
from kalm_eval.rerank.base import Reranker, ScoringChunk, Variant


def latency_chunk(rankings: Iterable[RankedList], *, pairs_per_batch: int, count: int, query_text: Callable[[str], str],
                  instruction: str | None, passage_text: Callable[[str], str]) -> ScoringChunk | None:
    """The first `count` queries with at least `pairs_per_batch` candidates, their heads as one chunk (query order)."""
    heads = []
    for ranking in rankings:
        if len(ranking.candidates) >= pairs_per_batch:
            heads.append(ranking)
        if len(heads) == count:
            break
    if not heads:
        return None
    passages: dict[str, int] = {}
    pairs, scores = [], []
    for q, ranking in enumerate(heads):
        for cand in ranking.candidates[:pairs_per_batch]:
            pairs.append((q, passages.setdefault(cand.doc_id, len(passages))))
            scores.append(cand.score)
    return ScoringChunk(passages=[(d, passage_text(d)) for d in passages],
                        queries=[(query_text(r.query_id), instruction) for r in heads], pairs=pairs,
                        first_stage_scores=scores)


def measure_latency(reranker: Reranker, chunk: ScoringChunk, variant: Variant, *, pairs_per_batch: int,
                    warmup: int) -> dict[str, Any] | None:
    probe = reranker.latency_probe(chunk, variant, pairs_per_batch)
    if len(probe.batches) <= warmup:
        return None
    for batch in probe.batches[:warmup]:
        probe.score(batch)
    per_pair_ms, pairs, seconds = [], 0, 0.0
    for batch, size in zip(probe.batches[warmup:], probe.pairs_per_batch[warmup:]):
        tick = time.perf_counter()
        probe.score(batch)
        elapsed = time.perf_counter() - tick
        per_pair_ms.append(1000.0 * elapsed / size)
        pairs += size
        seconds += elapsed
    quantiles = statistics.quantiles(per_pair_ms, n=20, method="inclusive") if len(per_pair_ms) > 1 else per_pair_ms * 19
    return {"ms_per_pair_p50": statistics.median(per_pair_ms), "ms_per_pair_p95": quantiles[18],
            "pairs_per_s": pairs / seconds if seconds else None, "timed_batches": len(per_pair_ms),
            "pairs_per_batch": probe.pairs_per_batch[warmup], "warmup_batches": warmup,
            **reranker.describe_device()}
