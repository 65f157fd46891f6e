"""Corpus access by id without holding every text in memory: an on-disk byte-offset index over a plain JSONL copy.

The index is built once per source file (keyed by its sha256) and reused by later runs; gzip sources are
decompressed into the cache because gzip has no random access."""

from __future__ import annotations

import gzip
import json
import logging
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from kalm_eval.errors import DataError
from kalm_eval.data.readers import iter_jsonl
from kalm_eval.records import Document
from kalm_eval.storage import atomic_open, read_json, sha256_file, write_json_atomic

log = logging.getLogger(__name__)

INDEX_VERSION = 1


class DocStore:
    """Random access to a BEIR-style corpus.jsonl: `store[doc_id] -> Document`, iteration in file order."""

    def __init__(self, source: Path, cache_dir: Path):
        self.source = Path(source)
        self.sha256 = _cached_sha256(self.source, cache_dir)
        self._dir = cache_dir / "docstore" / self.sha256
        if not (self._dir / "index.json").exists():
            self._build()
        meta = read_json(self._dir / "index.json")
        if meta.get("version") != INDEX_VERSION or meta.get("source_sha256") != self.sha256:
            self._build()
            meta = read_json(self._dir / "index.json")
        self._jsonl = self._dir / "corpus.jsonl" if meta["copied"] else self.source
        self._offsets = np.load(self._dir / "offsets.npy")
        with open(self._dir / "ids.json", encoding="utf-8") as fh:
            self.ids: list[str] = json.load(fh)
        self._position = {doc_id: i for i, doc_id in enumerate(self.ids)}
        self._fh = None

    def _build(self) -> None:
        log.info("indexing corpus %s", self.source)
        self._dir.mkdir(parents=True, exist_ok=True)
        copied = self.source.suffix == ".gz"
        plain = self._dir / "corpus.jsonl" if copied else self.source
        if copied:
            with gzip.open(self.source, "rb") as src, atomic_open(plain, "wb", compress=False) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        ids: list[str] = []
        offsets: list[int] = []
        seen: dict[str, int] = {}
        lineno = 0
        with open(plain, "rb") as fh:
            offset = 0
            for lineno, raw in enumerate(fh, start=1):
                if raw.strip():
                    try:
                        obj = json.loads(raw)
                    except json.JSONDecodeError as err:
                        raise DataError(f"{self.source}:{lineno}: invalid JSON ({err.msg})") from None
                    except UnicodeDecodeError as err:
                        raise DataError(f"{self.source}:{lineno}: not valid UTF-8 (byte {err.start + 1} of the line: "
                                        f"{raw[err.start:err.start + 1]!r})") from None
                    if not isinstance(obj, dict) or "_id" not in obj or "text" not in obj:
                        raise DataError(f"{self.source}:{lineno}: corpus line needs '_id' and 'text'")
                    doc_id = str(obj["_id"])
                    if doc_id in seen:
                        raise DataError(f"{self.source}:{lineno}: duplicate doc id {doc_id!r} (first at line {seen[doc_id]})")
                    seen[doc_id] = lineno
                    ids.append(doc_id)
                    offsets.append(offset)
                offset += len(raw)
        if not ids:
            raise DataError(f"{self.source}: empty corpus")
        with atomic_open(self._dir / "offsets.npy", "wb") as fh:
            np.save(fh, np.asarray(offsets, dtype=np.int64))
        with atomic_open(self._dir / "ids.json") as fh:
            fh.write(json.dumps(ids, ensure_ascii=False))
        write_json_atomic(
            self._dir / "index.json",
            {"version": INDEX_VERSION, "source": str(self.source), "source_sha256": self.sha256, "copied": copied, "docs": len(ids)},
        )

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self._position

    def __getitem__(self, doc_id: str) -> Document:
        try:
            position = self._position[doc_id]
        except KeyError:
            raise KeyError(f"doc id {doc_id!r} not in corpus {self.source}") from None
        if self._fh is None:
            self._fh = open(self._jsonl, "rb")
        self._fh.seek(int(self._offsets[position]))
        return _document(json.loads(self._fh.readline()))

    def get_many(self, doc_ids: Iterable[str]) -> list[Document]:
        return [self[doc_id] for doc_id in doc_ids]

    def __iter__(self) -> Iterator[Document]:
        for _, obj in iter_jsonl(self._jsonl, ("_id", "text")):
            yield _document(obj)


def _document(obj: dict) -> Document:
    return Document(str(obj["_id"]), str(obj.get("title") or ""), str(obj["text"]))


def _cached_sha256(path: Path, cache_dir: Path) -> str:
    """sha256 of a file, memoised by (path, size, mtime) so large corpora are hashed once."""
    stat = path.stat()
    memo = cache_dir / "docstore" / "sha256-memo.json"
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    table = read_json(memo) if memo.exists() else {}
    if key not in table:
        table[key] = sha256_file(path)
        write_json_atomic(memo, table)
    return table[key]
