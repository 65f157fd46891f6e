"""The cost benchmark's baselines: a baseline's online pass as the harness's reranker runs it, on random weights in
the real shape (testing/shapes.py), with inputs built by the family's own code.

Inputs. Limits and templates come from the family modules and the model presets, never from here: the settings are
the preset's (conf/model/<preset>.yaml through the family's settings class), the layout the family's:
  qwen3           rerank/qwen3.py `Qwen3Inputs` (prefix + body cut to max_length - prefix - suffix + suffix)
  bge_gemma       rerank/bge_gemma.py `BgeGemmaInputs` (FlagEmbedding's A:/B: layout, query 3/4 of max_length)
  cross_encoder   rerank/cross_encoder.py scores through sentence-transformers' `CrossEncoder.predict`, which
                  tokenises each (query, passage) with the tokenizer's own pair template, truncation longest_first
                  to max_length (the family's INPUT_RULE); there is no layout code in the family to call, so this
                  module makes that one tokenizer call (`cross_encoder_inputs`) with the preset's max_length.
No Qwen or XLM-R tokenizer is installable offline: every family reads the Gemma 3 vocabulary (token counts of the
same texts), through a stand-in that adds the special tokens the family's checkpoint tokenizer adds: none for Qwen3
(its tokenizer adds no BOS), Gemma's own BOS for bge-reranker-v2-gemma, XLM-R's `<s> q </s></s> p </s>` pair
template for the cross-encoder. Ids are taken modulo each model's vocabulary.

Scoring (`BaselineScorer.score`): length-sorted batches, one forward, logits at the last position only (causal LMs:
left padding, logits_to_keep=1; cross-encoder: the regression logit), padded to a multiple of 8."""

from __future__ import annotations

import copy
import importlib.resources
from collections.abc import Sequence
from typing import Any

import torch
import yaml
from tokenizers import processors

from kalm_eval.knobs import from_mapping
from kalm_eval.rerank.bge_gemma import BgeGemmaInputs, BgeGemmaSettings
from kalm_eval.rerank.cross_encoder import CrossEncoderSettings
from kalm_eval.rerank.qwen3 import Qwen3Inputs, Qwen3Settings
from kalm_eval.testing.shapes import BASELINE_ROWS

# Baseline shape name -> its model preset (conf/model/<preset>.yaml)
PRESET = {"qwen3-reranker-0.6b": "qwen3_reranker_0.6b", "qwen3-reranker-4b": "qwen3_reranker_4b",
          "qwen3-reranker-8b": "qwen3_reranker_8b", "bge-reranker-v2-m3": "bge_reranker_v2_m3",
          "bge-reranker-v2-gemma": "bge_reranker_v2_gemma"}
SETTINGS = {"qwen3": Qwen3Settings, "bge_gemma": BgeGemmaSettings, "cross_encoder": CrossEncoderSettings}
XLMR_BOS, XLMR_EOS = 0, 2  # <s>, </s> in XLM-R's vocabulary


def preset_settings(name: str) -> Any:
    """The family settings of a baseline's preset (knobs validated; the hub source is not needed to build inputs)."""
    preset = PRESET[name]
    text = (importlib.resources.files("kalm_eval.conf") / "model" / f"{preset}.yaml").read_text(encoding="utf-8")
    return from_mapping(SETTINGS[BASELINE_ROWS[name][1]], yaml.safe_load(text), prefix="model")


def stand_in_tokenizer(tokenizer: Any, family: str) -> Any:
    """The benchmark's vocabulary with the special tokens the family's checkpoint tokenizer adds (module docstring)."""
    if family == "bge_gemma":
        return tokenizer
    out = copy.deepcopy(tokenizer)
    if family == "qwen3":
        template = processors.TemplateProcessing(single="$A", pair="$A $B", special_tokens=[])
    else:
        template = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                 special_tokens=[("<s>", XLMR_BOS), ("</s>", XLMR_EOS)])
    out.backend_tokenizer.post_processor = template
    return out


def cross_encoder_inputs(tokenizer: Any, triples: Sequence[tuple[str, str | None, str]],
                         settings: CrossEncoderSettings) -> list[list[int]]:
    """What CrossEncoder.predict tokenises: the (query, passage) pair template, longest_first to max_length."""
    if not triples:
        return []
    return tokenizer([q for q, _, _ in triples], [p for _, _, p in triples], truncation="longest_first",
                     max_length=settings.max_length)["input_ids"]


class BaselineScorer:
    """A baseline's online pass exactly as the harness's reranker runs it (module docstring)."""

    def __init__(self, name: str, model: torch.nn.Module, tokenizer: Any, device: torch.device, batch_size: int):
        self.name, self.model, self.device, self.batch_size = name, model, device, batch_size
        self.family = BASELINE_ROWS[name][1]
        self.vocab = int(model.config.vocab_size)
        self.settings = preset_settings(name)
        self.tokenizer = stand_in_tokenizer(tokenizer, self.family)
        if self.family == "qwen3":
            self.inputs: Any = Qwen3Inputs.build(self.tokenizer, self.settings)
        elif self.family == "bge_gemma":
            self.inputs = BgeGemmaInputs.build(self.tokenizer, self.settings)
        else:
            self.inputs = None

    def sequences(self, triples: Sequence[tuple[str, str | None, str]]) -> list[list[int]]:
        """Token ids of each (query, instruction, passage) in the family's layout, ids modulo the vocabulary."""
        if self.inputs is not None:
            seqs = self.inputs.encode(triples)
        else:
            seqs = cross_encoder_inputs(self.tokenizer, triples, self.settings)
        return [[i % self.vocab for i in s] for s in seqs]

    @torch.inference_mode()
    def score(self, sequences: list[list[int]]) -> list[float]:
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        out: dict[int, float] = {}
        left = self.family != "cross_encoder"
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            longest = max(len(sequences[i]) for i in rows)
            longest = -(-longest // 8) * 8
            ids = torch.zeros((len(rows), longest), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for j, i in enumerate(rows):
                s = torch.tensor(sequences[i])
                if left:
                    ids[j, longest - len(s):], mask[j, longest - len(s):] = s, 1
                else:
                    ids[j, : len(s)], mask[j, : len(s)] = s, 1
            ids, mask = ids.to(self.device, non_blocking=True), mask.to(self.device, non_blocking=True)
            if self.family == "cross_encoder":
                logits = self.model(input_ids=ids, attention_mask=mask).logits[:, 0].float()
            else:
                last = self.model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1, :]
                logits = (last[:, 1] - last[:, 0]).float()
            out.update(zip(rows, logits.cpu().tolist()))
        return [out[i] for i in range(len(sequences))]
