"""Rerank stage: the Reranker interface (base.py), a registry of reranker families, and the engine (engine.py) that
feeds a reranker its passages in world-size-free chunks.

A family = the `reranker=<name>` config choice: the dataclass that validates its `model` config group, and how to
build it. Building is lazy (models and heavy libraries load only when a run reranks). New families register here:

    register(RerankerFamily("my_family", MySettings, "my_package.my_module:MyReranker.build"))
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from kalm_eval.errors import ConfigError
from kalm_eval.fbnl.spec import ModelSpec


@dataclass(frozen=True)
class RerankerFamily:
    name: str
    model_settings: type  # validates the `model` config group
    builder: str  # "module:Class.method" -> build(model_settings, RerankSettings, RerankContext) -> Reranker
    uses_compression: bool = False  # takes reranker.compression / reranker.cascade (MEP)

    def build(self, model: Any, settings: Any, context: Any):
        module, _, attribute = self.builder.partition(":")
        target: Any = importlib.import_module(module)
        for part in attribute.split("."):
            target = getattr(target, part)
        return target(model, settings, context)


RERANKERS: dict[str, RerankerFamily] = {}


def register(family: RerankerFamily) -> RerankerFamily:
    RERANKERS[family.name] = family
    return family


def family(name: str) -> RerankerFamily:
    if name not in RERANKERS:
        raise ConfigError(f"reranker={name!r}: unknown reranker; known: none, {', '.join(sorted(RERANKERS))}")
    return RERANKERS[name]


register(RerankerFamily("kalm", ModelSpec, "kalm_eval.rerank.kalm:KalmReranker.build", uses_compression=True))

__all__ = ["RERANKERS", "RerankerFamily", "family", "register"]
