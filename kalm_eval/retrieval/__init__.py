"""First stage: candidate rankings, cached as TREC runs with manifests (first_stage.py), from a registry of
retriever families. A family = the `retriever=<name>` config choice: the dataclass validating its knobs (besides
`name` and `depth`) and the class built from it, a `Retriever` (base.py: identity() and retrieve(dataset, depth);
families with corpus-side artefacts are `CorpusSideRetriever`s, built with `cache_dir`, `workers` and `progress`,
with a cooperative `prepare`). The ranking rule for equal scores is the family's `tie_break` (recorded in the
first-stage key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kalm_eval.registry import Registry
from kalm_eval.retrieval.base import CorpusSideRetriever, Retriever
from kalm_eval.retrieval.bm25 import BM25Retriever, BM25Settings
from kalm_eval.retrieval.dense import DenseRetriever
from kalm_eval.retrieval.dense_settings import DenseSettings
from kalm_eval.retrieval.mteb_predictions import MtebPredictionsRetriever, MtebPredictionsSettings
from kalm_eval.retrieval.top_ranked import TopRankedRetriever, TopRankedSettings
from kalm_eval.retrieval.trec_run import TrecRunRetriever, TrecRunSettings


@dataclass(frozen=True)
class RetrieverFamily:
    name: str
    settings: type
    retriever: type  # retriever(settings, **context) -> a Retriever (base.py)
    corpus_side: bool = False  # builds corpus-side artefacts: takes cache_dir / workers / progress, has prepare()

    def build(self, settings: Any, **context: Any) -> Retriever:
        if not self.corpus_side:
            context = {}
        return self.retriever(settings, **context) if context else self.retriever(settings)


RETRIEVERS: Registry[RetrieverFamily] = Registry("retriever", "retriever")


def register(family: RetrieverFamily) -> RetrieverFamily:
    return RETRIEVERS.register(family.name, family)


def family(name: str) -> RetrieverFamily:
    return RETRIEVERS[name]


register(RetrieverFamily("bm25", BM25Settings, BM25Retriever, corpus_side=True))
register(RetrieverFamily("dense", DenseSettings, DenseRetriever, corpus_side=True))
register(RetrieverFamily("kalm_embedding", DenseSettings, DenseRetriever, corpus_side=True))  # the paper's first stage, dense defaults
register(RetrieverFamily("trec_run", TrecRunSettings, TrecRunRetriever))
register(RetrieverFamily("mteb_predictions", MtebPredictionsSettings, MtebPredictionsRetriever))
register(RetrieverFamily("top_ranked", TopRankedSettings, TopRankedRetriever))

__all__ = ["RETRIEVERS", "CorpusSideRetriever", "Retriever", "RetrieverFamily", "family", "register"]
