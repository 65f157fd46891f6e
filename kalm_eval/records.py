"""Small typed records passed between stages, plus the two helpers every stage needs:
content hashing (run signatures, cache keys) and atomic writes."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any


@dataclass(frozen=True, slots=True)
class Query:
    id: str
    text: str


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    title: str
    text: str

    def passage(self, joiner: str = " ") -> str:
        """Passage text = title + joiner + text (BEIR / MTEB convention; no dangling joiner when a part is empty)."""
        if not self.title:
            return self.text.strip()
        return f"{self.title}{joiner}{self.text}".strip()


@dataclass(frozen=True, slots=True)
class Candidate:
    doc_id: str
    score: float


@dataclass(frozen=True, slots=True)
class RankedList:
    """One query's ranking, best first. Ranks are 1-based positions in `candidates`."""

    query_id: str
    candidates: tuple[Candidate, ...]

    def head(self, depth: int) -> RankedList:
        return RankedList(self.query_id, self.candidates[:depth])


@dataclass(slots=True)
class StageResult:
    """Metrics of one stage (first_stage, reranked): means over all evaluated queries plus per-query values."""

    name: str
    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]  # measure -> query id -> value
    extra: dict[str, Any] = field(default_factory=dict)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def signature_of(obj: Any) -> str:
    """Stable hash of everything that affects a number (sorted-key JSON, no timestamps)."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, compress: bool | None = None) -> Iterator[IO]:
    """Write to a temp file in the target directory and rename it into place only on success.

    `compress` defaults to gzip for paths ending in .gz (with mtime=0 so identical content gives identical bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compress = path.suffix == ".gz" if compress is None else compress
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as raw:
            if compress:
                with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
                    yield _wrap(gz, mode)
            else:
                yield _wrap(raw, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _wrap(binary: IO[bytes], mode: str) -> IO:
    if "b" in mode:
        return binary
    return _NonClosingTextWrapper(binary)


class _NonClosingTextWrapper:
    """A text writer over a binary stream that flushes but never closes it (the context manager owns it)."""

    def __init__(self, binary: IO[bytes]):
        self._binary = binary

    def write(self, text: str) -> int:
        self._binary.write(text.encode("utf-8"))
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    with atomic_open(path) as fh:
        fh.write(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
