"""The registries of retriever families, reranker families and dataset loaders: one helper, one error shape, and
every registered family offers its interface."""

from __future__ import annotations

import pytest

from kalm_eval.data.loaders import LOADERS
from kalm_eval.errors import ConfigError
from kalm_eval.registry import Registry
from kalm_eval.rerank import RERANKERS
from kalm_eval.retrieval import RETRIEVERS, CorpusSideRetriever, Retriever


def test_unknown_names_are_one_config_error_naming_what_is_known():
    with pytest.raises(ConfigError, match=r"^retriever='bm52': unknown retriever; known: bm25, dense, "):
        RETRIEVERS["bm52"]
    with pytest.raises(ConfigError, match=r"^reranker='klam': unknown reranker; known: none, "):
        RERANKERS["klam"]
    with pytest.raises(ConfigError, match=r"^benchmark.loader='bier': unknown dataset loader; known: beir, lmeb, "
                                          r"miracl$"):
        LOADERS["bier"]


def test_a_name_registers_once():
    registry: Registry[int] = Registry("thing", "thing")
    registry.register("a", 1)
    with pytest.raises(ValueError, match="thing='a' is registered twice"):
        registry.register("a", 2)
    assert list(registry) == ["a"] and "a" in registry and registry["a"] == 1


def test_every_retriever_family_offers_the_retriever_interface():
    for name in RETRIEVERS:
        family = RETRIEVERS[name]
        assert issubclass(family.retriever, Retriever), name
        assert issubclass(family.retriever, CorpusSideRetriever) == family.corpus_side, name
