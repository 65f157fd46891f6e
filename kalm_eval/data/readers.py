"""Readers for the BEIR file layout (corpus.jsonl, queries.jsonl, qrels/<split>.tsv; each optionally .gz).

Every malformed line raises DataError naming the file and the 1-based line number. Text is decoded line by line:
bytes that are not UTF-8 are an error naming the file, line and byte (or, with the policy `replace`, replaced by
U+FFFD and counted); a byte-order mark and CRLF line ends are accepted and counted. The counts of one dataset load
are collected by `input_notes()` and land in the dataset's stats (metrics.json counts.data_*)."""

from __future__ import annotations

import contextlib
import contextvars
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ir_measures import Qrel

from kalm_eval.errors import DataError

BOM = "\ufeff"


@dataclass
class InputNotes:
    """What the readers saw while loading one dataset, and the policy for bytes that are not UTF-8."""

    invalid_utf8: str = "error"  # error | replace
    files_with_bom: list[str] = field(default_factory=list)
    crlf_lines: int = 0
    invalid_utf8_lines: list[str] = field(default_factory=list)  # "file:line" (policy replace)

    def stats(self) -> dict[str, object]:
        return {"files_with_bom": len(self.files_with_bom), "crlf_lines": self.crlf_lines,
                "invalid_utf8_lines": len(self.invalid_utf8_lines),
                **({"invalid_utf8_at": self.invalid_utf8_lines[:20]} if self.invalid_utf8_lines else {})}


_NOTES: contextvars.ContextVar[InputNotes | None] = contextvars.ContextVar("kalm_eval_input_notes", default=None)


@contextlib.contextmanager
def input_notes(invalid_utf8: str = "error") -> Iterator[InputNotes]:
    notes = InputNotes(invalid_utf8=invalid_utf8)
    token = _NOTES.set(notes)
    try:
        yield notes
    finally:
        _NOTES.reset(token)


def current_notes() -> InputNotes:
    """The notes of the dataset load in progress (a throw-away default outside `input_notes()`)."""
    return _NOTES.get() or InputNotes()


def utf8_error(path: str | Path, lineno: int, byte: int, value: bytes) -> DataError:
    """The error for bytes that are not UTF-8 under the policy `error` (`byte`: 1-based position in the line)."""
    return DataError(f"{path}:{lineno}: not valid UTF-8 (byte {byte} of the line: {value!r}); fix the file, or set "
                     "benchmark.invalid_utf8=replace to replace and count such bytes")


def open_binary(path: str | Path) -> IO[bytes]:
    path = Path(path)
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, text without its line end) for every line, decoded as UTF-8 (see module docstring)."""
    notes = current_notes()
    with open_binary(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            if raw.endswith(b"\r\n"):
                notes.crlf_lines += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                if notes.invalid_utf8 != "replace":
                    raise utf8_error(path, lineno, err.start + 1, raw[err.start:err.start + 1]) from None
                notes.invalid_utf8_lines.append(f"{path}:{lineno}")
                text = raw.decode("utf-8", errors="replace")
            if lineno == 1 and text.startswith(BOM):
                notes.files_with_bom.append(str(path))
                text = text[1:]
            yield lineno, text.rstrip("\r\n")


def find_file(directory: Path, name: str) -> Path:
    """`name` or `name.gz` inside directory."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.exists():
            return candidate
    raise DataError(f"{directory / name}: not found (nor {name}.gz)")


def iter_jsonl(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-empty line, checking that `required` keys exist."""
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{lineno}: invalid JSON ({err.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        missing = [key for key in required if key not in obj]
        if missing:
            raise DataError(f"{path}:{lineno}: missing field(s) {missing}")
        yield lineno, obj


def read_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for lineno, obj in iter_jsonl(path, ("_id", "text")):
        qid = str(obj["_id"])
        if qid in queries:
            raise DataError(f"{path}:{lineno}: duplicate query id {qid!r}")
        queries[qid] = str(obj["text"])
    return queries


QRELS_HEADER = ("query-id", "corpus-id", "score")


def read_qrels(path: Path) -> list[Qrel]:
    """BEIR qrels TSV with header `query-id corpus-id score` (also accepts headerless 3-column and TREC 4-column)."""
    qrels: list[Qrel] = []
    seen: dict[tuple[str, str], int] = {}
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        if lineno == 1 and not _is_int(fields[-1]):
            if tuple(f.strip() for f in fields) != QRELS_HEADER:
                raise DataError(f"{path}:1: bad qrels header {fields!r}; expected {list(QRELS_HEADER)}")
            continue
        if len(fields) == 4:  # TREC qrels: qid iter docid rel
            fields = [fields[0], fields[2], fields[3]]
        if len(fields) != 3:
            raise DataError(f"{path}:{lineno}: expected 3 columns (query-id, corpus-id, score), got {len(fields)}")
        qid, did, score = (f.strip() for f in fields)
        if not _is_int(score):
            raise DataError(f"{path}:{lineno}: relevance score {score!r} is not an integer")
        if (qid, did) in seen:
            raise DataError(f"{path}:{lineno}: duplicate judgement for ({qid}, {did}), first at line {seen[qid, did]}")
        seen[qid, did] = lineno
        qrels.append(Qrel(qid, did, int(score)))
    if not qrels:
        raise DataError(f"{path}: no judgements")
    return qrels


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
