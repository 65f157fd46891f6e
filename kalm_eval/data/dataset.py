"""The Dataset record every later stage consumes, and what every loader shares: validation of the loaded parts
against each other (`assemble`), scene candidates, and one corpus copy format (`materialize_corpus`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ir_measures import Qrel

from kalm_eval.data.docstore import DocStore
from kalm_eval.data.quirks import Quirks
from kalm_eval.errors import DataError
from kalm_eval.records import Query, RankedList
from kalm_eval.storage import atomic_open, signature_of, write_json_atomic

log = logging.getLogger(__name__)


@dataclass
class Dataset:
    name: str  # e.g. "beir/scifact"
    split: str
    queries: dict[str, Query]  # only queries judged in this split, in file order
    qrels: list[Qrel]
    corpus: DocStore
    quirks: Quirks
    joiner: str  # title/text joiner of passage texts
    files: dict[str, str] = field(default_factory=dict)  # role -> sha256, for provenance
    stats: dict[str, Any] = field(default_factory=dict)  # counts and reported data issues
    # Per-query candidate sets (LMEB "scenes"): query id -> the only doc ids that query may be ranked against.
    # None = every query ranks the whole corpus. A query absent from the dict also ranks the whole corpus (as
    # LMEB's reference evaluation does when a query has no scene). Part of the identity via files["candidates"].
    candidates: dict[str, tuple[str, ...]] | None = None
    policies: dict[str, str] = field(default_factory=dict)  # input policies (loaders.INPUT_POLICIES), in identity
    # Judged queries left out by an input policy (benchmark.empty_queries=drop): known ids, not evaluated, so a
    # given run that lists them is not "unknown" there.
    dropped_queries: frozenset[str] = frozenset()

    def passage(self, doc_id: str) -> str:
        return self.corpus[doc_id].passage(self.joiner)

    def candidates_for(self, query_id: str) -> tuple[str, ...] | None:
        """The doc ids `query_id` may be ranked against, or None for the whole corpus."""
        if self.candidates is None:
            return None
        return self.candidates.get(query_id)

    def identity(self) -> dict[str, Any]:
        """What about the data affects a number (for run signatures)."""
        return {"name": self.name, "split": self.split, "files": self.files, "quirks": self.quirks.to_dict(),
                "joiner": self.joiner, "input_policies": self.policies}


# ---------------------------------------------------------------------------------------------------------------
# Shared by every loader (beir.py, miracl.py, lmeb.py, mteb_hf.py): one validation path and one corpus copy format.


def assemble(
    *,
    name: str,
    split: str,
    all_queries: dict[str, str],
    qrels: list[Qrel],
    corpus: DocStore,
    quirks: Quirks,
    joiner: str,
    files: dict[str, str],
    sources: dict[str, str],
    candidates: dict[str, tuple[str, ...]] | None = None,
    qrels_without_query: str = "error",
    stats: dict[str, Any] | None = None,
) -> Dataset:
    """Validate loaded parts against each other and build the Dataset (queries = the judged ones, in file order).

    `sources` names the files (role -> path or hub id) for error messages. `qrels_without_query`: "error", or
    "drop" (mteb/LMEB behaviour: a judged query without text is never evaluated; the count is reported)."""
    stats = dict(stats or {})
    judged = list(dict.fromkeys(q.query_id for q in qrels))
    missing_queries = [qid for qid in judged if qid not in all_queries]
    if missing_queries:
        if qrels_without_query != "drop":
            raise DataError(f"{sources.get('qrels')}: {len(missing_queries)} judged query id(s) not in "
                            f"{sources.get('queries')}, e.g. {missing_queries[:5]}")
        log.warning("%s: dropping %d judged query id(s) without a query text, e.g. %s", sources.get("qrels"),
                    len(missing_queries), missing_queries[:5])
        dropped = set(missing_queries)
        qrels = [q for q in qrels if q.query_id not in dropped]
        judged = [qid for qid in judged if qid not in dropped]
        if not qrels:
            raise DataError(f"{sources.get('qrels')}: no judged query has a text in {sources.get('queries')}")
    stats["qrels_queries_without_text"] = len(missing_queries)
    missing_docs = sorted({q.doc_id for q in qrels if q.doc_id not in corpus})
    if missing_docs:
        log.warning("%s: %d judged doc id(s) not in the corpus, e.g. %s", sources.get("qrels"), len(missing_docs),
                    missing_docs[:5])
    queries = {qid: Query(qid, all_queries[qid]) for qid in judged}
    if candidates is not None:
        candidates, scene_stats = _check_candidates(candidates, queries, corpus, sources.get("candidates"))
        stats.update(scene_stats)
    return Dataset(
        name=name,
        split=split,
        queries=queries,
        qrels=qrels,
        corpus=corpus,
        quirks=quirks,
        joiner=joiner,
        files=files,
        stats={"docs": len(corpus), "queries": len(queries), "qrels": len(qrels),
               "qrels_docs_missing_from_corpus": len(missing_docs), **stats},
        candidates=candidates,
    )


def _check_candidates(candidates: dict[str, tuple[str, ...]], queries: dict[str, Query], corpus: DocStore,
                      source: str | None) -> tuple[dict[str, tuple[str, ...]], dict[str, int]]:
    """Keep the judged queries' candidate lists, minus ids the corpus lacks (stale ids can never be ranked)."""
    kept: dict[str, tuple[str, ...]] = {}
    stale = 0
    for qid in queries:
        if qid not in candidates:
            continue
        ids = tuple(dict.fromkeys(d for d in candidates[qid] if d in corpus))
        stale += len(set(candidates[qid])) - len(ids)
        kept[qid] = ids
    without = len(queries) - len(kept)
    empty = sum(1 for ids in kept.values() if not ids)
    if stale:
        log.warning("%s: %d candidate doc id(s) not in the corpus were dropped", source, stale)
    if without:
        # LMEB's reference keeps the full ranking for such queries (and logs a warning); so do we.
        log.warning("%s: %d judged quer(y/ies) without a candidate set rank the whole corpus", source, without)
    if empty:
        log.warning("%s: %d quer(y/ies) have an empty candidate set (they score 0)", source, empty)
    sizes = [len(ids) for ids in kept.values()]
    return kept, {
        "queries_with_candidates": len(kept),
        "queries_without_candidates": without,
        "queries_with_empty_candidates": empty,
        "candidate_ids_not_in_corpus": stale,
        "candidates_per_query_max": max(sizes, default=0),
        "candidates_per_query_mean": round(sum(sizes) / len(sizes), 3) if sizes else 0,
    }


