"""An mteb reranking task's own candidate lists as the first stage (`retriever=top_ranked`).

mteb's reranking tasks (and candidate-restricted retrieval tasks) ship a `top_ranked` config, one row per query:
`query-id` and `corpus-ids` (a list of doc ids), read by kalm_eval.data.mteb_hf into `Dataset.candidates`. The lists
carry **no scores**, so the ranking is the given order: candidate i of a query's list gets rank i + 1 and the written
score -(i + 1) (strictly decreasing, so the TREC run keeps the order). That is the order mteb itself hands its
cross-encoders (`SearchCrossEncoderWrapper` reranks each query's top_ranked list as given). Before the depth cut,
doc ids the corpus lacks and repeats are already gone (kalm_eval.data.dataset, counted in the dataset's stats), and
a doc whose id equals the query id is dropped under quirks.ignore_identical_ids. A judged query without a list gets
no candidates (it scores 0, as in any first stage; counted and logged). The lists' content is part of the run
signature through the dataset identity (files["candidates"]); this retriever's identity names the ordering rule."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kalm_eval.data import Dataset
from kalm_eval.errors import DataError
from kalm_eval.records import Candidate, RankedList

log = logging.getLogger(__name__)

GIVEN_ORDER = "given order of the top_ranked list (it carries no scores); score = -rank"


@dataclass(frozen=True)
class TopRankedSettings:
    """No knobs: the candidate lists come with the benchmark (an mteb-layout dataset with a top_ranked config)."""


class TopRankedRetriever:
    tie_break = GIVEN_ORDER

    def __init__(self, settings: TopRankedSettings):
        self.settings = settings
        self.report: dict[str, Any] = {}

    def identity(self) -> dict[str, Any]:
        return {"kind": "top_ranked", "order": GIVEN_ORDER,
                "lists": "the dataset's top_ranked config (its fingerprint is in the dataset identity)"}

    def retrieve(self, dataset: Dataset, depth: int) -> Iterator[RankedList]:
        if dataset.candidates is None:
            raise DataError(f"retriever=top_ranked: {dataset.name} ({dataset.split}) has no top_ranked candidate lists; "
                            "load an mteb reranking task in its Hugging Face layout (benchmark.source=mteb with the "
                            "dataset repo, which has a `top_ranked` / `<subset>-top_ranked` config)")
        identical = dataset.quirks.ignore_identical_ids
        without = dropped_identical = 0
        for qid in dataset.queries:
            listed = dataset.candidates_for(qid)
            if listed is None:
                without += 1
                continue
            kept = [doc_id for doc_id in listed if not (identical and doc_id == qid)]
            dropped_identical += len(listed) - len(kept)
            yield RankedList(qid, tuple(Candidate(doc_id, -float(i + 1)) for i, doc_id in enumerate(kept[:depth])))
        if without:
            log.warning("%s: %d judged quer(y/ies) have no top_ranked list: no candidates, they score 0",
                        dataset.name, without)
        self.report = {"queries": len(dataset.queries) - without, "queries_without_candidates": without,
                       "identical_ids_dropped": dropped_identical,
                       **{k: dataset.stats[k] for k in ("candidate_ids_not_in_corpus", "queries_with_empty_candidates")
                          if k in dataset.stats}}
