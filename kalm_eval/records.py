"""Small typed records passed between stages (hashing and atomic writes live in kalm_eval.storage)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def compression_label(compression: int) -> str:
    """The one spelling of an MEP compression ratio r in names: "r4" (result directories, score keys, cache folders,
    cascade labels). Everything else carries r as an int."""
    return f"r{compression}"


@dataclass(frozen=True, slots=True)
class Query:
    id: str
    text: str


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    title: str
    text: str

    def passage(self, joiner: str = " ") -> str:
        """Passage text = title + joiner + text (BEIR / MTEB convention; no dangling joiner when a part is empty)."""
        if not self.title:
            return self.text.strip()
        return f"{self.title}{joiner}{self.text}".strip()


@dataclass(frozen=True, slots=True)
class Candidate:
    doc_id: str
    score: float


@dataclass(frozen=True, slots=True)
class RankedList:
    """One query's ranking, best first. Ranks are 1-based positions in `candidates`."""

    query_id: str
    candidates: tuple[Candidate, ...]

    def head(self, depth: int) -> RankedList:
        return RankedList(self.query_id, self.candidates[:depth])


@dataclass(slots=True)
class StageResult:
    """Metrics of one stage (first_stage, reranked): means over all evaluated queries plus per-query values."""

    name: str
    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]  # measure -> query id -> value
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PairScore:
    """A reranker's score of one (query, passage) pair."""

    margin: float  # the ranking score: z_yes - z_no (yes/no rerankers, float32) or the raw relevance logit
    p_yes: float  # relevance probability, sigmoid(margin); for display and thresholds only
