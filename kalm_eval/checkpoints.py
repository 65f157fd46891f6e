"""What every Hugging Face checkpoint a reranker loads shares: dtype and device rules, and fingerprints of weights
and tokenizers for run signatures (content, never a local path).

dtype: "auto" = bfloat16 on CUDA, float32 on CPU (the KaLM reference's defaults); float16 is refused everywhere,
because the reference gets non-finite logits in it.

Checkpoint generations: KaLM-Reranker-V1 was released twice with the same FBNL architecture: "r1" (the paper's
checkpoints, June 2026) and "r2" (the -R2 repositories, September 2026). A preset states its generation
(conf/model/*.yaml `generation:`), a published row the generation it was measured on (results/paper/*/*.yaml), and
the report never compares a result with a published row of another generation."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from kalm_eval.storage import canonical_json, sha256_file, sha256_text

FP16_MESSAGE = "Use bfloat16 or float32 instead of float16."
FP16_NAMES = frozenset({"float16", "fp16", "half", "torch.float16"})
DTYPES = ("auto", "bfloat16", "float32")
GENERATIONS = ("r1", "r2")


def resolve_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: str) -> str:
    """The dtype name "auto" stands for on this device."""
    if dtype == "auto":
        return "bfloat16" if resolve_device(device).type == "cuda" else "float32"
    return dtype


def torch_dtype(name: str):
    import torch

    return {"bfloat16": torch.bfloat16, "float32": torch.float32}[name]


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


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of the tokenizer's definition. The truncation/padding state a call leaves in the backend is dropped:
    otherwise the fingerprint would change once the tokenizer has been used."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return "sha256:" + sha256_text(canonical_json(sorted(tokenizer.get_vocab().items())))
    definition = json.loads(backend.to_str())
    definition.pop("truncation", None)
    definition.pop("padding", None)
    return "sha256:" + sha256_text(canonical_json(definition))
