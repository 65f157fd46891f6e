"""Dense first stage, the encoder side: what turns passages and queries into vectors (any sentence-transformers
model, or deterministic random vectors for benchmarks of the search path at any scale)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kalm_eval.errors import ConfigError
from kalm_eval.retrieval.dense_settings import DenseSettings
from kalm_eval.storage import sha256_file


class Encoder(Protocol):
    dim: int

    def identity(self) -> dict[str, Any]: ...

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...


class SentenceTransformerEncoder:
    def __init__(self, settings: DenseSettings, device: str):
        self.settings = settings
        self.device = device
        self._model = None

    @property
    def model(self):
        if self._model is None:
            import torch
            from sentence_transformers import SentenceTransformer

            s = self.settings
            revision = None if Path(s.model).is_dir() else s.revision  # a local dir has no revisions
            self._model = SentenceTransformer(s.model, revision=revision, device=self.device,
                                              model_kwargs={"dtype": getattr(torch, s.dtype)})
            if s.max_seq_length:
                self._model.max_seq_length = s.max_seq_length
        return self._model

    @property
    def dim(self) -> int:
        model = self.model
        getter = getattr(model, "get_embedding_dimension", None) or getattr(model, "get_sentence_embedding_dimension", None)
        if getter is not None and getter() is not None:
            return int(getter())
        return int(self._encode(["dimension probe"], progress=False).shape[1])

    def identity(self) -> dict[str, Any]:
        s = self.settings
        local = Path(s.model)
        weights = None
        if local.is_dir():
            files = sorted(local.glob("*.safetensors")) or sorted(local.glob("*.bin"))
            weights = {f.name: sha256_file(f) for f in files}
        return {"model": s.model if not local.is_dir() else str(local.resolve()),
                "revision": None if local.is_dir() else s.revision,
                "weights_sha256": weights}

    def _encode(self, texts: Sequence[str], progress: bool) -> np.ndarray:
        emb = self.model.encode(list(texts), batch_size=self.settings.batch_size, convert_to_tensor=True,
                                normalize_embeddings=self.settings.normalize, show_progress_bar=progress)
        return emb.float().cpu().numpy()

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, progress=False)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, progress=False)


class RandomEncoder:
    """Deterministic random unit vectors keyed by the text: the shard/search path at any scale without a model."""

    def __init__(self, dim: int, seed: int = 0, normalize: bool = True):
        if dim < 1:
            raise ConfigError(f"retriever.model=random:<dim> needs dim >= 1, got {dim}")
        self.dim = dim
        self.seed = seed
        self.normalize = normalize

    def identity(self) -> dict[str, Any]:
        return {"model": f"random:{self.dim}", "seed": self.seed, "note": "random vectors, for benchmarks only"}

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        """Uniform(-1, 1) components from a vectorised splitmix64 of (blake2b(text), component index): ~1 us a text."""
        key = self.seed.to_bytes(8, "little")
        seeds = np.fromiter((int.from_bytes(hashlib.blake2b(t.encode("utf-8"), digest_size=8, key=key).digest(), "little")
                             for t in texts), dtype=np.uint64, count=len(texts))
        z = seeds[:, None] + np.arange(1, self.dim + 1, dtype=np.uint64)[None, :] * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
        out = ((z >> np.uint64(40)).astype(np.float32) / np.float32(1 << 23) - np.float32(1.0)).reshape(len(texts), self.dim)
        if self.normalize and len(out):
            out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts)


def make_encoder(settings: DenseSettings, device: str) -> Encoder:
    if settings.model.startswith("random:"):
        try:
            dim = int(settings.model.split(":", 1)[1])
        except ValueError:
            raise ConfigError(f"retriever.model={settings.model!r}: expected random:<dim>") from None
        return RandomEncoder(dim, normalize=settings.normalize)
    return SentenceTransformerEncoder(settings, device)
