"""Readers for the BEIR file layout (corpus.jsonl, queries.jsonl, qrels/<split>.tsv; each optionally .gz).

Every malformed line raises DataError naming the file and the 1-based line number."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ir_measures import Qrel

from kalm_eval.errors import DataError


def open_text(path: str | Path) -> IO[str]:
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def find_file(directory: Path, name: str) -> Path:
    """`name` or `name.gz` inside directory."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.exists():
            return candidate
    raise DataError(f"{directory / name}: not found (nor {name}.gz)")


def iter_jsonl(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-empty line, checking that `required` keys exist."""
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
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
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
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
