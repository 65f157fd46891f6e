"""What a report shows (the knobs of conf/report.yaml that shape tables)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from kalm_eval.metrics import MAIN_MEASURE

log = logging.getLogger(__name__)


@dataclass
class ReportOptions:
    paper_row: str | None = None  # fallback paper row for reranked results that match none (tiny, a local path)
    paper_rows: dict[str, str] = field(default_factory=dict)  # our model label -> paper row (explicit, wins)
    compare_to: str = "dataset"  # dataset | average
    columns: str = "present"  # present | suite
    measure: str = MAIN_MEASURE

    def __post_init__(self):
        if self.compare_to not in ("dataset", "average"):
            raise ValueError(f"compare_to must be 'dataset' or 'average', got {self.compare_to!r}")
        if self.columns not in ("present", "suite"):
            raise ValueError(f"columns must be 'present' or 'suite', got {self.columns!r}")
        if self.measure != MAIN_MEASURE:
            log.warning("paper values are %s; comparing %s against them is not like-for-like", MAIN_MEASURE, self.measure)
