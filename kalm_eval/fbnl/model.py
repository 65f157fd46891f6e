"""Loading and building KaLM-Reranker-V1 (T5Gemma 2 encoder-decoder) models.

Three ways to get a `LoadedModel`:

* `load_model(ModelSpec(name="nano"))` — a real checkpoint from the Hugging Face hub (pinned revision; works
  offline from the local HF cache with HF_HUB_OFFLINE=1), or `ModelSpec(path=dir)` for a local directory.
* `build_tiny_model(seed)` — a random tiny T5Gemma 2 plus a built word-level tokenizer (tests, smoke runs).
* `build_random_nano(dtype)` — random weights in the exact Nano (270m-270m) shape (cost measurements).

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
import json
import logging
import re
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
from transformers.initialization import no_init_weights

from kalm_eval.storage import canonical_json, sha256_file, sha256_text

from .tiny_tokenizer import build_tiny_tokenizer

log = logging.getLogger(__name__)

FP16_MESSAGE = "Use bfloat16 or float32 instead of float16."

# Pinned V1 checkpoints (MTEB ModelMeta revisions; later repo commits may differ, so pin).
KNOWN_CHECKPOINTS: dict[str, tuple[str, str]] = {
    "nano": ("KaLM-Embedding/KaLM-Reranker-V1-Nano", "1d3dcd79115a77b91b2ece798f536880d2115e48"),
    "small": ("KaLM-Embedding/KaLM-Reranker-V1-Small", "e8eaadc957a7ae383a4983a483c2c399f1056cd3"),
    "large": ("KaLM-Embedding/KaLM-Reranker-V1-Large", "bc5cb8fe5a266b6d0b5ffdb9da4c06c950ae242f"),
}

_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
_FP16_NAMES = {"float16", "fp16", "half", "torch.float16"}

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
class ModelSpec:
    """What to load. `path` (a local checkpoint dir) overrides `hf_id`; known names fill hf_id + revision."""

    name: str = "nano"  # "nano" | "small" | "large" | "tiny" | "random-nano" | any label for a custom checkpoint
    hf_id: str | None = None
    revision: str | None = None
    path: Path | None = None
    dtype: str = "auto"  # "bfloat16" | "float32" | "auto" (bf16 on CUDA, fp32 on CPU, as the reference does)
    device: str = "auto"  # "auto" → cuda if available else cpu
    doc_max_len: int = 1024
    query_max_len: int = 512
    attn_implementation: str = "sdpa"  # "sdpa" | "eager" (T5Gemma 2 supports no flash/flex attention)
    seed: int = 0  # only for built models ("tiny", "random-nano")

    def __post_init__(self) -> None:
        # Refuse fp16 up front: the reference gets non-finite logits in fp16.
        if str(self.dtype).lower() in _FP16_NAMES:
            raise ValueError(f"dtype {self.dtype!r} is not supported. {FP16_MESSAGE}")
        if self.dtype not in (*_DTYPES, "auto"):
            raise ValueError(f"dtype must be one of 'bfloat16', 'float32', 'auto'; got {self.dtype!r}")
        if self.attn_implementation not in ("sdpa", "eager"):
            raise ValueError(f"attn_implementation must be 'sdpa' or 'eager'; got {self.attn_implementation!r}")
        if self.doc_max_len <= 0 or self.query_max_len <= 0:
            raise ValueError("doc_max_len and query_max_len must be positive")
        if self.path is not None:
            self.path = Path(self.path)
        known = KNOWN_CHECKPOINTS.get(self.name)
        if known and self.path is None:
            self.hf_id = self.hf_id or known[0]
            self.revision = self.revision or known[1]

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def resolved_dtype(self) -> str:
        if self.dtype == "auto":
            return "bfloat16" if self.resolved_device().type == "cuda" else "float32"
        return self.dtype

    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.resolved_dtype()]


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


def load_model(spec: ModelSpec) -> LoadedModel:
    """Load a checkpoint (hub id + revision, or a local dir), or build a random one for names in BUILT_MODELS."""
    if spec.path is None and spec.name == "tiny":
        return build_tiny_model(seed=spec.seed, dtype=spec.resolved_dtype(), spec=spec)
    if spec.path is None and spec.name == "random-nano":
        return build_random_nano(dtype=spec.resolved_dtype(), seed=spec.seed, spec=spec)
    if spec.path is None and spec.hf_id is None:
        raise ValueError(f"unknown model name {spec.name!r}: give hf_id or path (known: {sorted(KNOWN_CHECKPOINTS)})")

    source = str(spec.path) if spec.path is not None else spec.hf_id
    revision = None if spec.path is not None else spec.revision
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
            attn_implementation=spec.attn_implementation,
            ignore_mismatched_sizes=True,  # only the (shrunk) vision tower may mismatch; checked right below
            output_loading_info=True,
        )
    _check_only_vision_keys_skipped(info, source)
    tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)

    if spec.path is not None:
        weights_fingerprint = local_weights_fingerprint(spec.path)
        # No local path in the identity (machine-specific); the content fingerprint identifies the weights.
        checkpoint = spec.hf_id or "local"
    else:
        # A hub revision is a commit hash: immutable, so it identifies the weights.
        weights_fingerprint = f"hf:{spec.hf_id}@{spec.revision}"
        checkpoint = spec.hf_id
    return _finish(model, tokenizer, spec, checkpoint=checkpoint, revision=revision,
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


def local_weights_fingerprint(directory: Path) -> str:
    """sha256 over config + every weight file's content hash, so any change to the weights changes it.

    Files inside the HF cache are symlinks to blobs named by their own sha256; we reuse that name instead of
    re-reading gigabytes. Other files are hashed once per (path, size, mtime) per process."""
    directory = Path(directory)
    names = sorted(
        p.name for p in directory.iterdir()
        if p.name == "config.json" or p.suffix in (".safetensors", ".bin") or p.name.endswith(".index.json")
    )
    if not any(n.endswith((".safetensors", ".bin")) for n in names):
        raise FileNotFoundError(f"no weight files (*.safetensors / *.bin) in {directory}")
    parts = [(name, _file_sha256(directory / name)) for name in names]
    return "sha256:" + sha256_text(canonical_json(parts))


_FILE_HASHES: dict[tuple[str, int, int], str] = {}
_BLOB_NAME = re.compile(r"^[0-9a-f]{64}$")


def _file_sha256(path: Path) -> str:
    resolved = path.resolve()
    if _BLOB_NAME.match(resolved.name) and resolved.parent.name == "blobs":
        return resolved.name
    stat = resolved.stat()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_HASHES:
        _FILE_HASHES[key] = sha256_file(resolved)
    return _FILE_HASHES[key]


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


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return "sha256:" + sha256_text(backend.to_str())
    return "sha256:" + sha256_text(canonical_json(sorted(tokenizer.get_vocab().items())))


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


def _finish(
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


# ---------------------------------------------------------------------------------------------------------------
# Random models
# ---------------------------------------------------------------------------------------------------------------

# RoPE of Gemma 3 270m: full-attention layers linear factor 8, theta 1e6; sliding layers default, theta 1e4.
GEMMA3_ROPE = {
    "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
    "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
}

# Exact Nano (T5Gemma 2 270m-270m) text stack, reference §3.1; encoder text stack = decoder stack.
NANO_TEXT_CONFIG: dict[str, Any] = dict(
    vocab_size=262_144,
    hidden_size=640,
    intermediate_size=2048,
    num_hidden_layers=18,
    num_attention_heads=4,
    num_key_value_heads=1,
    head_dim=256,
    hidden_activation="gelu_pytorch_tanh",
    sliding_window=512,
    layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 3,
    max_position_embeddings=32_768,
    rope_parameters=GEMMA3_ROPE,
    query_pre_attn_scalar=256,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    final_logit_softcapping=None,
    attn_logit_softcapping=None,
    pad_token_id=0,
    eos_token_id=1,
    bos_token_id=2,
)

# Tiny stack for fast tests: a sliding window of 8 so short texts still cross window borders.
TINY_TEXT_CONFIG: dict[str, Any] = dict(
    NANO_TEXT_CONFIG,
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=32,
    sliding_window=8,
    layer_types=["sliding_attention", "full_attention"],
    max_position_embeddings=4096,
    query_pre_attn_scalar=32,
)


def t5gemma2_config(text_config: dict[str, Any], attn_implementation: str = "sdpa") -> T5Gemma2Config:
    """A T5Gemma 2 config with identical encoder/decoder text stacks and the tiny vision tower."""
    config = T5Gemma2Config(
        encoder=dict(
            text_config=dict(text_config),
            vision_config=dict(TINY_VISION_CONFIG),
            mm_tokens_per_image=TINY_MM_TOKENS_PER_IMAGE,
        ),
        decoder=dict(text_config),
        tie_word_embeddings=True,
    )
    config._attn_implementation = attn_implementation
    return config


def random_t5gemma2(config: T5Gemma2Config, seed: int, std: float) -> T5Gemma2ForConditionalGeneration:
    """Build with HF init switched off, then fill every (tied-once) parameter from one seeded generator.

    Why: HF's own init draws ~2x more numbers (before tying) and took ~17 s for the Nano shape; this is
    deterministic by construction (same seed -> bit-identical weights) and takes a few seconds. Norm weights
    get small random values (RMSNorm scales by 1 + w) so tests exercise them; the eoi embedding too (unused by
    text). Tensors above 16M values (only the 262k x 640 embedding) repeat a 4M-value random block: drawing
    168M normals alone took ~4 s, and a periodic embedding is as good as any for random-weight tests."""
    with no_init_weights():
        model = T5Gemma2ForConditionalGeneration(config)
    model.tie_weights()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():  # shared (tied) parameters are listed once
            _fill_normal(param, 0.1 if "norm" in name else std, generator)
    return model.eval().requires_grad_(False)


def _fill_normal(param: torch.Tensor, std: float, generator: torch.Generator, block: int = 1 << 22) -> None:
    if param.numel() <= 4 * block:
        param.normal_(0.0, std, generator=generator)
        return
    pool = torch.empty(block).normal_(0.0, std, generator=generator)
    flat = param.view(-1)
    for start in range(0, flat.numel(), block):
        chunk = flat[start : start + block]
        chunk.copy_(pool[: chunk.numel()])
        pool = pool.roll(7919)  # shift each repeat so rows do not line up exactly


def build_tiny_model(seed: int = 0, dtype: str = "float32", spec: ModelSpec | None = None) -> LoadedModel:
    """Random tiny T5Gemma 2 (hidden 64, 2 layers, heads 2/1, head_dim 32) + the built word-level tokenizer.

    std 0.1 keeps yes/no margins of order 1 at this width, so exactness tests compare meaningful numbers."""
    spec = spec or ModelSpec(name="tiny", dtype=dtype, device="cpu", seed=seed)
    tokenizer = build_tiny_tokenizer()
    config = t5gemma2_config(TINY_TEXT_CONFIG, spec.attn_implementation)
    assert len(tokenizer) <= config.decoder.vocab_size
    model = random_t5gemma2(config, seed=seed, std=0.1).to(spec.torch_dtype())
    return _finish(model, tokenizer, spec, checkpoint="random:tiny", revision=None,
                   weights_fingerprint=f"random:tiny:seed={seed}:config={_config_hash(config)}")


def build_random_nano(
    dtype: str = "bfloat16",
    seed: int = 0,
    tokenizer: PreTrainedTokenizerBase | None = None,
    spec: ModelSpec | None = None,
) -> LoadedModel:
    """Random weights in the exact Nano shape (hidden 640, 18 layers, 4/1 heads, head_dim 256, vocab 262144).

    Tokenizer: the given one, else the real Gemma 3 tokenizer when its package is installed (realistic token
    counts), else the tiny word-level tokenizer (ids are just ids to a random model)."""
    spec = spec or ModelSpec(name="random-nano", dtype=dtype, device="cpu", seed=seed)
    if tokenizer is None:
        from .gemma_tokenizer import gemma3_tokenizer_or_none

        tokenizer = gemma3_tokenizer_or_none() or build_tiny_tokenizer()
    config = t5gemma2_config(NANO_TEXT_CONFIG, spec.attn_implementation)
    model = random_t5gemma2(config, seed=seed, std=0.02).to(spec.torch_dtype())
    return _finish(model, tokenizer, spec, checkpoint="random:nano", revision=None,
                   weights_fingerprint=f"random:nano:seed={seed}:config={_config_hash(config)}")


def _config_hash(config: T5Gemma2Config) -> str:
    data = config.to_dict()
    data.pop("transformers_version", None)
    return sha256_text(json.dumps(data, sort_keys=True, default=str))[:16]


def hf_cache_snapshot(name: str) -> Path | None:
    """The local HF-cache directory of a known checkpoint at its pinned revision, or None (never downloads)."""
    hf_id, revision = KNOWN_CHECKPOINTS[name]
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(hf_id, revision=revision, local_files_only=True))
    except Exception:  # not cached (or hub library unavailable): the caller decides what to do
        return None
