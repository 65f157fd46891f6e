"""Qwen3-Reranker-{0.6B, 4B, 8B}: a causal LM judging "yes"/"no" after a chat prompt, scored exactly as the
authors' transformers code (QwenLM/Qwen3-Embedding examples/qwen3_reranker_transformers.py, the model card) and
mteb's wrapper (`mteb.models.model_implementations.qwen3_reranker.Qwen3RerankerWrapper`, mteb 2.26) do:

* input ids = prefix + body + suffix, where
  prefix = "<|im_start|>system\\nJudge whether the Document meets the requirements based on the Query and the
  Instruct provided. Note that the answer can only be \\"yes\\" or \\"no\\".<|im_end|>\\n<|im_start|>user\\n",
  body   = "<Instruct>: {instruction}\\n<Query>: {query}\\n<Document>: {doc}",
  suffix = "<|im_end|>\\n<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n";
  prefix and suffix are tokenised alone (no special tokens added); the body is tokenised with the tokenizer's
  defaults, truncation="longest_first", max_length = max_length - len(prefix) - len(suffix): only the body's
  tail is cut (for a long document, its end; the prefix and suffix always survive). max_length = 8192.
* left padding with pad = eos ("<|im_end|>"), one forward pass, logits at the last position;
  z_yes, z_no = the logits of the tokens "yes" and "no" (`convert_tokens_to_ids`), upcast to float32;
  P(yes) = exp(log_softmax([z_no, z_yes])[1]) (the authors' formula), margin = z_yes - z_no (ranks identically,
  never saturates).

Default instruction (a triple's instruction is None):
  model card / official code: "Given a web search query, retrieve relevant passages that answer the query"
  mteb's wrapper:             "Given the user query, retrieval the relevant passages"   (sic, its own wording)
They differ; this harness uses the model card's (the authors') by default and records it in `identity()`; set
`model.default_instruction` to mteb's text to reproduce mteb runs that pass no instruction.

Differences from the reference code that do not change a score beyond float rounding (tests check 1e-5):
pairs are sorted by length before batching (the references batch in input order), and only the last position's
logits are computed (`logits_to_keep=1`; the references materialise [batch, length, 151k] logits).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

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
    single_token_id,
)

PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
BODY_TEMPLATE = "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"

MODEL_CARD_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
MTEB_DEFAULT_INSTRUCTION = "Given the user query, retrieval the relevant passages"  # mteb 2.26 wrapper, verbatim

SCORE_RULE = ("last position (left padding); z_yes, z_no = logits of tokens 'yes'/'no' in float32; "
              "p_yes = exp(log_softmax([z_no, z_yes])[1]); margin = z_yes - z_no")
TRUNCATION_RULE = ("body tokenised with truncation='longest_first' to max_length - len(prefix) - len(suffix) "
                   "tokens; prefix and suffix never truncated")


def prompt_template_sha256() -> str:
    return sha256_text("\x00".join([PREFIX, BODY_TEMPLATE, SUFFIX]))


def format_body(query: str, instruction: str, doc: str) -> str:
    return BODY_TEMPLATE.format(instruction=instruction, query=query, doc=doc)


@dataclass(frozen=True)
class Qwen3Settings(BaselineModelSettings):
    max_length: int = knob(8192, minimum=64, doc="prompt + body + suffix tokens (the authors' 8192)")
    default_instruction: str = knob(MODEL_CARD_INSTRUCTION, doc="used when a query has no instruction")
    attn_implementation: str = knob("sdpa", choices=("sdpa", "eager"), doc="attention kernel")


@dataclass(frozen=True)
class Qwen3Inputs:
    """The authors' input layout over a tokenizer (module docstring): prefix + body + suffix, the body cut to
    `body_max_length`. Built from the settings, so the limits are the preset's; the cost benchmark builds its
    baselines' inputs with it too (kalm_eval/bench/baselines.py)."""

    tokenizer: Any
    prefix_ids: list[int]
    suffix_ids: list[int]
    body_max_length: int
    default_instruction: str

    @classmethod
    def build(cls, tokenizer: Any, settings: Qwen3Settings) -> Self:
        prefix_ids = tokenizer.encode(PREFIX, add_special_tokens=False)
        suffix_ids = tokenizer.encode(SUFFIX, add_special_tokens=False)
        body_max_length = settings.max_length - len(prefix_ids) - len(suffix_ids)
        if body_max_length < 1:
            raise ConfigError(f"model.max_length={settings.max_length}: leaves no room for the body after the "
                              f"{len(prefix_ids) + len(suffix_ids)} prompt tokens")
        return cls(tokenizer, prefix_ids, suffix_ids, body_max_length, settings.default_instruction)

    def encode(self, triples: Sequence[tuple[str, str | None, str]]) -> list[list[int]]:
        default = self.default_instruction
        bodies = [format_body(query, default if instruction is None else instruction, doc)
                  for query, instruction, doc in triples]
        if not bodies:
            return []
        encoded = self.tokenizer(bodies, padding=False, truncation="longest_first", return_attention_mask=False,
                                 max_length=self.body_max_length)["input_ids"]
        return [self.prefix_ids + list(ids) + self.suffix_ids for ids in encoded]


