"""Cascades (`reranker.cascade=[{depth: d1, compression: r1}, {depth: d2, compression: r2}, ...]`, KaLM only): step k
re-sorts the top d_k of step k-1's order by its own margins at r_k (trec_order: margin descending, then doc id
descending); below it, step k-1's order continues. One record per cascade.

To encode every passage once, the evaluation scores every candidate of step 1 at every step's r (one Variant per
step's r, the same units as a sweep); the cascade's own online cost counts only what each step scores."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from kalm_eval.ranking import trec_order
from kalm_eval.records import compression_label
from kalm_eval.rerank.base import Variant
from kalm_eval.rerank.settings import CascadeStep


def cascade_label(steps: Sequence[CascadeStep]) -> str:
    """The record's name suffix: cascade-r32d100-r2d20."""
    return "cascade-" + "-".join(f"{compression_label(s.compression)}d{s.depth}" for s in steps)


def step_variant(step: CascadeStep) -> Variant:
    return Variant(compression=step.compression)


@dataclass(frozen=True)
class CascadeHead:
    """One query's head after the steps: `order` = head positions (first-stage order) best first; `deepest[i]` =
    (last step that scored position i, its margin, its P(yes))."""

    order: list[int]
    deepest: dict[int, tuple[int, float, float]]

    def scored_by_last_step(self, steps: int) -> int:
        return sum(1 for i in self.order if self.deepest[i][0] == steps)


def cascade_head(doc_ids: Sequence[str], steps: Sequence[CascadeStep],
                 score: Callable[[Variant, int], tuple[float, float]]) -> CascadeHead:
    """Run the steps over a head of `doc_ids` (first-stage order); `score(variant, i)` = (margin, P(yes)) of head
    position i at that step's compression."""
    order = list(range(len(doc_ids)))
    deepest: dict[int, tuple[int, float, float]] = {}
    for k, step in enumerate(steps, start=1):
        variant = step_variant(step)
        top = order[: step.depth]
        margins = {}
        for i in top:
            margin, p_yes = score(variant, i)
            margins[i] = margin
            deepest[i] = (k, margin, p_yes)
        order = trec_order(top, doc_id=lambda i: doc_ids[i], score=margins.__getitem__) + order[step.depth:]
    return CascadeHead(order, deepest)


def cascade_score_seconds(query_offsets: np.ndarray, steps: Sequence[CascadeStep],
                          variant_counters: dict[str, dict[str, float]]) -> float:
    """The cascade's own online cost from the measured seconds per pair at each step's r: every step k scores
    depth_k pairs per query. (The evaluation's larger cost is `evaluation_score_seconds`.)"""
    heads = np.diff(query_offsets)
    total = 0.0
    for step in steps:
        counters = variant_counters.get(step_variant(step).label, {})
        if counters.get("pairs"):
            per_pair = counters["score_seconds"] / counters["pairs"]
            total += per_pair * int(np.minimum(heads, step.depth).sum())
    return total


def evaluation_score_seconds(steps: Sequence[CascadeStep], variant_counters: dict[str, dict[str, float]]) -> float:
    """What the evaluation spent scoring: every candidate of step 1 at every step's r."""
    return sum(variant_counters.get(step_variant(s).label, {}).get("score_seconds", 0.0) for s in steps)
