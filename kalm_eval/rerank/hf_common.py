"""Plumbing shared by the Hugging Face baseline rerankers (qwen3, cross_encoder, bge_gemma).

Each family validates its `model` config with a frozen settings dataclass (fields of `BaselineModelSettings`
plus its own), resolves where the weights come from and what identifies them, and scores in length-sorted
batches with the CUDA-OOM back-off the KaLM scorer uses. The rules, as for the KaLM loader (fbnl/model.py,
whose helpers are imported here rather than copied):

* a local `path` wins over `hf_id`; its identity is the content fingerprint of its weight files, never the path;
* a hub id must come with a pinned revision (a 40-hex commit hash: branch names move, so they identify nothing);
* `dtype` is "auto" (bfloat16 on CUDA, float32 on CPU), "bfloat16" or "float32"; float16 is refused up front,
  with the same message as the KaLM loader, before any file is read.

The dtype/device rules and the fingerprints are kalm_eval.checkpoints', shared with the KaLM loader.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from kalm_eval.checkpoints import FP16_MESSAGE, FP16_NAMES, local_weights_fingerprint, resolve_device, resolve_dtype
from kalm_eval.errors import ConfigError
from kalm_eval.fbnl.batching import order_longest_first, run_in_batches
from kalm_eval.knobs import from_mapping, knob
from kalm_eval.records import PairScore

from .base import PairwiseReranker

S = TypeVar("S", bound="BaselineModelSettings")

COMMIT_HASH = re.compile(r"^[0-9a-f]{40}$")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
OOM_ERRORS: tuple[type[BaseException], ...] = tuple(
    e for e in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)) if e
)


@dataclass(frozen=True)
class BaselineModelSettings:
    """The `model` settings every baseline family shares (conf/model/<preset>.yaml)."""

    name: str = knob(doc="preset label, e.g. qwen3_reranker_4b")
    family: str = knob(doc="reranker family that reads this preset: qwen3 | cross_encoder | bge_gemma")
    hf_id: str | None = knob(None, doc="Hugging Face hub id; needs `revision`")
    revision: str | None = knob(None, doc="pinned hub commit (40 hex characters)")
    path: str | None = knob(None, doc="local checkpoint directory; wins over hf_id")
    dtype: str = knob("auto", choices=("auto", "bfloat16", "float32"),
                      doc="auto = bfloat16 on CUDA, float32 on CPU; float16 is refused")
    device: str = knob("auto", logged=True, doc="auto | cpu | cuda | cuda:N | mps")
    max_length: int = knob(512, minimum=8, doc="token budget of one scored sequence (family-specific meaning)")
    paper_row: str | None = knob(None, logged=True, doc="the published row of this checkpoint (results/paper)")

    def hub_source(self) -> tuple[str, str | None] | None:
        """(hub id, revision) when the checkpoint comes from the hub; None for model.path."""
        return (self.hf_id, self.revision) if self.path is None and self.hf_id is not None else None


def parse_settings(cls: type[S], model: Mapping[str, Any] | None, *, family: str) -> S:
    """Validate a model config for `family`: fp16 refused first, unknown keys and bad values named, source checked."""
    values = dict(model or {})
    dtype = values.get("dtype")
    if isinstance(dtype, str) and dtype.strip().lower() in FP16_NAMES:
        raise ConfigError(f"model.dtype={dtype!r}: float16 is not supported. {FP16_MESSAGE}")
    settings = from_mapping(cls, values, prefix="model")
    if settings.family != family:
        raise ConfigError(f"model.family={settings.family!r}: this preset is read by the {family!r} reranker, "
                          f"which needs family: {family}")
    if not DEVICE_PATTERN.match(settings.device):
        raise ConfigError(f"model.device={settings.device!r}: must be auto, cpu, mps, cuda or cuda:N")
    resolve_source(settings, fingerprint=False)  # fail on a bad source before anything is loaded
    return settings


@dataclass(frozen=True)
class CheckpointSource:
    """Where to load from (never recorded) and what identifies the weights (recorded)."""

    load_from: str  # local directory or hub id
    revision: str | None  # hub commit; None for a local directory
    checkpoint: str  # identity label: the hub id, or "local"
    weights_fingerprint: str  # "hf:<id>@<commit>" or "sha256:<content hash of the weight files>"

    def identity(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "revision": self.revision,
                "weights_fingerprint": self.weights_fingerprint}


def resolve_source(settings: BaselineModelSettings, *, fingerprint: bool = True) -> CheckpointSource:
    """Local path (content fingerprint) over hub id (pinned commit); ConfigError naming the knob otherwise."""
    if settings.path is not None:
        directory = Path(settings.path).expanduser()
        if not directory.is_dir():
            raise ConfigError(f"model.path={settings.path!r}: not a directory")
        weights = "unchecked"
        if fingerprint:
            try:
                weights = local_weights_fingerprint(directory)
            except FileNotFoundError as err:
                raise ConfigError(f"model.path={settings.path!r}: {err}") from err
        # The hub id, when given, labels the local copy; the fingerprint is what identifies it.
        return CheckpointSource(str(directory), None, settings.hf_id or "local", weights)
    if settings.hf_id is None:
        raise ConfigError("model.hf_id: required when model.path is not set (give a hub id + revision, or a path)")
    if settings.revision is None or not COMMIT_HASH.match(settings.revision):
        raise ConfigError(f"model.revision={settings.revision!r}: {settings.hf_id} needs a pinned revision, a "
                          "40-character commit hash (branch names move); or set model.path to a local copy")
    return CheckpointSource(settings.hf_id, settings.revision, settings.hf_id,
                            f"hf:{settings.hf_id}@{settings.revision}")


def resolve_device_dtype(settings: BaselineModelSettings) -> tuple[torch.device, str]:
    """The device and dtype name "auto" stands for, by the KaLM loader's rules (bf16 on CUDA, fp32 on CPU)."""
    return resolve_device(settings.device), resolve_dtype(settings.dtype, settings.device)