class Qwen3Reranker(TokenIdReranker):
    name = "qwen3"

    def __init__(self, settings: Qwen3Settings, *, batch_size: int) -> None:
        super().__init__(settings, batch_size=batch_size)
        revision = self.source.revision
        self.tokenizer = AutoTokenizer.from_pretrained(self.source.load_from, revision=revision,
                                                       padding_side="left")
        if self.tokenizer.eos_token is None:
            raise ValueError(f"{self.source.checkpoint}: the tokenizer has no EOS token (used as padding)")
        self.tokenizer.padding_side = "left"
        self.tokenizer.pad_token = self.tokenizer.eos_token  # as the authors do
        self.model = AutoModelForCausalLM.from_pretrained(
            self.source.load_from, revision=revision, dtype=TORCH_DTYPES[self.dtype],
            attn_implementation=settings.attn_implementation,
        ).eval().requires_grad_(False).to(self.device)
        self.yes_id = single_token_id(self.tokenizer, "yes")
        self.no_id = single_token_id(self.tokenizer, "no")
        self.inputs = Qwen3Inputs.build(self.tokenizer, settings)

    @classmethod
    def from_config(cls, model: Mapping[str, Any], *, batch_size: int) -> Self:
        """Validate `model` (conf/model/qwen3_*.yaml) and load the checkpoint."""
        return cls(parse_settings(Qwen3Settings, model, family=cls.name), batch_size=batch_size)

    def identity(self) -> Identity:
        s = self.settings
        instruction_source = {MODEL_CARD_INSTRUCTION: "Qwen3-Reranker model card",
                              MTEB_DEFAULT_INSTRUCTION: "mteb Qwen3RerankerWrapper"}.get(s.default_instruction,
                                                                                         "custom")
        return Identity(self.name, checkpoint={
            **self.source.identity(),
            "tokenizer_fingerprint": tokenizer_fingerprint(self.tokenizer),
            "dtype": self.dtype,
            "attn_implementation": s.attn_implementation,
        }, inputs={
            "max_length": s.max_length,
            "prompt_template_sha256": prompt_template_sha256(),
            "default_instruction": s.default_instruction,
            "default_instruction_source": instruction_source,
            "truncation": TRUNCATION_RULE,
            "padding": "left, pad = eos",
            "yes_id": self.yes_id,
            "no_id": self.no_id,
            "score": SCORE_RULE,
        })

    def encode(self, triples: Sequence[tuple[str, str | None, str]]) -> list[list[int]]:
        """Token ids of each pair exactly as the authors build them (prefix + truncated body + suffix)."""
        return self.inputs.encode(triples)

    @torch.inference_mode()
    def _score_batch(self, sequences: list[list[int]]) -> list[PairScore]:
        batch = self.tokenizer.pad({"input_ids": sequences}, padding=True, return_tensors="pt")
        logits = self.model(input_ids=batch["input_ids"].to(self.device),
                            attention_mask=batch["attention_mask"].to(self.device), logits_to_keep=1).logits[:, -1, :]
        pair = torch.stack([logits[:, self.no_id], logits[:, self.yes_id]], dim=1).float()
        p_yes = torch.nn.functional.log_softmax(pair, dim=1)[:, 1].exp()
        margin = pair[:, 1] - pair[:, 0]
        return [PairScore(margin=float(m), p_yes=float(p)) for m, p in zip(margin.tolist(), p_yes.tolist())]


def parse_model(values: Mapping[str, Any]) -> Qwen3Settings:
    """The `model` config group of the qwen3 reranker, validated (the registry's parser)."""
    return parse_settings(Qwen3Settings, values, family="qwen3")
