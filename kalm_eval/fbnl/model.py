"""Loading KaLM-Reranker-V1 (T5Gemma 2 encoder-decoder) checkpoints into a `LoadedModel`.

`load_model(spec)` reads a real checkpoint from the Hugging Face hub (pinned revision; works offline from the local
HF cache with HF_HUB_OFFLINE=1) or from `spec.path`. Random models (the tiny offline model, real-shape cost
models) are built in fbnl/synthetic.py and kalm_eval/testing/ and finished here by `finish_model`.

Vision tower (decision): T5Gemma 2 always builds a SigLIP tower (~418M parameters, ~1.7 GB in fp32) that
text-only reranking never runs. `load_model` therefore replaces the checkpoint's `vision_config` with a tiny one
(1 layer, width 32) before loading and tells `from_pretrained` to skip the vision tensors that no longer fit
(`ignore_mismatched_sizes=True`). The model stays a stock `T5Gemma2ForConditionalGeneration` (so the plain HF
forward still works for reference checks), and we verify after loading that *only* vision-tower/projector
tensors were skipped or re-initialised — any other missing/mismatched key raises, so the flag can never hide a
broken text checkpoint. Dropping the tower after a normal load would have paid the full load cost first.
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PreTrainedTokenizerBase,
    T5Gemma2Config,
    T5Gemma2ForConditionalGeneration,
)

from kalm_eval.checkpoints import local_weights_fingerprint, tokenizer_fingerprint
from kalm_eval.storage import canonical_json

from . import attention  # noqa: F401  (registers attn_implementation="grouped" with transformers)
from .spec import ModelSpec

log = logging.getLogger(__name__)

# Tiny SigLIP config that replaces the real 418M-parameter tower (text-only use never runs it).
# image 28 / patch 14 = 2x2 patches; mm_tokens_per_image=4 keeps the projector's pooling kernel at 1.
TINY_VISION_CONFIG = dict(
    model_type="siglip_vision_model",
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=1,
    image_size=28,
    patch_size=14,
)
TINY_MM_TOKENS_PER_IMAGE = 4
_VISION_KEY_MARKERS = ("vision_tower", "multi_modal_projector")


@dataclass
class LoadedModel:
    """A ready-to-use model: weights in eval mode on `device`, a right-padding tokenizer, answer token ids."""

    model: T5Gemma2ForConditionalGeneration
    tokenizer: PreTrainedTokenizerBase
    yes_id: int
    no_id: int
    identity: dict[str, Any]  # everything about the weights/tokenizer that affects numbers (no local paths)
    d_model: int
    spec: ModelSpec
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32

    @property
    def encoder_identity(self) -> dict[str, Any]:
        """What the passage cache is keyed on: the encoder only (decoder weights do not change passage states)."""
        keys = ("encoder_fingerprint", "tokenizer_fingerprint", "dtype", "attn_implementation")
        return {k: self.identity[k] for k in keys}

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write weights + config + tokenizer so that `load_model(ModelSpec(path=directory))` reloads them."""
        directory = Path(directory)
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        return directory


# ---------------------------------------------------------------------------------------------------------------
# Loading real checkpoints
# ---------------------------------------------------------------------------------------------------------------


def checkpoint_source(spec: ModelSpec) -> tuple[str, str | None]:
    """Where a real checkpoint loads from: `spec.path` (a local directory, no revision) or the hub id at its pin."""
    return (str(spec.local_path), None) if spec.path is not None else (spec.hf_id, spec.revision)


def load_tokenizer(spec: ModelSpec) -> PreTrainedTokenizerBase:
    """The model's tokenizer alone, prepared as the model's is (kalm-eval-plan counts tokens with it)."""
    if spec.synthetic:
        from .tiny_tokenizer import build_tiny_tokenizer

        return prepare_tokenizer(build_tiny_tokenizer())
    source, revision = checkpoint_source(spec)
    return prepare_tokenizer(AutoTokenizer.from_pretrained(source, revision=revision))


def load_model(spec: ModelSpec) -> LoadedModel:
    """Load a checkpoint: `spec.path` (a local directory) or the hub id at its pinned revision."""
    if spec.synthetic:
        raise ValueError(f"model {spec.name!r} is synthetic: build it with kalm_eval.fbnl.synthetic.build_model")
    source, revision = checkpoint_source(spec)
    config = AutoConfig.from_pretrained(source, revision=revision)
    if getattr(config, "model_type", None) != "t5gemma2":
        raise ValueError(f"{source} is a {getattr(config, 'model_type', '?')!r} checkpoint, expected 't5gemma2'")
    _shrink_vision_config(config)

    with _quiet_transformers():
        model, info = AutoModelForSeq2SeqLM.from_pretrained(
            source,
            revision=revision,
            config=config,
            dtype=spec.torch_dtype(),
            attn_implementation=spec.resolved_attn_implementation(),
            ignore_mismatched_sizes=True,  # only the (shrunk) vision tower may mismatch; checked right below
            output_loading_info=True,
        )
    _check_only_vision_keys_skipped(info, source)
    tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)

    if spec.path is not None:
        weights_fingerprint = local_weights_fingerprint(spec.local_path)
        # No local path in the identity (machine-specific); the content fingerprint identifies the weights.
        checkpoint = spec.hf_id or "local"
    else:
        # A hub revision is a commit hash: immutable, so it identifies the weights.
        weights_fingerprint = f"hf:{spec.hf_id}@{spec.revision}"
        checkpoint = spec.hf_id
    return finish_model(model, tokenizer, spec, checkpoint=checkpoint, revision=revision,
                   weights_fingerprint=weights_fingerprint)


