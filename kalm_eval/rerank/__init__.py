"""Rerank stage: the Reranker interface (base.py), a registry of reranker families, and the engine (engine.py) that
feeds a reranker its passages in world-size-free chunks.

A family = the `reranker=<name>` config choice: how its `model` config group is validated, and how it is built.
Both are named as "module:attribute" and imported only when used, so choosing a family costs nothing until a run
reranks with it. New families register here:

    RERANKERS.register("my_family", RerankerFamily("my_family", "my_package.my_module:parse_model",
                                                   "my_package.my_module:MyReranker.build"))

parse_model(values: dict) -> settings (ConfigError naming the knob on bad input);
build(settings, RerankSettings, RerankContext) -> a Reranker (rerank/base.py).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from kalm_eval.registry import Registry


@dataclass(frozen=True)
class RerankerFamily:
    name: str
    parser: str  # "module:function": parse_model(values) -> model settings
    builder: str  # "module:Class.method": build(model settings, RerankSettings, RerankContext) -> Reranker
    uses_compression: bool = False  # takes reranker.compression / reranker.cascade (MEP)

    def parse_model(self, values: dict[str, Any]) -> Any:
        return _resolve(self.parser)(values)

    def build(self, model: Any, settings: Any, context: Any):
        return _resolve(self.builder)(model, settings, context)


def _resolve(path: str) -> Any:
    module, _, attribute = path.partition(":")
    target: Any = importlib.import_module(module)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


RERANKERS: Registry[RerankerFamily] = Registry("reranker", "reranker", also_known=("none",))


def register(family: RerankerFamily) -> RerankerFamily:
    return RERANKERS.register(family.name, family)


def family(name: str) -> RerankerFamily:
    return RERANKERS[name]


register(RerankerFamily("kalm", "kalm_eval.fbnl.spec:parse_model", "kalm_eval.rerank.kalm:KalmReranker.build",
                        uses_compression=True))
register(RerankerFamily("qwen3", "kalm_eval.rerank.qwen3:parse_model", "kalm_eval.rerank.qwen3:Qwen3Reranker.build"))
register(RerankerFamily("cross_encoder", "kalm_eval.rerank.cross_encoder:parse_model",
                        "kalm_eval.rerank.cross_encoder:CrossEncoderReranker.build"))
register(RerankerFamily("bge_gemma", "kalm_eval.rerank.bge_gemma:parse_model",
                        "kalm_eval.rerank.bge_gemma:BgeGemmaReranker.build"))
register(RerankerFamily("first_stage", "kalm_eval.rerank.first_stage:parse_model",
                        "kalm_eval.rerank.first_stage:FirstStageReranker.build"))  # the control: first-stage scores

__all__ = ["RERANKERS", "RerankerFamily", "family", "register"]
