"""Dense first stage, the corpus side on disk: embedding shards (one per unit of `shard_docs` passages) with their
sidecars, and the files written once (first writer wins) that shards, keys and search partials are made of."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kalm_eval.errors import KalmEvalError, ScoreError
from kalm_eval.retrieval.dense_settings import DenseSettings
from kalm_eval.storage import atomic_open, named_writes, read_json, sha256_file, signature_of, temp_sibling

log = logging.getLogger(__name__)

class ShardDamaged(KalmEvalError):
    """An embedding shard failed its checksum or shape check (it has been removed)."""


def resolve_store_dtype(settings: DenseSettings) -> str:
    if settings.store_dtype != "auto":
        return settings.store_dtype
    return settings.dtype if settings.dtype in ("float16", "bfloat16") else "float32"


class ShardStore:
    """Embedding shards of one corpus under one key: shard-<u>.npy + shard-<u>.json (range, shape, sha256)."""

    def __init__(self, root: Path, key: dict[str, Any], docs: int, shard_docs: int, store_dtype: str):
        self.root = root
        self.key = key
        self.docs = docs
        self.shard_docs = shard_docs
        self.store_dtype = store_dtype
        self.units = (docs + shard_docs - 1) // shard_docs
        self._verified: set[int] = set()

    def bounds(self, unit: int) -> tuple[int, int]:
        return unit * self.shard_docs, min(self.docs, (unit + 1) * self.shard_docs)

    def path(self, unit: int) -> Path:
        return self.root / f"shard-{unit:06d}.npy"

    def write_key(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_once(self.root / "key.json", (json.dumps(self.key, indent=2, default=str) + "\n").encode("utf-8"))

    # storage dtype <-> float32
    def to_storage(self, emb: np.ndarray, ids: Sequence[str] | None = None) -> np.ndarray:
        """float32 embeddings in the storage dtype; ScoreError naming the first passage whose vector is not finite
        (a zero vector normalised gives NaN) or overflows the storage dtype (float16 above 65504)."""
        emb = np.asarray(emb, dtype=np.float32)
        self._check_finite(emb, ids, "is not finite (a zero vector normalised?)")
        if self.store_dtype == "bfloat16":
            import torch

            return torch.from_numpy(np.ascontiguousarray(emb)).to(torch.bfloat16).view(torch.int16).numpy()
        with np.errstate(over="ignore"):  # checked right below, naming the passage
            stored = emb.astype(self.store_dtype)
        self._check_finite(stored, ids, f"overflows {self.store_dtype} storage (retriever.store_dtype=float32)")
        return stored

    def _check_finite(self, emb: np.ndarray, ids: Sequence[str] | None, what: str) -> None:
        finite = np.isfinite(emb).all(axis=1) if emb.ndim == 2 else np.isfinite(emb).all(keepdims=True)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            name = repr(ids[int(bad[0])]) if ids is not None and emb.ndim == 2 else "?"
            raise ScoreError(f"{self.root}: the encoder's embedding of passage {name} {what}; {len(bad)} of "
                             f"{len(finite)} in this batch")

    def to_float32(self, stored: np.ndarray):
        import torch

        array = np.array(stored, copy=True)  # a private copy: mmap'd pages are read-only
        if self.store_dtype == "bfloat16":
            return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16).float()
        return torch.from_numpy(array).float()

    def _npy_dtype(self) -> np.dtype:
        return np.dtype(np.int16 if self.store_dtype == "bfloat16" else self.store_dtype)

    def save(self, unit: int, embeddings: np.ndarray, *, first_id: str, last_id: str) -> None:
        start, stop = self.bounds(unit)
        if embeddings.shape[0] != stop - start or embeddings.dtype != self._npy_dtype():
            raise KalmEvalError(f"{self.path(unit)}: {embeddings.shape} {embeddings.dtype} for {stop - start} passages")
        with atomic_open(self.path(unit), "wb", compress=False) as fh:
            np.save(fh, embeddings, allow_pickle=False)
        self._write_sidecar(unit, embeddings.shape, first_id, last_id)

    def _write_sidecar(self, unit: int, shape, first_id: str, last_id: str) -> None:
        start, stop = self.bounds(unit)
        path = self.path(unit)
        sidecar = {"key": signature_of(self.key), "unit": unit, "start": start, "stop": stop, "shape": list(shape),
                   "store_dtype": self.store_dtype, "bytes": path.stat().st_size, "sha256": sha256_file(path),
                   "first_id": first_id, "last_id": last_id}
        with atomic_open(path.with_suffix(".json")) as fh:
            fh.write(json.dumps(sidecar, indent=2) + "\n")

    def has(self, unit: int) -> bool:
        """The shard is complete: its sidecar matches the key, range and file size (a kill -9 between the shard
        and its sidecar leaves a complete .npy without one, which counts as absent and is recomputed)."""
        path = self.path(unit)
        try:
            meta = read_json(path.with_suffix(".json"))
            start, stop = self.bounds(unit)
            return (meta.get("key") == signature_of(self.key) and meta.get("start") == start
                    and meta.get("stop") == stop and meta.get("bytes") == path.stat().st_size
                    and meta.get("store_dtype") == self.store_dtype)
        except (OSError, ValueError, AttributeError):
            return False

    def load(self, unit: int, *, verify: bool = False) -> np.ndarray:
        """The shard memory-mapped; `verify` checks its sha256 (once per process)."""
        path = self.path(unit)
        meta = read_json(path.with_suffix(".json"))
        if verify and unit not in self._verified:
            if sha256_file(path) != meta["sha256"]:
                self.discard(unit, "does not match its sha256")
                raise ShardDamaged(f"{path}: embedding shard damaged (sha256 mismatch); removed, run again to "
                                    "recompute it")
            self._verified.add(unit)
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        start, stop = self.bounds(unit)
        if array.shape[0] != stop - start or list(array.shape) != meta["shape"] or array.dtype != self._npy_dtype():
            self.discard(unit, f"has shape {array.shape} {array.dtype}")
            raise ShardDamaged(f"{path}: embedding shard has the wrong shape; removed, run again to recompute it")
        return array

    def discard(self, unit: int, reason: str) -> None:
        log.warning("embedding shard %s %s; removing it", self.path(unit), reason)
        self.path(unit).with_suffix(".json").unlink(missing_ok=True)
        self.path(unit).unlink(missing_ok=True)

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """float32 embeddings of arbitrary corpus positions (read by position from the memory-mapped shards)."""
        positions = np.asarray(positions, dtype=np.int64)
        out = np.zeros((len(positions), 0), np.float32)
        if not len(positions):
            return out
        units = positions // self.shard_docs
        parts: dict[int, np.ndarray] = {}
        for unit in np.unique(units).tolist():
            shard = self.load(int(unit))
            local = positions[units == unit] - unit * self.shard_docs
            parts[unit] = self.to_float32(shard[local]).numpy()
        dim = next(iter(parts.values())).shape[1]
        out = np.empty((len(positions), dim), np.float32)
        for unit, values in parts.items():
            out[units == unit] = values
        return out


# ---------------------------------------------------------------------------------------------------------------
# Files written once: the first writer wins (hard link onto the final name), so every worker and every resumed
# run reads the same bytes even when two computed the same unit.


def link_once(tmp: Path, target: Path) -> None:
    try:
        os.link(tmp, target)
    except FileExistsError:
        pass
    except OSError:  # a filesystem without hard links: last writer wins, still atomic
        os.replace(tmp, target)
        return
    tmp.unlink(missing_ok=True)


def write_once(target: Path, payload: bytes) -> None:
    if target.exists():
        return
    link_once(written(target, lambda fh: fh.write(payload)), target)


def part_name(unit: int) -> str:
    return f"part-{unit:06d}.npz"


def save_npz_once(target: Path, **arrays: np.ndarray) -> None:
    link_once(written(target, lambda fh: np.savez(fh, **arrays)), target)


def written(target: Path, write) -> Path:
    """A temp sibling of `target` holding what `write(file)` wrote; on a failed write (no space ...) it is removed
    and the error names `target` (kalm_eval.storage.named_writes)."""
    tmp = temp_sibling(target)
    try:
        with named_writes(target), open(tmp, "wb") as fh:
            write(fh)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def partial_ok(path: Path, n_queries: int) -> bool:
    try:
        with np.load(path, allow_pickle=False) as part:
            counts = part["counts"]
            return (counts.shape == (n_queries,) and int(counts.sum()) == part["positions"].shape[0]
                    == part["scores"].shape[0])
    except (OSError, ValueError, KeyError, EOFError):
        return False
    except Exception:  # zipfile.BadZipFile and friends: a damaged partial is simply recomputed
        return False
