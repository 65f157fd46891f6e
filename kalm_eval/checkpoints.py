"""What every Hugging Face checkpoint a reranker loads shares: dtype and device rules, fingerprints of weights
and tokenizers for run signatures (content, never a local path), and the check that a checkpoint can be had at all.

Availability (`check_available`, run before any work): a hub checkpoint is usable when its pinned revision is in the
local Hugging Face cache, or, with HF_HUB_OFFLINE unset, when the hub answers for it within HUB_TIMEOUT_S seconds
(one request, no retries: an offline node fails in a second, not after minutes of retry noise). Otherwise one
CheckpointUnavailable names the model, its revision and the ways out.

dtype: "auto" = bfloat16 on CUDA, float32 on CPU (the KaLM reference's defaults); float16 is refused everywhere,
because the reference gets non-finite logits in it.

Checkpoint generations: KaLM-Reranker-V1 was released twice with the same FBNL architecture: "r1" (the paper's
checkpoints, June 2026) and "r2" (the -R2 repositories, September 2026). A preset states its generation
(conf/model/*.yaml `generation:`), a published row the generation it was measured on (results/paper/*/*.yaml), and
the report never compares a result with a published row of another generation."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kalm_eval.errors import CheckpointUnavailable
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


# ---- availability -------------------------------------------------------------------------------------------------

HUB_TIMEOUT_S = float(os.environ.get("KALM_EVAL_HUB_TIMEOUT", "5"))  # one request to the hub, no retries
_TRUE = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class HubCheckpoint:
    """A checkpoint a run loads from the Hugging Face hub: what it is, who needs it, the knob for a local copy."""

    repo_id: str
    revision: str | None
    needed_by: str  # e.g. "model=nano", "retriever=kalm_embedding"
    local_knob: str  # e.g. "model.path", "retriever.model"

    @property
    def label(self) -> str:
        return f"{self.repo_id}@{self.revision}" if self.revision else f"{self.repo_id} (no pinned revision)"

    @property
    def download_command(self) -> str:
        return f"hf download {self.repo_id}" + (f" --revision {self.revision}" if self.revision else "")


_AVAILABLE: set[tuple[str, str | None]] = set()  # checked in this process: found or reachable


def hub_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def check_available(checkpoints: Iterable[HubCheckpoint]) -> None:
    """CheckpointUnavailable when any checkpoint is neither cached nor downloadable: the first one in full, the
    others named."""
    missing: list[tuple[HubCheckpoint, str]] = []
    for checkpoint in dict.fromkeys(checkpoints):
        key = (checkpoint.repo_id, checkpoint.revision)
        if key in _AVAILABLE or any(key == (m.repo_id, m.revision) for m, _ in missing):
            continue
        problem = None if _cached(checkpoint) else _not_downloadable(checkpoint)
        if problem is None:
            _AVAILABLE.add(key)
        else:
            missing.append((checkpoint, problem))
    if missing:
        (first, problem), others = missing[0], [m for m, _ in missing[1:]]
        also = f" (also unavailable: {', '.join(f'{m.needed_by} {m.label}' for m in others)})" if others else ""
        raise CheckpointUnavailable(_message(first, problem) + also)


def _cached(checkpoint: HubCheckpoint) -> bool:
    """The revision's snapshot holds config.json (or is known to lack it) in the local hub cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return try_to_load_from_cache(checkpoint.repo_id, "config.json", revision=checkpoint.revision) is not None
    except ValueError:  # not a valid repo id: nothing cached under it
        return False


def _not_downloadable(checkpoint: HubCheckpoint) -> str | None:
    """None when the hub serves the checkpoint, else why not (with the way out that reason calls for)."""
    if hub_offline():
        return "HF_HUB_OFFLINE is set, so nothing is downloaded"
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    url = hf_hub_url(checkpoint.repo_id, "config.json", revision=checkpoint.revision)
    try:
        get_hf_file_metadata(url, timeout=HUB_TIMEOUT_S, retry_on_errors=False)
    except GatedRepoError:
        return "the repository is gated: accept its terms on its hub page and log in (hf auth login, or HF_TOKEN)"
    except RepositoryNotFoundError:
        return "the hub has no such repository (or it is private: log in with hf auth login, or HF_TOKEN)"
    except RevisionNotFoundError:
        return f"the repository has no revision {checkpoint.revision}"
    except EntryNotFoundError:
        return None  # the repository and revision exist; the loader knows which files it needs
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        return f"the hub ({constants.ENDPOINT}) answered HTTP {status}"
    except Exception as err:  # connection refused, no DNS, timeout, proxy: the hub cannot be reached
        reason = " ".join(str(err).split()) or type(err).__name__
        return f"the hub ({constants.ENDPOINT}) cannot be reached within {HUB_TIMEOUT_S:g} s ({reason[:160]})"
    return None


def _message(checkpoint: HubCheckpoint, problem: str) -> str:
    from huggingface_hub import constants

    return (f"{checkpoint.needed_by}: checkpoint {checkpoint.label} is not in the local Hugging Face cache "
            f"({constants.HF_HUB_CACHE}) and cannot be downloaded: {problem}. Ways out: "
            f"{checkpoint.local_knob}=<a local copy>, or download it where the hub is reachable "
            f"(`{checkpoint.download_command}`), bring that cache here (HF_HOME) and run with HF_HUB_OFFLINE=1")
