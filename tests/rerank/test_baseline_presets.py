"""Baseline presets (conf/model, conf/reranker) validate without loading anything, and the real-shape configs
reproduce the published parameter counts exactly (built on the meta device: no memory, no weights)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from kalm_eval.errors import ConfigError
from kalm_eval.rerank.bge_gemma import BgeGemmaSettings
from kalm_eval.rerank.cross_encoder import CrossEncoderSettings
from kalm_eval.rerank.hf_common import parse_settings
from kalm_eval.rerank.qwen3 import MODEL_CARD_INSTRUCTION, Qwen3Settings
from kalm_eval.testing.baselines import REAL_SHAPES, real_shape_config
from tests.helpers import compose_config

CONF = Path(__file__).resolve().parents[2] / "conf"
SETTINGS = {"qwen3": Qwen3Settings, "cross_encoder": CrossEncoderSettings, "bge_gemma": BgeGemmaSettings}
PRESETS = {
    "qwen3_reranker_0.6b": "qwen3", "qwen3_reranker_4b": "qwen3", "qwen3_reranker_8b": "qwen3",
    "bge_reranker_v2_m3": "cross_encoder", "gte_multilingual_reranker_base": "cross_encoder",
    "jina_reranker_v2": "cross_encoder", "mxbai_rerank_large_v1": "cross_encoder",
    "bge_reranker_v2_gemma": "bge_gemma",
}


def preset(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF / "model" / f"{name}.yaml"), resolve=True)


@pytest.mark.parametrize("name, family", sorted(PRESETS.items()))
def test_model_presets_validate(name, family):
    values = preset(name)
    assert values["family"] == family and values["name"] == name and values["dtype"] == "auto"
    if values["revision"] is None:  # bge-reranker-v2-gemma: no pin known; loading must refuse, naming the knob
        with pytest.raises(ConfigError, match=r"model\.revision"):
            parse_settings(SETTINGS[family], values, family=family)
        return
    settings = parse_settings(SETTINGS[family], values, family=family)
    assert len(settings.revision) == 40 and settings.path is None


def test_qwen3_presets_use_the_model_card_instruction_and_8192():
    for name in ("qwen3_reranker_0.6b", "qwen3_reranker_4b", "qwen3_reranker_8b"):
        values = preset(name)
        assert values["default_instruction"] == MODEL_CARD_INSTRUCTION and values["max_length"] == 8192


@pytest.mark.parametrize("family, model", [("qwen3", "qwen3_reranker_0.6b"), ("cross_encoder", "bge_reranker_v2_m3"),
                                           ("bge_gemma", "bge_reranker_v2_gemma")])
def test_reranker_group_composes(family, model):
    cfg = compose_config(f"reranker={family}", f"model={model}")
    assert cfg.reranker.name == family and cfg.model.family == family
    assert cfg.reranker.instruction == cfg.benchmark.instruction
    assert set(cfg.reranker) == {"name", "depth", "instruction", "tail", "batch_size", "latency_batches",
                                 "latency_warmup"}


@pytest.mark.parametrize("name", sorted(REAL_SHAPES))
def test_real_shapes_reproduce_published_parameter_counts(name):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    config = real_shape_config(name)
    auto = AutoModelForSequenceClassification if name == "bge-reranker-v2-m3" else AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == REAL_SHAPES[name][2]


def test_unknown_real_shape():
    with pytest.raises(KeyError, match="known"):
        real_shape_config("qwen3-reranker-1b")
