"""A given run file as the first stage (`retriever=trec_run`): validated against the dataset, ranked as trec_eval
reads it (runfile.TIE_BREAK: score desc, then doc id desc; lines in any order, the rank column ignored; a non-finite
score is an error naming file and line), LMEB scenes applied. Its identity is the file's content (sha256), so a changed file is a new first stage."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kalm_eval.data import Dataset
from kalm_eval.data.dataset import restrict_to_candidates
from kalm_eval.errors import DataError
from kalm_eval.knobs import knob
from kalm_eval.records import RankedList
from kalm_eval.retrieval.runfile import TIE_BREAK, read_trec_validated
from kalm_eval.storage import sha256_file

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class TrecRunSettings:
    path: str = knob(doc="qid Q0 docid rank score tag; plain or .gz")
    system: str | None = knob(None, doc="free text recorded in provenance, e.g. the checkpoint behind the run")
    on_unknown: str = knob("error", choices=("error", "drop"), doc="query or doc ids the dataset does not know")
    on_duplicate: str = knob("error", choices=("error", "keep_first"), doc="a doc listed twice for one query")


class TrecRunRetriever:
    tie_break = TIE_BREAK

    def __init__(self, settings: TrecRunSettings):
        self.settings = settings
        self.path = Path(settings.path)
        self.report: dict[str, Any] = {}

    def identity(self) -> dict[str, Any]:
        if not self.path.exists():
            raise DataError(f"{self.path}: run file not found (retriever.path)")
        s = self.settings
        return {"kind": "trec_run", "path": str(self.path.resolve()), "sha256": sha256_file(self.path),
                "system": s.system, "on_unknown": s.on_unknown, "on_duplicate": s.on_duplicate}

    def retrieve(self, dataset: Dataset, depth: int) -> Iterator[RankedList]:
        rankings, report = read_trec_validated(
            self.path, queries=set(dataset.queries), corpus=dataset.corpus,
            depth=depth if dataset.candidates is None else 1 << 62,  # scenes: cut after filtering
            ignore_identical_ids=dataset.quirks.ignore_identical_ids,
            on_unknown=self.settings.on_unknown, on_duplicate=self.settings.on_duplicate,
            dropped_queries=dataset.dropped_queries)
        if dataset.candidates is not None:
            # LMEB scenes: a given run may rank the whole corpus; keep each query's scene docs, then its top `depth`.
            rankings, scene_report = restrict_to_candidates(rankings, dataset)
            rankings = [ranking.head(depth) for ranking in rankings]
            report.update(scene_report)
        for key in ("unknown_query_lines", "unknown_doc_lines", "duplicate_lines", "queries_without_candidates",
                    "scene_filtered_lines"):
            if report.get(key):
                log.warning("%s: %s = %d", self.path, key, report[key])
        self.report = report
        order = {qid: i for i, qid in enumerate(dataset.queries)}
        yield from sorted(rankings, key=lambda r: order[r.query_id])