def restrict_to_candidates(rankings: list[RankedList], dataset: Dataset) -> tuple[list[RankedList], dict[str, int]]:
    """Drop every ranked doc outside its query's candidate set (for runs made elsewhere, e.g. a given TREC run),
    keeping order; returns the rankings and counts of what was removed."""
    if dataset.candidates is None:
        return rankings, {"scene_filtered_lines": 0, "scene_filtered_queries": 0}
    removed = touched = 0
    out: list[RankedList] = []
    for ranking in rankings:
        allowed = dataset.candidates_for(ranking.query_id)
        if allowed is None:
            out.append(ranking)
            continue
        allowed_set = set(allowed)
        kept = tuple(c for c in ranking.candidates if c.doc_id in allowed_set)
        if len(kept) != len(ranking.candidates):
            removed += len(ranking.candidates) - len(kept)
            touched += 1
        out.append(RankedList(ranking.query_id, kept))
    return out, {"scene_filtered_lines": removed, "scene_filtered_queries": touched}


def file_identity(paths: list[Path]) -> list[list]:
    """Cheap identity of local source files (path, size, mtime) for cache keys; contents are hashed downstream."""
    out = []
    for path in paths:
        stat = Path(path).stat()
        out.append([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns])
    return out


def materialize_corpus(rows: Iterator[tuple[str, str, str]], *, key: dict[str, Any], cache_dir: Path) -> Path:
    """Write (doc id, title, text) rows once as a BEIR corpus.jsonl (`_id`, `title`, `text`) under
    cache_dir/materialized/<key signature>/ so DocStore can index any upstream layout. `rows` is consumed only
    when the copy does not exist yet; the key must change whenever the source does."""
    target = cache_dir / "materialized" / signature_of(key)[:16] / "corpus.jsonl"
    if target.exists():
        return target
    count = 0
    with atomic_open(target) as fh:
        for doc_id, title, text in rows:
            fh.write(json.dumps({"_id": doc_id, "title": title, "text": text}, ensure_ascii=False) + "\n")
            count += 1
    if not count:
        target.unlink()
        raise DataError(f"{key}: empty corpus")
    write_json_atomic(target.with_name("source.json"), {"key": key, "docs": count})
    return target