def describe(device: torch.device, dtype: str) -> dict[str, Any]:
    """{"device": "cpu" | "cuda:0 (NVIDIA H200)", "dtype": ...} for latency records."""
    label = str(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        label = f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return {"device": label, "dtype": dtype}


def single_token_id(tokenizer: Any, token: str) -> int:
    """Vocabulary id of `token` looked up as a token string (not encoded text), refusing unknown tokens."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or (tokenizer.unk_token_id is not None and token_id == tokenizer.unk_token_id):
        raise ValueError(f"the tokenizer has no {token!r} token; the score is defined on it")
    return int(token_id)


class CheckpointReranker(PairwiseReranker):
    """A pairwise reranker over one Hugging Face checkpoint: its validated settings, where the weights come from
    (and what identifies them), the device and dtype it runs in."""

    def __init__(self, settings: BaselineModelSettings, *, batch_size: int) -> None:
        if batch_size < 1:
            raise ConfigError(f"reranker.batch_size={batch_size!r}: must be >= 1")
        self.settings = settings
        self.batch_size = batch_size
        self.source = resolve_source(settings)
        self.device, self.dtype = resolve_device_dtype(settings)

    def describe_device(self) -> dict[str, Any]:
        return describe(self.device, self.dtype)


class TokenIdReranker(CheckpointReranker):
    """Families that lay out each pair's token ids themselves (their authors' code does) and score them in
    batches sorted longest first, with the CUDA out-of-memory back-off."""

    @abstractmethod
    def encode(self, triples: Sequence[tuple[str, str | None, str]]) -> list[list[int]]:
        """The token ids of each (query, instruction or None, passage), exactly as the family's reference code."""

    @abstractmethod
    def _score_batch(self, sequences: list[list[int]]) -> list[PairScore]:
        """Scores of one batch of token id sequences."""

    def score_pairs(self, triples: Sequence[tuple[str, str | None, str]]) -> list[PairScore]:
        sequences = self.encode(triples)
        lengths = [len(ids) for ids in sequences]
        by_index = run_in_batches(order_longest_first(lengths), self.batch_size,
                                  lambda chunk: self._score_batch([sequences[i] for i in chunk]), lengths=lengths)
        return [by_index[i] for i in range(len(sequences))]
