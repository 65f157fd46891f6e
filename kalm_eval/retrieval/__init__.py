"""First stage: candidate rankings, cached as TREC runs with manifests (first_stage.py), from a registry of
retriever families. A family = the `retriever=<name>` config choice: the dataclass validating its knobs (besides
`name` and `depth`) and the class built from it. Every retriever offers

    identity() -> dict                                 what shapes its rankings (goes into the run signature)
    retrieve(dataset, depth) -> Iterator[RankedList]   one ranking per judged query, in the dataset's query order
    tie_break: str                                     the rule its rankings follow for equal scores

Families with corpus-side artefacts (`corpus_side=True`: the BM25 index, dense embedding shards) are built with
context `cache_dir` (where those artefacts live), `workers` (who shares their construction) and `progress` (bars
on or off), and offer `prepare(dataset, depth)`: the cooperative part of `retrieve` that every torchrun rank calls
(it holds the barriers), after which `retrieve` on rank 0 only reads. Other families are built from their settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kalm_eval.errors import ConfigError
from kalm_eval.retrieval.bm25 import BM25Retriever, BM25Settings
from kalm_eval.retrieval.dense import DenseRetriever, DenseSettings
from kalm_eval.retrieval.mteb_predictions import MtebPredictionsRetriever, MtebPredictionsSettings
from kalm_eval.retrieval.top_ranked import TopRankedRetriever, TopRankedSettings
from kalm_eval.retrieval.trec_run import TrecRunRetriever, TrecRunSettings


@dataclass(frozen=True)
class RetrieverFamily:
    name: str
    settings: type
    retriever: type  # retriever(settings, **context) -> a retriever
    corpus_side: bool = False  # builds corpus-side artefacts: takes cache_dir / workers / progress, has prepare()

    def build(self, settings: Any, **context: Any):
        if not self.corpus_side:
            context = {}
        return self.retriever(settings, **context) if context else self.retriever(settings)


RETRIEVERS: dict[str, RetrieverFamily] = {}


def register(family: RetrieverFamily) -> RetrieverFamily:
    RETRIEVERS[family.name] = family
    return family


def family(name: str) -> RetrieverFamily:
    if name not in RETRIEVERS:
        raise ConfigError(f"retriever={name!r}: unknown retriever; known: {', '.join(sorted(RETRIEVERS))}")
    return RETRIEVERS[name]


register(RetrieverFamily("bm25", BM25Settings, BM25Retriever, corpus_side=True))
register(RetrieverFamily("dense", DenseSettings, DenseRetriever, corpus_side=True))
register(RetrieverFamily("kalm_embedding", DenseSettings, DenseRetriever, corpus_side=True))  # the paper's first stage, dense defaults
register(RetrieverFamily("trec_run", TrecRunSettings, TrecRunRetriever))
register(RetrieverFamily("mteb_predictions", MtebPredictionsSettings, MtebPredictionsRetriever))
register(RetrieverFamily("top_ranked", TopRankedSettings, TopRankedRetriever))

__all__ = ["RETRIEVERS", "RetrieverFamily", "family", "register"]
