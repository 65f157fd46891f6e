"""On-disk cache of pooled passage states: sharded safetensors files, each verified by sha256 on read.

Layout (one directory per cache key, one sub-directory per pooling ratio):

    <cache_dir>/<key_id>/key.json                      the full key, for humans
    <cache_dir>/<key_id>/r<r>/<shard_id>.safetensors   states [sum of W_i, d] + offsets [N+1]; header metadata
                                                       repeats the full key, the ratio and the passage hashes
    <cache_dir>/<key_id>/r<r>/<shard_id>.json          manifest: full key, ratio, passage sha256s, offsets,
                                                       dtype, d_model, and the sha256 + size of the shard file

Why this shape: shards are written once and never modified (new passages go to new shards), so there is no
shared index file to race on; each shard is written to a temp file and renamed into place (atomic), shard
first and manifest second, so a manifest always points at a complete file. On read the shard's sha256 must
match its manifest and the embedded key must match ours; anything else (checksum mismatch, unreadable file,
missing shard, foreign key) is logged, both files are deleted, and the caller re-encodes those passages.
Only the windows that contain real tokens are stored (ceil(n / r) per passage); all-padding windows are
masked in cross-attention, so re-padding them with zeros at scoring time is exact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from kalm_eval.storage import atomic_open, canonical_json, sha256_text, signature_of, write_json_atomic

log = logging.getLogger(__name__)

SHARD_FORMAT = "kalm-eval/pooled-states/v1"


class CorruptShard(Exception):
    pass


@dataclass
class ShardManifest:
    format: str
    key_id: str
    key: dict[str, Any]
    ratio: int
    dtype: str
    d_model: int
    passages: list[str]  # sha256 of each passage text, in row order
    offsets: list[int]  # rows of passage i are states[offsets[i]:offsets[i+1]]
    file: str
    sha256: str
    bytes: int


class PooledStateCache:
    """Read/write pooled states for one cache key (see module docstring for the layout and guarantees)."""

    def __init__(self, root: Path, key: Mapping[str, Any], passages_per_shard: int = 256):
        self.key = dict(key)
        self.key_id = signature_of(self.key)[:32]
        self.directory = Path(root) / self.key_id
        self.passages_per_shard = passages_per_shard
        self.corrupt_shards = 0
        self.bytes_written = 0
        if not (self.directory / "key.json").exists():
            write_json_atomic(self.directory / "key.json", self.key)

    # -- reading ---------------------------------------------------------------------------------------------

    def lookup(self, ratio: int, wanted: Iterable[str]) -> dict[str, torch.Tensor]:
        """Pooled states [W, d] for those of `wanted` (passage sha256s) that are cached and intact."""
        wanted = set(wanted)
        if not wanted:
            return {}
        by_manifest: dict[Path, list[str]] = defaultdict(list)
        for manifest_path, passages in self._index(ratio).items():
            for passage in passages:
                if passage in wanted:
                    by_manifest[manifest_path].append(passage)
                    wanted.discard(passage)
        found: dict[str, torch.Tensor] = {}
        for manifest_path, passages in by_manifest.items():
            try:
                rows = self._read_shard(manifest_path, ratio)
            except CorruptShard as error:
                self.corrupt_shards += 1
                log.warning("pooled-state cache: corrupt shard %s (%s); deleting it, its passages are re-encoded",
                            manifest_path.with_suffix(".safetensors"), error)
                manifest_path.with_suffix(".safetensors").unlink(missing_ok=True)
                manifest_path.unlink(missing_ok=True)
                continue
            for passage in passages:
                found[passage] = rows[passage]
        return found

    def _index(self, ratio: int) -> dict[Path, list[str]]:
        index: dict[Path, list[str]] = {}
        for manifest_path in sorted((self.directory / f"r{ratio}").glob("*.json")):
            try:
                index[manifest_path] = list(json.loads(manifest_path.read_text())["passages"])
            except (OSError, ValueError, KeyError, TypeError):
                index[manifest_path] = []  # unreadable manifest: drop it (its shard is re-built when needed)
                self.corrupt_shards += 1
                log.warning("pooled-state cache: unreadable manifest %s; deleting it", manifest_path)
                manifest_path.unlink(missing_ok=True)
                manifest_path.with_suffix(".safetensors").unlink(missing_ok=True)
        return index

    def _read_shard(self, manifest_path: Path, ratio: int) -> dict[str, torch.Tensor]:
        try:
            manifest = ShardManifest(**json.loads(manifest_path.read_text()))
            blob = manifest_path.with_suffix(".safetensors").read_bytes()
        except (OSError, ValueError, TypeError) as error:
            raise CorruptShard(f"unreadable: {error}") from error
        if len(blob) != manifest.bytes or sha256_bytes(blob) != manifest.sha256:
            raise CorruptShard("sha256 mismatch")
        if manifest.key != self.key or manifest.ratio != ratio or manifest.format != SHARD_FORMAT:
            raise CorruptShard("manifest belongs to another key, ratio or format")
        try:
            header = _safetensors_metadata(blob)
            tensors = load_safetensors(blob)
        except Exception as error:  # checksum passed but the file does not parse: still corrupt
            raise CorruptShard(f"unparsable: {error}") from error
        if json.loads(header.get("key", "null")) != self.key:
            raise CorruptShard("embedded key differs")
        states, offsets = tensors["states"], tensors["offsets"].tolist()
        if offsets != manifest.offsets or len(offsets) != len(manifest.passages) + 1:
            raise CorruptShard("offsets differ from manifest")
        return {
            passage: states[offsets[i] : offsets[i + 1]].clone()
            for i, passage in enumerate(manifest.passages)
        }

    # -- writing ---------------------------------------------------------------------------------------------

    def store(self, ratio: int, states: Mapping[str, torch.Tensor]) -> list[Path]:
        """Write new shards for these passages (sha256 → pooled [W, d]); returns the shard paths."""
        passages = sorted(states)  # deterministic shard contents and names
        written = []
        for start in range(0, len(passages), self.passages_per_shard):
            chunk = passages[start : start + self.passages_per_shard]
            written.append(self._write_shard(ratio, {p: states[p] for p in chunk}))
        return written

    def _write_shard(self, ratio: int, states: Mapping[str, torch.Tensor]) -> Path:
        passages = list(states)
        lengths = [int(states[p].shape[0]) for p in passages]
        offsets = [0]
        for length in lengths:
            offsets.append(offsets[-1] + length)
        stacked = torch.cat([states[p].detach().to("cpu") for p in passages]).contiguous()
        metadata = {
            "format": SHARD_FORMAT,
            "key": canonical_json(self.key),
            "ratio": str(ratio),
            "passages": json.dumps(passages),
        }
        blob = save_safetensors({"states": stacked, "offsets": torch.tensor(offsets, dtype=torch.int64)}, metadata)
        shard_id = sha256_text("\n".join(passages))[:24]
        shard_path = self.directory / f"r{ratio}" / f"{shard_id}.safetensors"
        with atomic_open(shard_path, "wb") as handle:
            handle.write(blob)
        manifest = ShardManifest(
            format=SHARD_FORMAT,
            key_id=self.key_id,
            key=self.key,
            ratio=ratio,
            dtype=str(stacked.dtype).removeprefix("torch."),
            d_model=int(stacked.shape[-1]),
            passages=passages,
            offsets=offsets,
            file=shard_path.name,
            sha256=sha256_bytes(blob),
            bytes=len(blob),
        )
        write_json_atomic(shard_path.with_suffix(".json"), manifest.__dict__)
        self.bytes_written += len(blob)
        return shard_path


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _safetensors_metadata(blob: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors file: 8-byte little-endian header length, then a JSON header."""
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + header_len])
    return header.get("__metadata__", {})
