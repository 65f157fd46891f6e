"""Declarative dataset quirks. Every result records the quirks it was scored under."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Quirks:
    # BEIR/MTEB drop hits whose doc id equals the query id (ArguAna, Quora: the query is itself a corpus document).
    ignore_identical_ids: bool = False
    # Minimum qrels grade that counts as relevant for binary measures (R@k, RR); nDCG uses the graded values.
    relevance_threshold: int = 1

    @classmethod
    def from_config(cls, cfg: Any) -> Quirks:
        values = dict(cfg or {})
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown dataset quirk(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
