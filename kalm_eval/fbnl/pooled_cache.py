"""Persisted pooled passage states (a policy: `cache.persist_compression`), indexed and read per passage.

Every run encodes each of its passages once anyway (passage-major scoring, rerank/engine.py), so a persisted state
only saves work when a later run scores the same passage with the same encoder at the same compression (another
instruction, depth, decoder or tail). Whether that pays depends on r: a Nano passage of 300 tokens is 384 KB at
r=1, 96 KB at r=4, 13 KB at r=32 (x4 for Large), so persisting is chosen per compression and capped by `max_bytes`.

Layout (one directory per cache key = the encoder's identity, one sub-directory per compression):

    <cache_dir>/<key_id>/key.json                       the full key, for humans
    <cache_dir>/<key_id>/r<r>/<segment>.safetensors     states [sum W_i, d] of one batch of passages (write-once)
    <cache_dir>/<key_id>/r<r>/<segment>.index.npz       per passage: text sha256, first row, rows, crc32 of its bytes

Segments are written once and never modified (unique names, atomic rename; the index last, so an index always
describes a complete file); several writers never share a file. On first use of a compression the indexes are read
into one sorted array of digests, so a lookup is a binary search plus a read of that passage's rows only (no
manifest scans, no whole-shard reads). A passage whose bytes fail their crc32, or a segment that cannot be read, is
logged with its file name; the segment is deleted and its passages are re-encoded by the caller.
Only windows holding real tokens are stored (ceil(n / r) per passage); padding windows are masked in
cross-attention, so re-padding with zeros at scoring time is exact.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as save_safetensors

from kalm_eval.records import compression_label
from kalm_eval.storage import atomic_open, canonical_json, sha256_text, signature_of, write_json_atomic

log = logging.getLogger(__name__)

SEGMENT_FORMAT = "kalm-eval/pooled-states/v2"


def tensor_crc32(tensor: torch.Tensor) -> int:
    return zlib.crc32(tensor.detach().contiguous().view(torch.uint8).numpy().tobytes())


@dataclass
class _Index:
    """Sorted digests of one compression's segments, with where each passage's rows are."""

    digests: np.ndarray = field(default_factory=lambda: np.empty(0, dtype="S32"))
    segment: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int32))
    start: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    crc: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint32))
    files: list[Path] = field(default_factory=list)  # segment number -> .safetensors path


class PooledStateCache:
    """Read/write persisted pooled states for one cache key (see the module docstring)."""

    def __init__(self, root: Path, key: Mapping[str, Any], *, max_bytes: int | None = None):
        self.key = dict(key)
        self.key_id = signature_of(self.key)[:32]
        self.directory = Path(root) / self.key_id
        self.max_bytes = max_bytes
        self.corrupt_segments = 0
        self.bytes_written = 0
        self._indexes: dict[int, _Index] = {}
        self._handles: dict[Path, Any] = {}
        self._full_warned = False
        if not (self.directory / "key.json").exists():
            write_json_atomic(self.directory / "key.json", self.key)

    # -- reading ---------------------------------------------------------------------------------------------

    def lookup(self, compression: int, digests: Iterable[str]) -> dict[str, torch.Tensor]:
        """Pooled states [W, d] of those passages (text sha256 hex) that are cached and intact."""
        index = self._index(compression)
        wanted = list(dict.fromkeys(digests))
        if not wanted or not len(index.digests):
            return {}
        keys = np.array([bytes.fromhex(d) for d in wanted], dtype="S32")
        positions = np.searchsorted(index.digests, keys)
        hits = [(digest, int(pos)) for digest, key, pos in zip(wanted, keys, positions)
                if pos < len(index.digests) and index.digests[pos] == key]
        found: dict[str, tuple[int, torch.Tensor]] = {}
        bad: dict[int, str] = {}
        for digest, pos in hits:
            segment = int(index.segment[pos])
            if segment in bad:
                continue
            start, rows = int(index.start[pos]), int(index.rows[pos])
            try:
                states = self._handle(index.files[segment]).get_slice("states")[start : start + rows]
            except Exception as error:  # unreadable file: same treatment as a checksum failure
                bad[segment] = f"unreadable ({error})"
                continue
            if tensor_crc32(states) != int(index.crc[pos]):
                bad[segment] = f"crc32 mismatch for passage {digest[:12]}"
                continue
            found[digest] = (segment, states)
        for segment, why in bad.items():
            self._discard(index, segment, why)
        return {digest: states for digest, (segment, states) in found.items() if segment not in bad}

    def _handle(self, path: Path):
        if path not in self._handles:
            if len(self._handles) >= 64:  # bound open files; segments are read in bursts per chunk
                self._handles.pop(next(iter(self._handles)))
            self._handles[path] = safe_open(str(path), framework="pt")
        return self._handles[path]

    def _index(self, compression: int) -> _Index:
        if compression not in self._indexes:
            self._indexes[compression] = self._read_indexes(compression)
        return self._indexes[compression]

    def _read_indexes(self, compression: int) -> _Index:
        parts, files = [], []
        for index_path in sorted((self.directory / compression_label(compression)).glob("*.index.npz")):
            segment_path = index_path.with_name(index_path.name.removesuffix(".index.npz") + ".safetensors")
            try:
                with np.load(index_path) as data:
                    if str(data["format"]) != SEGMENT_FORMAT or str(data["key_id"]) != self.key_id or \
                            int(data["compression"]) != compression:
                        raise ValueError("index of another format, key or compression")
                    arrays = (data["digests"].astype("S32"), data["start"].astype(np.int64),
                              data["rows"].astype(np.int64), data["crc"].astype(np.uint32))
                if not segment_path.exists():
                    raise ValueError("its .safetensors file is missing")
            except Exception as error:
                self.corrupt_segments += 1
                log.warning("pooled-state cache: %s is unusable (%s); deleting it", index_path, error)
                index_path.unlink(missing_ok=True)
                segment_path.unlink(missing_ok=True)
                continue
            parts.append((len(files), *arrays))
            files.append(segment_path)
        if not parts:
            return _Index(files=files)
        digests = np.concatenate([p[1] for p in parts])
        order = np.argsort(digests, kind="stable")
        return _Index(
            digests=digests[order],
            segment=np.concatenate([np.full(len(p[1]), p[0], dtype=np.int32) for p in parts])[order],
            start=np.concatenate([p[2] for p in parts])[order],
            rows=np.concatenate([p[3] for p in parts])[order],
            crc=np.concatenate([p[4] for p in parts])[order],
            files=files,
        )

    def _discard(self, index: _Index, segment: int, why: str) -> None:
        path = index.files[segment]
        self.corrupt_segments += 1
        log.warning("pooled-state cache: corrupt segment %s (%s); deleting it, its passages are re-encoded", path, why)
        self._handles.pop(path, None)
        path.unlink(missing_ok=True)
        path.with_name(path.name.removesuffix(".safetensors") + ".index.npz").unlink(missing_ok=True)
        keep = index.segment != segment
        for name in ("digests", "segment", "start", "rows", "crc"):
            setattr(index, name, getattr(index, name)[keep])

    # -- writing ---------------------------------------------------------------------------------------------

    def store(self, compression: int, states: Mapping[str, torch.Tensor]) -> int:
        """Persist these passages' states (text sha256 -> [W, d]) as one new segment; returns bytes written
        (0 when `max_bytes` would be exceeded: the run goes on without persisting, and says so once)."""
        digests = sorted(states)
        if not digests:
            return 0
        stacked = torch.cat([states[d].detach().to("cpu") for d in digests]).contiguous()
        size = stacked.numel() * stacked.element_size()
        if self.max_bytes is not None and self.size_on_disk() + size > self.max_bytes:
            if not self._full_warned:
                log.warning("pooled-state cache %s reached cache.max_bytes=%d; not persisting more states",
                            self.directory, self.max_bytes)
                self._full_warned = True
            return 0
        rows = np.array([states[d].shape[0] for d in digests], dtype=np.int64)
        start = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64)
        metadata = {"format": SEGMENT_FORMAT, "key": canonical_json(self.key), "compression": str(compression)}
        blob = save_safetensors({"states": stacked}, metadata)
        name = sha256_text("\n".join(digests))[:24]
        segment_path = self.directory / compression_label(compression) / f"{name}.safetensors"
        with atomic_open(segment_path, "wb") as handle:
            handle.write(blob)
        with atomic_open(segment_path.with_name(f"{name}.index.npz"), "wb") as handle:
            np.savez(handle, format=np.array(SEGMENT_FORMAT), key_id=np.array(self.key_id),
                     compression=np.array(compression), digests=np.array([bytes.fromhex(d) for d in digests], "S32"),
                     start=start, rows=rows,
                     crc=np.array([tensor_crc32(states[d]) for d in digests], dtype=np.uint32))
        self._indexes.pop(compression, None)  # re-read on next lookup (includes the new segment)
        self._size = self.size_on_disk() + len(blob)
        self.bytes_written += len(blob)
        return len(blob)

    def size_on_disk(self) -> int:
        if not hasattr(self, "_size"):
            self._size = sum(p.stat().st_size for p in self.directory.glob("r*/*.safetensors"))
        return self._size
