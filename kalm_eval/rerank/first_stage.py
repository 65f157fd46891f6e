"""The control reranker (`reranker=first_stage`): each pair is scored by its own first-stage score.

Its reranked run must reproduce the first stage exactly (order, head scores and every metric): a control row for
any report, and a check of the whole reranking path (units, merge, reranked order, tail, metrics) with no model in
the way. It keeps the scores in float64 (its units store float64), so no two distinct first-stage scores tie; P(yes)
is sigmoid(score), for display only. It reads the scores the engine hands it (ScoringChunk.first_stage_scores), so
its units are keyed by those scores too (rerank/engine.py). Nothing is loaded; latency is not measured by default.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from kalm_eval.errors import InvariantError
from kalm_eval.knobs import from_mapping, knob
from kalm_eval.records import PairScore
from kalm_eval.rerank.base import ChunkScores, Identity, LatencyProbe, ScoringChunk, Variant

SCORE_RULE = "the pair's first-stage score (float64); p_yes = sigmoid(score)"


@dataclass(frozen=True)
class FirstStageModelSettings:
    """The `model` group of the control family: nothing to choose (conf/model/first_stage.yaml)."""

    name: str = knob("first_stage")
    family: str = knob("first_stage", choices=("first_stage",))


def parse_model(values: Mapping[str, Any]) -> FirstStageModelSettings:
    return from_mapping(FirstStageModelSettings, values, prefix="model")


def _sigmoid(score: float) -> float:
    if score >= 0:
        return 1.0 / (1.0 + math.exp(-score))
    z = math.exp(score)
    return z / (1.0 + z)


class FirstStageReranker:
    name: ClassVar[str] = "first_stage"
    reads_first_stage_scores: ClassVar[bool] = True
    score_dtype: ClassVar[type] = np.float64
    SINGLE = Variant()

    def __init__(self) -> None:
        self.on_progress: Callable[[str, int], None] | None = None

    @classmethod
    def build(cls, model: Any, settings: Any, context: Any) -> FirstStageReranker:
        return cls()

    def identity(self) -> Identity:
        return Identity(self.name, checkpoint={}, inputs={"score": SCORE_RULE})

    def variants(self) -> list[Variant]:
        return [self.SINGLE]

    def _scores(self, first_stage_scores) -> list[PairScore]:
        return [PairScore(margin=float(s), p_yes=_sigmoid(float(s))) for s in first_stage_scores]

    def score_chunk(self, chunk: ScoringChunk) -> ChunkScores:
        if len(chunk.first_stage_scores) != len(chunk.pairs):
            raise InvariantError(f"reranker=first_stage: {len(chunk.first_stage_scores)} first-stage scores for "
                                 f"{len(chunk.pairs)} pairs (a bug of the engine)")
        scores = self._scores(chunk.first_stage_scores)
        if self.on_progress:
            self.on_progress("score", len(scores))
        return ChunkScores(scores={self.SINGLE.label: scores},
                           variant_counters={self.SINGLE.label: {"pairs": len(scores), "score_seconds": 0.0}})

    def latency_probe(self, chunk: ScoringChunk, variant: Variant, batch_size: int) -> LatencyProbe:
        values = list(chunk.first_stage_scores)
        batches = [values[i : i + batch_size] for i in range(0, len(values), batch_size)]
        return LatencyProbe(batches=batches, score=self._scores, pairs_per_batch=[len(b) for b in batches])

    def describe_device(self) -> dict[str, Any]:
        return {"device": "cpu", "dtype": "float64"}
