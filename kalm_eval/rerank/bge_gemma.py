"""BAAI/bge-reranker-v2-gemma: a Gemma-2B causal LM scored on its "Yes" logit, with FlagEmbedding's token layout
(FlagEmbedding/inference/reranker/decoder_only/base.py, `BaseLLMReranker.compute_score_single_gpu`, the class
`FlagLLMReranker` that FlagEmbedding maps this model to; read at FlagOpen/FlagEmbedding 7ed43d67, 2026-04-22).

Per (query, passage), all tokenised with add_special_tokens=False:
    q = tok("A: " + query,   truncation to query_max_length = max_length * 3 // 4 by default)
    p = tok("B: " + passage, truncation to max_length)
    sep = tok("\\n"), prompt = tok("Given a query A and a passage B, determine whether the passage contains an
          answer to the query by providing a prediction of either 'Yes' or 'No'.")
    first  = [bos] + q          ([bos] only when the tokenizer has a BOS distinct from its pad token)
    second = sep + p            cut from the tokenizer's truncation side (right) until
                                len(first) + len(second) <= max_length + len(sep) + len(prompt)
                                (`prepare_for_model(..., truncation='only_second')`)
    ids    = first + second + sep + prompt
Batches are padded by the tokenizer (its own side: Gemma's is left) to a multiple of 8. The score is the logit
of the token "Yes" (`tok("Yes")[0]`) at the last real position, in float32: margin = z_Yes (a single logit, not a
yes-no difference, exactly FlagEmbedding's raw score) and p_yes = sigmoid(z_Yes) (its `normalize=True`).

Defaults are FlagEmbedding's library defaults (max_length 512, query 3/4 of it). The model card's plain
transformers snippet differs: max_length 1024 and the `prepare_for_model` budget is max_length itself, without
len(sep) + len(prompt); set `model.max_length` to compare. This reimplements the layout with plain list slicing:
transformers 5 fast tokenizers no longer have `prepare_for_model`, and FlagEmbedding is not a dependency.
Instructions are ignored (the model has one fixed task prompt, `model.prompt`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from kalm_eval.checkpoints import tokenizer_fingerprint
from kalm_eval.errors import ConfigError
from kalm_eval.knobs import knob
from kalm_eval.storage import sha256_text

from kalm_eval.records import PairScore
from kalm_eval.rerank.base import Identity

from .hf_common import (
    TokenIdReranker,
    TORCH_DTYPES,
    BaselineModelSettings,
    parse_settings,
)

DEFAULT_PROMPT = ("Given a query A and a passage B, determine whether the passage contains an answer to the query "
                  "by providing a prediction of either 'Yes' or 'No'.")
QUERY_PREFIX = "A: "
PASSAGE_PREFIX = "B: "
SEP = "\n"
PAD_TO_MULTIPLE_OF = 8

SCORE_RULE = ("logit of token 'Yes' at the last real position, float32; margin = z_Yes (raw, not a difference); "
              "p_yes = sigmoid(z_Yes)")
TRUNCATION_RULE = ("'A: '+query to query_max_length, 'B: '+passage to max_length (each alone); then sep+passage "
                   "cut so that [bos]+query+sep+passage <= max_length+len(sep)+len(prompt); sep+prompt appended")


def prompt_template_sha256(prompt: str) -> str:
    return sha256_text("\x00".join(["[bos]", QUERY_PREFIX + "{query}", SEP, PASSAGE_PREFIX + "{passage}", SEP, prompt]))


@dataclass(frozen=True)
class BgeGemmaSettings(BaselineModelSettings):
    max_length: int = knob(512, minimum=8, doc="passage tokens ('B: ' included); FlagEmbedding's default 512")
    query_max_length: int | None = knob(None, minimum=1, doc="query tokens ('A: ' included); None = 3/4 max_length")
    prompt: str = knob(DEFAULT_PROMPT, doc="the fixed task prompt appended after the passage")
    attn_implementation: str = knob("sdpa", choices=("sdpa", "eager"), doc="attention kernel")

    @property
    def effective_query_max_length(self) -> int:
        return self.query_max_length if self.query_max_length is not None else self.max_length * 3 // 4


@dataclass(frozen=True)
class BgeGemmaInputs:
    """FlagEmbedding's token layout over a tokenizer (module docstring), with the settings' limits; the cost
    benchmark builds its bge-reranker-v2-gemma inputs with it too (kalm_eval/bench/baselines.py)."""

    tokenizer: Any
    query_max_length: int
    max_length: int
    bos_ids: list[int]
    sep_ids: list[int]
    prompt_ids: list[int]
    encode_max_length: int

    @classmethod
    def build(cls, tokenizer: Any, settings: BgeGemmaSettings) -> Self:
        prompt_ids = tokenizer(settings.prompt, add_special_tokens=False)["input_ids"]
        sep_ids = tokenizer(SEP, add_special_tokens=False)["input_ids"]
        bos = tokenizer.bos_token_id
        bos_ids = [bos] if bos is not None and bos != tokenizer.pad_token_id else []
        return cls(tokenizer, settings.effective_query_max_length, settings.max_length, bos_ids, sep_ids, prompt_ids,
                   settings.max_length + len(sep_ids) + len(prompt_ids))

    def encode(self, triples: Sequence[tuple[str, str | None, str]]) -> list[list[int]]:
        if not triples:
            return []
        queries = self.tokenizer([QUERY_PREFIX + query for query, _, _ in triples], add_special_tokens=False,
                                 max_length=self.query_max_length, truncation=True)["input_ids"]
        passages = self.tokenizer([PASSAGE_PREFIX + passage for _, _, passage in triples], add_special_tokens=False,
                                  max_length=self.max_length, truncation=True)["input_ids"]
        sequences = []
        for query_ids, passage_ids in zip(queries, passages):
            first = self.bos_ids + list(query_ids)
            second = self.sep_ids + list(passage_ids)
            excess = len(first) + len(second) - self.encode_max_length
            if excess > 0:
                if excess >= len(second):  # unreachable while query_max_length <= max_length
                    raise ValueError("query too long for FlagEmbedding's only_second truncation")
                second = second[:-excess] if self.tokenizer.truncation_side == "right" else second[excess:]
            sequences.append(first + second + self.sep_ids + self.prompt_ids)
        return sequences


class BgeGemmaReranker(TokenIdReranker):
    name = "bge_gemma"

    def __init__(self, settings: BgeGemmaSettings, *, batch_size: int) -> None:
        if settings.effective_query_max_length > settings.max_length:
            # Keeps FlagEmbedding's only_second truncation well defined (the query can never eat the budget).
            raise ConfigError(f"model.query_max_length={settings.query_max_length}: must be <= model.max_length="
                              f"{settings.max_length}")
        super().__init__(settings, batch_size=batch_size)
        self.tokenizer = AutoTokenizer.from_pretrained(self.source.load_from, revision=self.source.revision)
        if self.tokenizer.pad_token_id is None:
            raise ValueError(f"{self.source.checkpoint}: the tokenizer has no pad token (FlagEmbedding pads with it)")
        self.model = AutoModelForCausalLM.from_pretrained(
            self.source.load_from, revision=self.source.revision, dtype=TORCH_DTYPES[self.dtype],
            attn_implementation=settings.attn_implementation,
        ).eval().requires_grad_(False).to(self.device)
        yes = self.tokenizer("Yes", add_special_tokens=False)["input_ids"]
        if len(yes) != 1:
            raise ValueError(f"{self.source.checkpoint}: 'Yes' must be one token, got ids {yes}")
        self.yes_id = int(yes[0])
        self.inputs = BgeGemmaInputs.build(self.tokenizer, settings)

    @classmethod
    def from_config(cls, model: Mapping[str, Any], *, batch_size: int) -> Self:
        """Validate `model` (conf/model/bge_reranker_v2_gemma.yaml) and load the checkpoint."""
        return cls(parse_settings(BgeGemmaSettings, model, family=cls.name), batch_size=batch_size)

    def identity(self) -> Identity:
        s = self.settings
        return Identity(self.name, checkpoint={
            **self.source.identity(),
            "tokenizer_fingerprint": tokenizer_fingerprint(self.tokenizer),
            "dtype": self.dtype,
            "attn_implementation": s.attn_implementation,
        }, inputs={
            "max_length": s.max_length,
            "query_max_length": s.effective_query_max_length,
            "prompt_template_sha256": prompt_template_sha256(s.prompt),
            "bos_prepended": bool(self.inputs.bos_ids),
            "truncation": TRUNCATION_RULE,
            "padding": f"{self.tokenizer.padding_side}, pad_to_multiple_of={PAD_TO_MULTIPLE_OF}",
            "instruction": "ignored (one fixed task prompt: model.prompt)",
            "yes_id": self.yes_id,
            "score": SCORE_RULE,
        })

    def encode(self, triples: Sequence[tuple[str, str | None, str]]) -> list[list[int]]:
        """Token ids of each pair in FlagEmbedding's layout (see the module docstring)."""
        return self.inputs.encode(triples)

    @torch.inference_mode()
    def _score_batch(self, sequences: list[list[int]]) -> list[PairScore]:
        batch = self.tokenizer.pad({"input_ids": sequences, "attention_mask": [[1] * len(ids) for ids in sequences]},
                                   padding=True, pad_to_multiple_of=PAD_TO_MULTIPLE_OF, return_tensors="pt")
        input_ids = batch["input_ids"].to(self.device)
        mask = batch["attention_mask"].to(self.device)
        if bool(mask[:, -1].all()):  # left padding (Gemma's): every row ends on a real token
            last = self.model(input_ids=input_ids, attention_mask=mask, logits_to_keep=1).logits[:, -1, :]
        else:  # right padding: the last real token of each row (FlagEmbedding's last_logit_pool)
            logits = self.model(input_ids=input_ids, attention_mask=mask).logits
            last = logits[torch.arange(len(sequences), device=self.device), mask.sum(dim=1) - 1]
        z_yes = last[:, self.yes_id].float().tolist()
        with np.errstate(over="ignore"):
            return [PairScore(margin=z, p_yes=float(1 / (1 + np.exp(-z)))) for z in z_yes]


def parse_model(values: Mapping[str, Any]) -> BgeGemmaSettings:
    """The `model` config group of the bge_gemma reranker, validated (the registry's parser)."""
    return parse_settings(BgeGemmaSettings, values, family="bge_gemma")
