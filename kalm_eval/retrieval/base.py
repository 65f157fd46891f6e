"""The Retriever interface every first-stage family implements (the counterpart of rerank/base.py's Reranker).

A family is registered in kalm_eval.retrieval with the dataclass that validates its knobs; first_stage.py builds it,
caches its rankings as a TREC run keyed by `identity()`, and reads them back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from kalm_eval.records import RankedList

if TYPE_CHECKING:
    from kalm_eval.data.dataset import Dataset


@runtime_checkable
class Retriever(Protocol):
    def identity(self) -> dict[str, Any]:
        """Everything that shapes its rankings (model + weights hash, or index parameters; query template ...):
        goes into the first-stage signature."""
        ...

    def retrieve(self, dataset: Dataset, depth: int) -> Iterator[RankedList]:
        """One ranking per judged query, in the dataset's query order, at most `depth` candidates each."""
        ...


@runtime_checkable
class CorpusSideRetriever(Retriever, Protocol):
    """A family with corpus-side artefacts (the BM25 index, dense embedding shards), built with `cache_dir`,
    `workers` and `progress`. `prepare` is the cooperative part of `retrieve` that every torchrun rank calls (it
    holds the barriers); afterwards `retrieve` on the main rank only reads."""

    def prepare(self, dataset: Dataset, depth: int) -> None: ...
