"""Plain cross-encoders (bge-reranker-v2-m3, gte-multilingual-reranker-base, jina-reranker-v2-base-multilingual,
mxbai-rerank-large-v1): scored through sentence-transformers itself, `CrossEncoder.predict`, as their cards show.

What predict returns (sentence-transformers 6.x, `CrossEncoder.get_default_activation_fn`): for a model with
num_labels=1 the default activation is the one saved in the checkpoint's config (`sentence_transformers.
activation_fn`, or the pre-v4 `sbert_ce_default_activation_function`), else `torch.nn.Sigmoid`. So
`predict(pairs)` is usually sigmoid(logit), but e.g. the ms-marco cross-encoders save Identity and return raw
logits. This module never relies on the default: it calls `predict(..., activation_fn=torch.nn.Identity())`,
takes that raw logit as the margin (the ranking score) and applies `torch.sigmoid` to the same float32 tensor,
on the same device, for p_yes. Where the default activation is Sigmoid, p_yes is therefore bit-for-bit what a
plain `predict(pairs)` returns. The default activation is recorded in `identity()`.

Input: the (query, passage) pair through the model's own tokenizer pair encoding, truncation="longest_first" to
`max_length` tokens (special tokens included), as sentence-transformers does. Instructions are ignored: these
models take no instruction (mteb's BGE/Jina wrappers append one to the query; the cards do not).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import torch

from kalm_eval.checkpoints import tokenizer_fingerprint
from kalm_eval.errors import ConfigError
from kalm_eval.knobs import knob

from kalm_eval.records import PairScore
from kalm_eval.rerank.base import Identity

from .hf_common import (
    CheckpointReranker,
    OOM_ERRORS,
    TORCH_DTYPES,
    BaselineModelSettings,
    parse_settings,
)

SCORE_RULE = ("margin = the raw relevance logit (CrossEncoder.predict with activation_fn=Identity, float32); "
              "p_yes = sigmoid(margin)")
INPUT_RULE = "(query, passage) tokenizer pair encoding, truncation='longest_first' to max_length; instruction ignored"


@dataclass(frozen=True)
class CrossEncoderSettings(BaselineModelSettings):
    max_length: int = knob(512, minimum=8, doc="pair tokens incl. special tokens (per model; see presets)")
    trust_remote_code: bool = knob(False, doc="run the checkpoint's own modelling code (gte, jina need it)")


class CrossEncoderReranker(CheckpointReranker):
    name = "cross_encoder"

    def __init__(self, settings: CrossEncoderSettings, *, batch_size: int) -> None:
        from sentence_transformers import CrossEncoder  # heavy import only when this family is used

        super().__init__(settings, batch_size=batch_size)
        self.model = CrossEncoder(
            self.source.load_from,
            revision=self.source.revision,
            device=str(self.device),
            max_length=settings.max_length,
            trust_remote_code=settings.trust_remote_code,
            model_kwargs={"dtype": TORCH_DTYPES[self.dtype]},
        )
        self.model.eval()
        if self.model.num_labels != 1:
            raise ConfigError(f"model: {self.source.checkpoint} has num_labels={self.model.num_labels}; the "
                              "cross_encoder family needs a single relevance logit")
        if self.model.max_seq_length != settings.max_length:
            raise ValueError(f"{self.source.checkpoint}: sentence-transformers kept max_seq_length="
                             f"{self.model.max_seq_length}, not model.max_length={settings.max_length}")
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if isinstance(positions, int) and positions > 0 and settings.max_length > positions:
            raise ConfigError(f"model.max_length={settings.max_length}: exceeds the model's "
                              f"max_position_embeddings={positions}")
        activation = self.model.activation_fn
        self.default_activation = f"{type(activation).__module__}.{type(activation).__qualname__}"

    @classmethod
    def from_config(cls, model: Mapping[str, Any], *, batch_size: int) -> Self:
        """Validate `model` (conf/model/<cross-encoder preset>.yaml) and load the checkpoint."""
        return cls(parse_settings(CrossEncoderSettings, model, family=cls.name), batch_size=batch_size)

    def identity(self) -> Identity:
        s = self.settings
        return Identity(self.name, checkpoint={
            **self.source.identity(),
            "tokenizer_fingerprint": tokenizer_fingerprint(self.model.tokenizer),
            "dtype": self.dtype,
            "trust_remote_code": s.trust_remote_code,
        }, inputs={
            "max_length": s.max_length,
            "input": INPUT_RULE,
            "instruction": "ignored (a plain cross-encoder reads only the query and the passage)",
            "prompt_template_sha256": None,  # no prompt: the tokenizer's own pair layout
            "predict_default_activation": self.default_activation,
            "score": SCORE_RULE,
        })

    def score_pairs(self, triples: Sequence[tuple[str, str | None, str]]) -> list[PairScore]:
        if not triples:
            return []
        pairs = [(query, passage) for query, _instruction, passage in triples]
        logits = self._predict_logits(pairs)
        p_yes = torch.sigmoid(logits)  # same tensor, same device as predict's own Sigmoid would see
        return [PairScore(margin=float(m), p_yes=float(p)) for m, p in zip(logits.tolist(), p_yes.tolist())]

    def _predict_logits(self, pairs: list[tuple[str, str]]) -> torch.Tensor:
        """Raw logits from predict (which sorts by length and batches itself); the batch shrinks x3/4 on OOM."""
        batch_size = self.batch_size
        while True:
            try:
                logits = self.model.predict(pairs, batch_size=batch_size, activation_fn=torch.nn.Identity(),
                                            convert_to_tensor=True, show_progress_bar=False)
                return logits.float().reshape(len(pairs))
            except OOM_ERRORS:
                if batch_size == 1:
                    raise
                torch.cuda.empty_cache()
                batch_size = max(1, batch_size * 3 // 4)


def parse_model(values: Mapping[str, Any]) -> CrossEncoderSettings:
    """The `model` config group of the cross_encoder reranker, validated (the registry's parser)."""
    return parse_settings(CrossEncoderSettings, values, family="cross_encoder")
