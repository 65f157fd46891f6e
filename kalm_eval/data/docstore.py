"""Corpus access by id without a Python object per document: an on-disk, memory-mapped index over a plain JSONL.

Layout under `<cache_dir>/docstore/<sha256 of the corpus file>/`:

    corpus.jsonl, corpus.jsonl.json   plain copy of a gzip source (gzip has no random access) + its size and sha256
    index-v2/meta.json                counts, byte sizes and sha256 of every array, sha256 of the indexed JSONL
    index-v2/hashes.npy   uint64[n]   64-bit blake2b of every id, sorted
    index-v2/order.npy    int[n]      file position of each sorted hash (int32 below 2**31 docs)
    index-v2/offsets.npy  int64[n+1]  byte offset of each document's line in the JSONL; the last entry is its size
    index-v2/id_offsets.npy int64[n+1] and index-v2/id_blob.npy uint8[...]: every id's UTF-8 bytes, in file order

Every array is opened with mmap_mode='r', so opening a 33M-passage corpus costs page-cache, not heap. A lookup
hashes the id, binary-searches the sorted hashes and compares the id bytes (hash collisions are resolved by that
comparison), then reads the line at its offset and checks that its `_id` is the requested one: a mismatch means a
damaged or tampered index, which is logged with its path, discarded, rebuilt and the lookup retried. On open, sizes
and counts are checked against meta.json, small indexes are checksummed in full and large ones round-trip a sample
of ids; the first lookup that misses also checksums the whole index once, so a damaged hash table cannot turn into
silent "not in corpus" answers.

Input policies are those of kalm_eval.data.readers: the build decodes every line (bytes that are not UTF-8 replaced
by U+FFFD), records in meta.json where such bytes, a byte-order mark and CRLF line ends were, and every open
replays that record into the current `input_notes()`: under `benchmark.invalid_utf8=error` an open raises the
same DataError (file, line, byte) a reader would, under `replace` the lines are counted, as are BOM and CRLF."""

from __future__ import annotations

import bisect
import gzip
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kalm_eval.data.readers import BOM, current_notes, utf8_error
from kalm_eval.errors import DataError
from kalm_eval.records import Document
from kalm_eval.storage import atomic_open, read_json, sha256_file, temp_sibling, named_writes, write_json_atomic

log = logging.getLogger(__name__)

INDEX_VERSION = 2
ID_HASH = "blake2b-64"
ARRAYS = ("hashes", "order", "offsets", "id_offsets", "id_blob")
# Below this many index bytes every open checksums the whole index (under a second); above it, a sample round-trips.
FULL_CHECK_BYTES = 256 << 20
SAMPLE_IDS = 16
BUILD_CHUNK = 1 << 20  # ids buffered per flush while indexing
FENCE = 128  # every FENCE-th sorted hash is kept in memory to narrow each binary search to one page of the map


class IndexDamaged(Exception):
    """The on-disk index disagrees with itself or with the corpus file (internal: triggers discard + rebuild)."""


def hash_id_bytes(encoded: bytes) -> int:
    """The 64-bit key of an id (its UTF-8 bytes) in the sorted-hash index."""
    return int.from_bytes(hashlib.blake2b(encoded, digest_size=8).digest(), "little")


def id_hash(doc_id: str) -> int:
    return hash_id_bytes(doc_id.encode("utf-8"))