def _shrink_vision_config(config: T5Gemma2Config) -> None:
    vision_cls = type(config.encoder.vision_config)
    config.encoder.vision_config = vision_cls(**{k: v for k, v in TINY_VISION_CONFIG.items() if k != "model_type"})
    config.encoder.mm_tokens_per_image = TINY_MM_TOKENS_PER_IMAGE


def _check_only_vision_keys_skipped(info: dict[str, Any], source: str) -> None:
    def is_vision(key: str) -> bool:
        return any(marker in key for marker in _VISION_KEY_MARKERS)

    problems = [k for k in info.get("missing_keys", []) if not is_vision(k)]
    problems += [k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", [])
                 if not is_vision(k[0] if isinstance(k, tuple) else k)]
    if problems or info.get("error_msgs"):
        raise ValueError(f"{source}: text weights missing or mismatched: {problems[:10]} {info.get('error_msgs')}")
    skipped = len(info.get("unexpected_keys", [])) + len(info.get("mismatched_keys", []))
    if skipped:
        log.info("%s: skipped %d vision-tower tensors (text-only use)", source, skipped)


@contextmanager
def _quiet_transformers():
    """from_pretrained prints a long table of the skipped vision tensors; we summarise it ourselves."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)
        if bars:
            hf_logging.enable_progress_bar()


# ---------------------------------------------------------------------------------------------------------------
# Shared finishing steps: answer ids, fingerprints, device
# ---------------------------------------------------------------------------------------------------------------


def answer_token_id(tokenizer: PreTrainedTokenizerBase, word: str) -> int:
    """The single token id of `word` ("yes"/"no"); the score is defined on exactly one token each."""
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"answer word {word!r} must encode to exactly one token, got token ids {ids}")
    if tokenizer.unk_token_id is not None and ids[0] == tokenizer.unk_token_id:
        raise ValueError(f"answer word {word!r} is unknown to the tokenizer (token ids {ids} = unk)")
    return int(ids[0])


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Right padding always (the Gemma 3 GGUF tokenizer defaults to left); pad = the tokenizer's pad, else EOS."""
    tokenizer.padding_side = "right"
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer defines neither a pad token nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def encoder_fingerprint(model: T5Gemma2ForConditionalGeneration) -> str:
    """Fingerprint of the text encoder's weights (+ its config): the identity the passage cache is keyed on.

    Content, not file names: the same encoder weights give the same key however they were loaded (hub, local
    dir, re-saved copy), and a checkpoint whose decoder differs still shares the cache. Per tensor we hash its
    name, dtype, shape, a wrap-around 64-bit sum of all its bytes (every bit counts; runs at memory speed,
    ~0.1 s/GB, where sha256 of all bytes took ~5 s/GB on this machine) and 16 evenly spaced 4 KiB slices.
    Strong against accidental mix-ups, not against deliberately crafted collisions."""
    text_encoder = model.get_encoder().text_model
    digest = hashlib.sha256()
    config = text_encoder.config.to_dict()
    for volatile in ("_name_or_path", "transformers_version", "dtype", "torch_dtype", "architectures",
                     "_attn_implementation_autoset", "dropout_rate", "attention_dropout"):
        config.pop(volatile, None)
    digest.update(canonical_json(config).encode())
    for name, tensor in sorted(text_encoder.state_dict().items()):
        if name.endswith(("inv_freq", "embed_scale")):  # derived from the config, not weights
            continue
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(_tensor_content_digest(tensor))
    return "sha256:" + digest.hexdigest()


def _tensor_content_digest(tensor: torch.Tensor, samples: int = 16, sample_bytes: int = 4096) -> bytes:
    raw = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
    whole_words = len(raw) // 8 * 8
    word_sum = int(raw[:whole_words].view(np.uint64).sum(dtype=np.uint64)) if whole_words else 0
    tail = raw[whole_words:].tobytes()
    stride = max(1, len(raw) // samples)
    sampled = b"".join(raw[i : i + sample_bytes].tobytes() for i in range(0, len(raw), stride)[:samples])
    return hashlib.sha256(word_sum.to_bytes(8, "little") + tail + sampled).digest()


def finish_model(
    model: T5Gemma2ForConditionalGeneration,
    tokenizer: PreTrainedTokenizerBase,
    spec: ModelSpec,
    *,
    checkpoint: str,
    revision: str | None,
    weights_fingerprint: str,
) -> LoadedModel:
    tokenizer = prepare_tokenizer(tokenizer)
    yes_id, no_id = answer_token_id(tokenizer, "yes"), answer_token_id(tokenizer, "no")
    model.eval().requires_grad_(False)
    d_model = int(model.config.decoder.hidden_size)
    vocab = int(model.config.decoder.vocab_size)
    if max(yes_id, no_id) >= vocab:
        raise ValueError(f"answer ids yes={yes_id} no={no_id} outside the model vocabulary ({vocab})")
    identity = {
        "checkpoint": checkpoint,
        "revision": revision,
        "dtype": spec.resolved_dtype(),
        "weights_fingerprint": weights_fingerprint,
        "encoder_fingerprint": encoder_fingerprint(model),  # computed on CPU, before moving to the device
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
        "attn_implementation": model.config._attn_implementation,
        "d_model": d_model,
    }
    device = spec.resolved_device()
    model.to(device)
    return LoadedModel(model=model, tokenizer=tokenizer, yes_id=yes_id, no_id=no_id, identity=identity,
                       d_model=d_model, spec=spec, device=device, dtype=spec.torch_dtype())
