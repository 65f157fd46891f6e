"""Build (or reuse) the first-stage run for a dataset: a TREC run + JSON manifest, keyed by everything that shapes it.

Rerankers of every size and ratio then stream candidates from that one file, query by query."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kalm_eval import __version__
from kalm_eval.data import Dataset
from kalm_eval.data.dataset import restrict_to_candidates
from kalm_eval.errors import DataError
from kalm_eval.records import RankedList
from kalm_eval.storage import read_json, sha256_file, signature_of, write_json_atomic
from kalm_eval.retrieval.bm25 import BM25Retriever, BM25Settings
from kalm_eval.retrieval.dense import DenseRetriever, DenseSettings
from kalm_eval.retrieval.runfile import TIE_BREAK, iter_trec, read_trec_validated, write_trec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FirstStageRun:
    """A cached first-stage run: where it is and what produced it."""

    path: Path
    manifest: dict[str, Any]
    reused: bool = False  # served from the cache rather than computed by this call

    def __iter__(self) -> Iterator[RankedList]:
        return iter_trec(self.path)


def make_retriever(cfg: dict[str, Any]):
    kind = cfg["name"]
    fields = {k: v for k, v in cfg.items() if k not in ("name", "depth")}
    if kind == "bm25":
        return BM25Retriever(BM25Settings(**fields))
    if kind == "dense":
        return DenseRetriever(DenseSettings(**fields))
    raise ValueError(f"unknown retriever {kind!r} (bm25 | dense | trec_run)")


def first_stage(dataset: Dataset, retriever_cfg: dict[str, Any], cache_dir: Path, *, force: bool = False) -> FirstStageRun:
    depth = int(retriever_cfg["depth"])
    if retriever_cfg["name"] == "trec_run":
        return _given_run(dataset, retriever_cfg, cache_dir, depth)
    retriever = make_retriever(retriever_cfg)
    source = retriever.identity()
    key = {"dataset": dataset.identity(), "source": source, "depth": depth, "tie_break": TIE_BREAK}
    signature = signature_of(key)
    path = cache_dir / "first_stage" / dataset.name.replace("/", "__") / f"{signature[:16]}.trec.gz"
    manifest_path = path.with_name(path.name.replace(".trec.gz", ".manifest.json"))
    if not force and path.exists() and manifest_path.exists():
        manifest = read_json(manifest_path)
        if manifest.get("signature") == signature and manifest.get("sha256") == sha256_file(path):
            log.info("reusing first-stage run %s", path)
            return FirstStageRun(path, manifest, reused=True)
        log.warning("first-stage cache %s does not match its manifest; rebuilding", path)
    started = time.perf_counter()
    queries = write_trec(path, retriever.retrieve(dataset, depth), tag=source["kind"])
    seconds = time.perf_counter() - started
    manifest = {
        "signature": signature,
        "sha256": sha256_file(path),
        "queries": queries,
        "seconds": seconds,
        "harness_version": __version__,
        **key,
    }
    write_json_atomic(manifest_path, manifest)
    return FirstStageRun(path, manifest)


def _given_run(dataset: Dataset, cfg: dict[str, Any], cache_dir: Path, depth: int) -> FirstStageRun:
    """A user's run file: validate against the dataset, re-rank by our tie rule, store a normalised copy."""
    source_path = Path(cfg["path"])
    if not source_path.exists():
        raise DataError(f"{source_path}: run file not found (retriever.path)")
    rankings, report = read_trec_validated(
        source_path,
        queries=set(dataset.queries),
        corpus=dataset.corpus,
        depth=depth if dataset.candidates is None else 1 << 62,  # scenes: cut after filtering
        ignore_identical_ids=dataset.quirks.ignore_identical_ids,
        on_unknown=cfg.get("on_unknown", "error"),
        on_duplicate=cfg.get("on_duplicate", "error"),
    )
    if dataset.candidates is not None:
        # LMEB scenes: a given run may rank the whole corpus; keep each query's scene docs, then its top `depth`.
        rankings, scene_report = restrict_to_candidates(rankings, dataset)
        rankings = [ranking.head(depth) for ranking in rankings]
        report.update(scene_report)
    for key in ("unknown_query_lines", "unknown_doc_lines", "duplicate_lines", "queries_without_candidates",
                "scene_filtered_lines"):
        if report.get(key):
            log.warning("%s: %s = %d", source_path, key, report[key])
    source = {"kind": "trec_run", "path": str(source_path.resolve()), "sha256": sha256_file(source_path),
              "system": cfg.get("system"), "on_unknown": cfg.get("on_unknown", "error"),
              "on_duplicate": cfg.get("on_duplicate", "error")}
    key = {"dataset": dataset.identity(), "source": source, "depth": depth, "tie_break": "score desc, then given rank, then doc id desc"}
    signature = signature_of(key)
    path = cache_dir / "first_stage" / dataset.name.replace("/", "__") / f"{signature[:16]}.trec.gz"
    order = {qid: i for i, qid in enumerate(dataset.queries)}
    write_trec(path, sorted(rankings, key=lambda r: order[r.query_id]), tag="given")
    manifest = {"signature": signature, "sha256": sha256_file(path), "queries": len(rankings),
                "validation": report, "harness_version": __version__, **key}
    write_json_atomic(path.with_name(path.name.replace(".trec.gz", ".manifest.json")), manifest)
    return FirstStageRun(path, manifest)