class DocStore:
    """Random access to a BEIR-style corpus.jsonl: `store[doc_id] -> Document`, iteration in file order.

    Positions are 0-based indexes in file order (the i-th non-empty line); `id_at`, `ids_at`, `position(s)` and
    `iter_batches` work in positions, which is how first stages address their memory-mapped arrays."""

    def __init__(self, source: Path, cache_dir: Path):
        self.source = Path(source)
        self.cache_dir = Path(cache_dir)
        self.sha256 = _cached_sha256(self.source, self.cache_dir)
        self._root = self.cache_dir / "docstore" / self.sha256
        self.index_dir = self._root / f"index-v{INDEX_VERSION}"
        self._copied = self.source.suffix == ".gz"
        self._fd: int | None = None
        self._full_check_done = False
        self._open()
        self._apply_input_policies()

    # -- opening, verification, repair ----------------------------------------------------------------------------

    def _open(self) -> None:
        for attempt in range(3):
            if not (self.index_dir / "meta.json").exists():
                self._build()
            try:
                self._load()
                self._check_on_open()
                return
            except IndexDamaged as err:
                if attempt == 2:
                    raise DataError(f"{self.index_dir}: corpus index of {self.source} still inconsistent after "
                                    f"rebuilding ({err})") from None
                self._discard(str(err))

    def _load(self) -> None:
        self.close()
        try:
            meta = read_json(self.index_dir / "meta.json")
        except (OSError, ValueError) as err:
            raise IndexDamaged(f"unreadable meta.json ({err})") from None
        try:
            self._load_arrays(meta)
        except (KeyError, TypeError, AttributeError) as err:
            raise IndexDamaged(f"meta.json lacks {err}") from None

    def _load_arrays(self, meta: Any) -> None:
        if not isinstance(meta, dict) or meta.get("version") != INDEX_VERSION or meta.get("id_hash") != ID_HASH:
            raise IndexDamaged(f"index format {meta.get('version') if isinstance(meta, dict) else '?'} "
                               f"is not version {INDEX_VERSION}")
        if meta.get("source_sha256") != self.sha256 or meta.get("copied") != self._copied:
            raise IndexDamaged("meta.json describes another corpus file")
        seen = meta.get("input")
        if not isinstance(seen, dict) or not {"bom", "crlf_lines", "invalid_utf8_lines"} <= seen.keys():
            raise IndexDamaged("meta.json lacks the input record (bom, crlf, invalid UTF-8)")
        self._meta = meta
        self._jsonl = self._root / "corpus.jsonl" if self._copied else self.source
        n = int(meta["docs"])
        try:
            jsonl_bytes = self._jsonl.stat().st_size
        except OSError:
            raise IndexDamaged(f"{self._jsonl} is missing") from None
        if jsonl_bytes != meta["jsonl_bytes"]:
            raise IndexDamaged(f"{self._jsonl} has {jsonl_bytes} bytes, the index was built over {meta['jsonl_bytes']}")
        arrays: dict[str, np.ndarray] = {}
        for name in ARRAYS:
            path = self.index_dir / f"{name}.npy"
            expected = meta["files"][name]["bytes"]
            try:
                size = path.stat().st_size
            except OSError:
                raise IndexDamaged(f"{path.name} is missing") from None
            if size != expected:
                raise IndexDamaged(f"{path.name} has {size} bytes, meta.json says {expected}")
            try:
                # A plain ndarray view of the map: memmap's subclass hooks cost microseconds per scalar read.
                arrays[name] = np.load(path, mmap_mode="r", allow_pickle=False).view(np.ndarray)
            except (ValueError, OSError, EOFError) as err:
                raise IndexDamaged(f"{path.name} is not a readable .npy ({err})") from None
        shapes = {"hashes": (n,), "order": (n,), "offsets": (n + 1,), "id_offsets": (n + 1,)}
        for name, shape in shapes.items():
            if arrays[name].shape != shape:
                raise IndexDamaged(f"{name}.npy has shape {arrays[name].shape}, expected {shape}")
        if arrays["hashes"].dtype != np.uint64 or arrays["offsets"].dtype != np.int64 \
                or arrays["id_offsets"].dtype != np.int64 or arrays["id_blob"].dtype != np.uint8 \
                or arrays["order"].dtype.kind != "i":
            raise IndexDamaged("an index array has the wrong dtype")
        if int(arrays["offsets"][-1]) != jsonl_bytes or int(arrays["id_offsets"][-1]) != arrays["id_blob"].shape[0]:
            raise IndexDamaged("offsets do not end at the end of their files")
        self._n = n
        self._max_line = int(meta["max_line_bytes"])
        self._hashes = arrays["hashes"]
        self._order = arrays["order"]
        self._offsets = arrays["offsets"]
        self._id_offsets = arrays["id_offsets"]
        self._id_blob = arrays["id_blob"]
        # Memoryviews of the same maps for the scalar paths: indexing one yields a Python int in ~40 ns, where a
        # numpy scalar read costs ~150 ns and np.searchsorted on one key ~2 us (bisect over the view: ~0.6 us).
        self._hashes_mv = _words(self._hashes, "Q")
        self._fence: list[int] = self._hashes[::FENCE].tolist()  # n / FENCE Python ints (~3 MB at 10M documents)
        self._order_mv = _words(self._order, "i" if self._order.dtype == np.int32 else "q")
        self._offsets_mv = _words(self._offsets, "q")
        self._id_offsets_mv = _words(self._id_offsets, "q")
        self._id_blob_mv = memoryview(self._id_blob).cast("B") if len(self._id_blob) else memoryview(b"")
        self._fd = os.open(self._jsonl, os.O_RDONLY)

    def _apply_input_policies(self) -> None:
        """Replay what the build saw in the corpus bytes into the current dataset load's notes (see module doc)."""
        seen = self._meta["input"]
        notes = current_notes()
        invalid = seen["invalid_utf8_lines"]
        if invalid and notes.invalid_utf8 != "replace":
            first = seen["first_invalid_utf8"]
            self.close()
            raise utf8_error(self.source, first["line"], first["byte"], bytes.fromhex(first["value"]))
        notes.invalid_utf8_lines.extend(f"{self.source}:{line}" for line in invalid)
        if seen["bom"]:
            notes.files_with_bom.append(str(self.source))
        notes.crlf_lines += seen["crlf_lines"]

    def _check_on_open(self) -> None:
        total = sum(f["bytes"] for f in self._meta["files"].values())
        if total <= FULL_CHECK_BYTES:
            self._check_checksums()
            self._full_check_done = True
        n = self._n
        rng = np.random.default_rng()
        sample = np.unique(np.concatenate([np.linspace(0, n - 1, num=min(n, SAMPLE_IDS // 2)).astype(np.int64),
                                           rng.integers(0, n, size=min(n, SAMPLE_IDS // 2))]))
        for position in sample.tolist():
            doc_id = self.id_at(position)
            if self._find(doc_id) != position:
                raise IndexDamaged(f"id {doc_id!r} at position {position} does not round-trip through the hash table")
            self._read_checked(position, doc_id)

    def _check_checksums(self) -> None:
        for name in ARRAYS:
            path = self.index_dir / f"{name}.npy"
            if sha256_file(path) != self._meta["files"][name]["sha256"]:
                raise IndexDamaged(f"{path.name} does not match its sha256 in meta.json")

    def _discard(self, reason: str) -> None:
        """Move a damaged index out of the way (unless another process has already replaced it) and rebuild."""
        loaded = getattr(self, "_meta", {}).get("build_id")
        log.warning("corpus index %s (of %s) is damaged: %s; discarding and rebuilding it", self.index_dir,
                    self.source, reason)
        self.close()
        try:
            current = read_json(self.index_dir / "meta.json").get("build_id")
        except (OSError, ValueError, AttributeError):
            current = None
        if current is None or current == loaded:
            if self.index_dir.exists():
                doomed = temp_sibling(self.index_dir, "damaged")
                try:
                    os.replace(self.index_dir, doomed)
                except OSError:
                    pass  # another process moved it first
                shutil.rmtree(doomed, ignore_errors=True)
        self._full_check_done = False

    def _repair(self, reason: str) -> None:
        self._discard(reason)
        self._open()

    def _after_miss(self) -> bool:
        """A lookup missed: checksum the whole index once per open; True if it was damaged (and is now rebuilt)."""
        if self._full_check_done:
            return False
        self._full_check_done = True
        try:
            self._check_checksums()
        except IndexDamaged as err:
            self._repair(str(err))
            return True
        return False

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def __getstate__(self) -> dict[str, Any]:
        return {"source": self.source, "cache_dir": self.cache_dir}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["source"], state["cache_dir"])

    # -- building ------------------------------------------------------------------------------------------------

    def _plain_copy(self) -> Path:
        """The plain JSONL the offsets point into: the source itself, or a verified decompressed copy."""
        if not self._copied:
            return self.source
        plain = self._root / "corpus.jsonl"
        sidecar = self._root / "corpus.jsonl.json"
        if plain.exists() and sidecar.exists():
            try:
                info = read_json(sidecar)
                if info.get("bytes") == plain.stat().st_size and info.get("source_sha256") == self.sha256:
                    return plain
            except (OSError, ValueError, AttributeError):
                pass
        self._decompress(plain, sidecar)
        return plain

    def _decompress(self, plain: Path, sidecar: Path) -> None:
        log.info("decompressing %s into %s (gzip has no random access)", self.source, plain)
        digest = hashlib.sha256()
        size = 0
        try:
            with gzip.open(self.source, "rb") as src, atomic_open(plain, "wb", compress=False) as dst:
                while block := src.read(1 << 20):
                    digest.update(block)
                    dst.write(block)
                    size += len(block)
        except (OSError, EOFError) as err:
            raise DataError(f"{self.source}: cannot decompress ({err})") from None
        write_json_atomic(sidecar, {"source": str(self.source), "source_sha256": self.sha256, "bytes": size,
                                    "sha256": digest.hexdigest()})

    def _build(self) -> None:
        with named_writes(self.index_dir):  # no space / read-only: named by the index
            self._build_once()

    def _build_once(self) -> None:
        _remove_v1_index(self._root)
        for attempt in range(2):
            plain = self._plain_copy()
            staged = temp_sibling(self.index_dir, "build")
            staged.mkdir(parents=True)
            try:
                meta = _build_index(plain, self.source, staged)
                meta.update({"source": str(self.source), "source_sha256": self.sha256, "copied": self._copied})
                if self._copied:
                    recorded = read_json(self._root / "corpus.jsonl.json").get("sha256")
                    if meta["jsonl_sha256"] != recorded:
                        if attempt == 0:
                            log.warning("%s: decompressed copy is damaged; decompressing again", plain)
                            (self._root / "corpus.jsonl.json").unlink(missing_ok=True)
                            continue
                        raise DataError(f"{plain}: decompressed copy of {self.source} keeps changing")
                elif meta["jsonl_sha256"] != self.sha256:
                    _forget_sha256(self.source, self.cache_dir)
                    raise DataError(f"{self.source}: file changed after it was hashed or while being indexed (sha256 "
                                    f"now {meta['jsonl_sha256']}, recorded {self.sha256}); run again once it is "
                                    "stable (it will be hashed and indexed afresh)")
                write_json_atomic(staged / "meta.json", meta)
                _publish(staged, self.index_dir)
                return
            finally:
                shutil.rmtree(staged, ignore_errors=True)

    # -- lookups -------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._n

    def _id_bytes(self, position: int) -> bytes:
        return self._id_blob_mv[self._id_offsets_mv[position]:self._id_offsets_mv[position + 1]].tobytes()

    def _find(self, doc_id: str) -> int | None:
        """File position of `doc_id`, or None. Equal hashes are walked and their id bytes compared."""
        if not isinstance(doc_id, str):
            return None
        wanted = doc_id.encode("utf-8")
        key = hash_id_bytes(wanted)
        return self._walk(wanted, key, self._lower_bound(key))

    def _lower_bound(self, key: int) -> int:
        """bisect_left of `key` in the sorted hashes: first in the in-memory fence (every FENCE-th hash), then inside
        one FENCE-wide window of the map, so a lookup touches one or two pages instead of ~log2(n) scattered ones."""
        f = bisect.bisect_left(self._fence, key)
        lo = (f - 1) * FENCE + 1 if f else 0
        hi = min(self._n, f * FENCE) if f < len(self._fence) else self._n
        return bisect.bisect_left(self._hashes_mv, key, lo, hi)

    def _walk(self, wanted: bytes, key: int, j: int) -> int | None:
        hashes, order, bounds, blob, n = self._hashes_mv, self._order_mv, self._id_offsets_mv, self._id_blob_mv, self._n
        while j < n and hashes[j] == key:
            position = order[j]
            if 0 <= position < n and blob[bounds[position]:bounds[position + 1]] == wanted:
                return position
            j += 1
        return None

    def _read_checked(self, position: int, doc_id: str) -> dict:
        """The JSON object of the line at `position`, which must carry `_id` == doc_id (else: damaged index)."""
        start, end = self._offsets_mv[position], self._offsets_mv[position + 1]
        if not 0 <= start < end or end - start > self._max_line:  # never read a damaged span of a huge file
            raise IndexDamaged(f"offsets of position {position} do not delimit one line")
        raw = os.pread(self._fd, end - start, start)
        try:
            obj = _parse(raw, at_start=start == 0)
        except json.JSONDecodeError:
            raise IndexDamaged(f"offset {start} of position {position} does not start a JSON line") from None
        if not isinstance(obj, dict) or str(obj.get("_id")) != doc_id or "text" not in obj:
            found = obj.get("_id") if isinstance(obj, dict) else None
            raise IndexDamaged(f"line at offset {start} holds id {found!r}, not {doc_id!r}")
        return obj

    def position(self, doc_id: str) -> int | None:
        """File position of `doc_id`, or None if the corpus lacks it."""
        while True:
            position = self._find(doc_id)
            if position is not None or not self._after_miss():
                return position

    def positions(self, doc_ids: Sequence[str]) -> np.ndarray:
        """File positions of `doc_ids` (int64, -1 where absent), with one vectorised binary search."""
        ids = list(doc_ids)
        out = np.full(len(ids), -1, dtype=np.int64)
        if not ids:
            return out
        encoded = [d.encode("utf-8") if isinstance(d, str) else b"" for d in ids]
        keys = np.fromiter((hash_id_bytes(b) for b in encoded), dtype=np.uint64, count=len(ids))
        starts = np.searchsorted(self._hashes, keys)
        missed = False
        for i, (wanted, key, j) in enumerate(zip(encoded, keys.tolist(), starts.tolist())):
            position = self._walk(wanted, key, j) if isinstance(ids[i], str) else None
            if position is None:
                missed = True
            else:
                out[i] = position
        if missed and self._after_miss():
            return self.positions(ids)
        return out

    def __contains__(self, doc_id: object) -> bool:
        return isinstance(doc_id, str) and self.position(doc_id) is not None

    def __getitem__(self, doc_id: str) -> Document:
        position = self._find(doc_id)
        if position is not None:  # the common case, without the retry machinery
            try:
                return _document(self._read_checked(position, doc_id))
            except IndexDamaged as err:
                self._repair(str(err))
        for _ in range(3):
            position = self.position(doc_id)
            if position is None:
                raise KeyError(f"doc id {doc_id!r} not in corpus {self.source}")
            try:
                return _document(self._read_checked(position, doc_id))
            except IndexDamaged as err:
                self._repair(str(err))
        raise DataError(f"{self.index_dir}: lookups of {doc_id!r} in {self.source} keep failing after rebuilds")

    def get_many(self, doc_ids: Iterable[str]) -> list[Document]:
        ids = list(doc_ids)
        for _ in range(3):
            found = self.positions(ids)
            missing = [d for d, p in zip(ids, found.tolist()) if p < 0]
            if missing:
                raise KeyError(f"doc id {missing[0]!r} not in corpus {self.source}")
            try:
                return [_document(self._read_checked(p, d)) for d, p in zip(ids, found.tolist())]
            except IndexDamaged as err:
                self._repair(str(err))
        raise DataError(f"{self.index_dir}: lookups in {self.source} keep failing after rebuilds")

    # -- positions -----------------------------------------------------------------------------------------------

    def id_at(self, position: int) -> str:
        if not -self._n <= position < self._n:
            raise IndexError(f"position {position} outside corpus of {self._n} docs")
        return self._id_bytes(position % self._n).decode("utf-8")

    def ids_at(self, positions: range | slice | Sequence[int] | np.ndarray) -> list[str]:
        """Ids at file positions; a range/slice of consecutive positions decodes one blob slice."""
        if isinstance(positions, slice):
            positions = range(*positions.indices(self._n))
        if isinstance(positions, range) and positions.step == 1:
            if not len(positions):
                return []
            if positions.start < 0 or positions.stop > self._n:
                raise IndexError(f"positions {positions} outside corpus of {self._n} docs")
            bounds = self._id_offsets[positions.start:positions.stop + 1]
            blob = self._id_blob[int(bounds[0]):int(bounds[-1])].tobytes()
            cuts = (bounds - bounds[0]).tolist()
            return [blob[a:b].decode("utf-8") for a, b in zip(cuts, cuts[1:])]
        return [self.id_at(int(p)) for p in positions]

    @property
    def ids(self) -> Sequence[str]:
        """All ids in file order, as a lazy sequence (no list of n strings is built)."""
        return _IdView(self)

    def iter_batches(self, batch_size: int, start: int = 0, stop: int | None = None) -> Iterator[tuple[list[str], list[Document]]]:
        """(ids, documents) for positions [start, stop) in file order, `batch_size` at a time, read sequentially
        from the JSONL; each line's `_id` is checked against the index's id at that position."""
        stop = self._n if stop is None else stop
        if not 0 <= start <= stop <= self._n or batch_size < 1:
            raise ValueError(f"bad batch range [{start}, {stop}) of {self._n} docs / batch size {batch_size}")
        position = start
        repairs = 0
        while position < stop:
            try:
                for ids, docs in self._read_range(position, stop, batch_size):
                    position += len(ids)
                    yield ids, docs
            except IndexDamaged as err:
                repairs += 1
                if repairs > 2:
                    raise DataError(f"{self.index_dir}: reading {self.source} keeps failing after rebuilds") from None
                self._repair(str(err))

    def _read_range(self, start: int, stop: int, batch_size: int) -> Iterator[tuple[list[str], list[Document]]]:
        position = start
        with open(self._jsonl, "rb") as fh:
            fh.seek(int(self._offsets[start]))
            at_start = int(self._offsets[start]) == 0  # the next line read is the file's first (it may carry a BOM)
            while position < stop:
                upto = min(stop, position + batch_size)
                expected = self.ids_at(range(position, upto))
                ids: list[str] = []
                docs: list[Document] = []
                for doc_id in expected:
                    raw = fh.readline()
                    while raw and not raw.strip():
                        raw = fh.readline()
                    try:
                        obj = _parse(raw, at_start=at_start)
                    except json.JSONDecodeError:
                        raise IndexDamaged(f"no JSON line where position {position + len(ids)} starts") from None
                    if not isinstance(obj, dict) or str(obj.get("_id")) != doc_id or "text" not in obj:
                        raise IndexDamaged(f"position {position + len(ids)} holds id "
                                           f"{obj.get('_id') if isinstance(obj, dict) else None!r}, not {doc_id!r}")
                    at_start = False
                    ids.append(doc_id)
                    docs.append(_document(obj))
                yield ids, docs
                position = upto

    def __iter__(self) -> Iterator[Document]:
        """Every document in file order (read sequentially, checked against the index like `iter_batches`)."""
        for _ids, docs in self.iter_batches(1 << 12):
            yield from docs


class _IdView(Sequence):
    def __init__(self, store: DocStore):
        self._store = store

    def __len__(self) -> int:
        return len(self._store)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self._store.ids_at(index)
        return self._store.id_at(index)

    def __iter__(self) -> Iterator[str]:
        n = len(self._store)
        for start in range(0, n, 1 << 16):
            yield from self._store.ids_at(range(start, min(n, start + (1 << 16))))

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._store


def _words(array: np.ndarray, code: str) -> memoryview:
    """A 1-D integer array as a memoryview of Python-int items (empty arrays included)."""
    if not len(array):
        return memoryview(np.zeros(0, dtype=array.dtype).tobytes()).cast(code)
    return memoryview(array).cast("B").cast(code)


def _parse(raw: bytes, *, at_start: bool) -> Any:
    """A corpus line's JSON value. Bytes that are not UTF-8 become U+FFFD: the open already applied the policy
    (under `error` it refused the corpus), so reads only need the build's decoding. A BOM can start the file only."""
    text = raw.decode("utf-8", errors="replace")
    if at_start and text.startswith(BOM):
        text = text[1:]
    return json.loads(text)


def _document(obj: dict) -> Document:
    return Document(str(obj["_id"]), str(obj.get("title") or ""), str(obj["text"]))


# ---------------------------------------------------------------------------------------------------------------
# Index construction: one streaming pass over the JSONL, ids spilled to temp files in chunks; only the sort of the
# 64-bit hashes holds n-sized arrays in memory (~24 bytes per document).


_SPILLS = ("hashes", "offsets", "id_lengths", "lines", "id_blob")


class _IdSpill:
    """Per-document id hash, byte offset, id length, line number and id bytes, appended to raw files in chunks of
    BUILD_CHUNK documents (so the scan holds one chunk, not the corpus)."""

    def __init__(self, out: Path):
        self.handles = {name: open(out / f"{name}.raw", "wb") for name in _SPILLS}
        self.buffers: dict[str, list] = {name: [] for name in _SPILLS}

    def add(self, encoded_id: bytes, offset: int, lineno: int) -> None:
        self.buffers["hashes"].append(hash_id_bytes(encoded_id))
        self.buffers["offsets"].append(offset)
        self.buffers["id_lengths"].append(len(encoded_id))
        self.buffers["lines"].append(lineno)
        self.buffers["id_blob"].append(encoded_id)
        if len(self.buffers["hashes"]) >= BUILD_CHUNK:
            self.flush()

    def flush(self) -> None:
        b = self.buffers
        self.handles["hashes"].write(np.asarray(b["hashes"], dtype=np.uint64).tobytes())
        for name in ("offsets", "id_lengths", "lines"):
            self.handles[name].write(np.asarray(b[name], dtype=np.int64).tobytes())
        self.handles["id_blob"].write(b"".join(b["id_blob"]))
        for buffer in b.values():
            buffer.clear()

    def close(self) -> None:
        self.flush()
        for handle in self.handles.values():
            handle.close()


@dataclass
class _Scan:
    """What one pass over the JSONL found: documents, bytes, the longest line span, the sha256, input oddities."""

    docs: int = 0
    jsonl_bytes: int = 0
    max_line_bytes: int = 0  # bytes from one document's line to the next one's (blank lines included)
    sha256: str = ""
    bom: bool = False
    crlf_lines: int = 0
    invalid_utf8_lines: list[int] = field(default_factory=list)  # decoded with U+FFFD
    first_invalid_utf8: dict[str, Any] | None = None


def _build_index(plain: Path, source: Path, out: Path) -> dict[str, Any]:
    """Scan the JSONL once (ids spilled to raw files), sort the id hashes (refusing repeated ids), then write the
    index arrays and their metadata."""
    log.info("indexing corpus %s", source)
    scan = _scan_corpus(plain, source, out)
    id_offsets = _sort_ids(out, source, scan.docs)
    _npy_from_raw(out / "offsets.raw", out / "offsets.npy", np.int64, scan.docs + 1,
                  np.int64(scan.jsonl_bytes).tobytes())
    _npy_from_raw(out / "id_blob.raw", out / "id_blob.npy", np.uint8, int(id_offsets[-1]), b"")
    for name in _SPILLS:
        (out / f"{name}.raw").unlink()
    files = {}
    for name in ARRAYS:
        path = out / f"{name}.npy"
        files[name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return {"version": INDEX_VERSION, "id_hash": ID_HASH, "docs": scan.docs, "jsonl_bytes": scan.jsonl_bytes,
            "max_line_bytes": scan.max_line_bytes, "jsonl_sha256": scan.sha256, "build_id": uuid.uuid4().hex,
            "files": files,
            "input": {"bom": scan.bom, "crlf_lines": scan.crlf_lines, "invalid_utf8_lines": scan.invalid_utf8_lines,
                      "first_invalid_utf8": scan.first_invalid_utf8}}


def _scan_corpus(plain: Path, source: Path, out: Path) -> _Scan:
    """One streaming pass: every line hashed into the corpus sha256, every document's id spilled; a malformed line
    is an error naming `source` and the line."""
    digest = hashlib.sha256()
    scan = _Scan()
    spill = _IdSpill(out)
    offset = previous = 0
    with open(plain, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            digest.update(raw)
            if raw.endswith(b"\r\n"):
                scan.crlf_lines += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                scan.invalid_utf8_lines.append(lineno)
                if scan.first_invalid_utf8 is None:
                    scan.first_invalid_utf8 = {"line": lineno, "byte": err.start + 1,
                                               "value": raw[err.start:err.start + 1].hex()}
                text = raw.decode("utf-8", errors="replace")
            if lineno == 1 and text.startswith(BOM):
                scan.bom = True
                text = text[1:]
            if text.strip():
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as err:
                    raise DataError(f"{source}:{lineno}: invalid JSON ({err.msg})") from None
                if not isinstance(obj, dict) or "_id" not in obj or "text" not in obj:
                    raise DataError(f"{source}:{lineno}: corpus line needs '_id' and 'text'")
                scan.max_line_bytes = max(scan.max_line_bytes, offset - previous)
                previous = offset
                spill.add(str(obj["_id"]).encode("utf-8"), offset, lineno)
                scan.docs += 1
            offset += len(raw)
    spill.close()
    if not scan.docs:
        raise DataError(f"{source}: empty corpus")
    scan.max_line_bytes = max(scan.max_line_bytes, offset - previous)
    scan.jsonl_bytes, scan.sha256 = offset, digest.hexdigest()
    return scan


def _sort_ids(out: Path, source: Path, n: int) -> np.ndarray:
    """hashes.npy sorted, order.npy (positions in file order) and id_offsets.npy; only this sort holds n-sized
    arrays (~24 bytes per document). Returns the id offsets."""
    id_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.fromfile(out / "id_lengths.raw", dtype=np.int64), out=id_offsets[1:])
    key = np.fromfile(out / "hashes.raw", dtype=np.uint64)
    order = np.argsort(key, kind="stable")  # equal hashes keep file order: the first occurrence comes first
    key = key[order]
    _check_duplicates(key, order, id_offsets, out, source)
    order = order.astype(np.int32 if n < 2**31 else np.int64)
    np.save(out / "hashes.npy", key, allow_pickle=False)
    np.save(out / "order.npy", order, allow_pickle=False)
    del key, order
    np.save(out / "id_offsets.npy", id_offsets, allow_pickle=False)
    return id_offsets


def _check_duplicates(key: np.ndarray, order: np.ndarray, id_offsets: np.ndarray, out: Path, source: Path) -> None:
    """Raise on a repeated id (naming the line of its second occurrence, as a sequential reader would first see it);
    equal hashes of different ids are collisions and fine."""
    same = np.flatnonzero(key[1:] == key[:-1])
    if not len(same):
        return
    blob = np.memmap(out / "id_blob.raw", dtype=np.uint8, mode="r")
    lines = np.memmap(out / "lines.raw", dtype=np.int64, mode="r")

    def id_of(position: int) -> bytes:
        return blob[int(id_offsets[position]):int(id_offsets[position + 1])].tobytes()

    worst: tuple[int, int, bytes] | None = None  # (line of the repeat, line of the first occurrence, id)
    for j in same.tolist():
        later = int(order[j + 1])
        later_id = id_of(later)
        # the earliest equal-hash entry with the same bytes is the first occurrence
        i = j
        while i > 0 and key[i - 1] == key[j]:
            i -= 1
        for k in range(i, j + 1):
            if id_of(int(order[k])) == later_id:
                repeat = (int(lines[later]), int(lines[int(order[k])]), later_id)
                if worst is None or repeat[0] < worst[0]:
                    worst = repeat
                break
    if worst is not None:
        raise DataError(f"{source}:{worst[0]}: duplicate doc id {worst[2].decode('utf-8')!r} (first at line {worst[1]})")


def _npy_from_raw(raw: Path, target: Path, dtype, count: int, tail: bytes) -> None:
    """Write a 1-D .npy whose payload is the bytes of `raw` (+ `tail`) without loading them."""
    with open(target, "wb") as dst, open(raw, "rb") as src:
        np.lib.format.write_array_header_1_0(dst, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                   "fortran_order": False, "shape": (count,)})
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.write(tail)


def _publish(staged: Path, target: Path) -> None:
    """Rename a finished index into place; if another process published one meanwhile, keep theirs."""
    try:
        os.replace(staged, target)
    except OSError:
        if not (target / "meta.json").exists():
            doomed = temp_sibling(target, "stale")
            os.replace(target, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
            os.replace(staged, target)


def _remove_v1_index(root: Path) -> None:
    """Index files of the version-1 layout (a JSON list of every id) are dead weight once v2 exists."""
    for name in ("index.json", "ids.json", "offsets.npy"):
        path = root / name
        if path.exists():
            log.info("removing version-1 corpus index file %s", path)
            path.unlink(missing_ok=True)


def _forget_sha256(path: Path, cache_dir: Path) -> None:
    """Drop a file's memoised sha256s (its content changed without its size and mtime changing)."""
    memo = cache_dir / "docstore" / "sha256-memo.json"
    try:
        table = read_json(memo)
    except (OSError, ValueError):
        return
    if isinstance(table, dict):
        prefix = f"{path.resolve()}|"
        write_json_atomic(memo, {k: v for k, v in table.items() if not k.startswith(prefix)})


def _cached_sha256(path: Path, cache_dir: Path) -> str:
    """sha256 of a file, memoised by (path, size, mtime) so large corpora are hashed once."""
    if not path.exists():
        raise DataError(f"{path}: corpus file not found")
    stat = path.stat()
    memo = cache_dir / "docstore" / "sha256-memo.json"
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        table = read_json(memo) if memo.exists() else {}
    except (OSError, ValueError):
        table = {}  # a damaged memo only costs a re-hash
    if not isinstance(table, dict):
        table = {}
    if key not in table:
        table[key] = sha256_file(path)
        write_json_atomic(memo, table)
    return table[key]
