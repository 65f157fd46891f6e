"""Build (or reuse) the first-stage run of a dataset: a TREC run + JSON manifest, keyed by everything that shapes it.

Rerankers of every family, size and compression then stream candidates from that one file, query by query. Among
several workers, the main one computes a missing run while the others wait (torchrun barrier); retrievers that cut
their own work into units (dense corpus encoding) share it through `workers`."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kalm_eval import __version__
from kalm_eval.data import Dataset
from kalm_eval.parallel import Workers
from kalm_eval.records import RankedList
from kalm_eval.retrieval import family
from kalm_eval.retrieval.runfile import TIE_BREAK, iter_trec, write_trec
from kalm_eval.storage import read_json, sha256_file, signature_of, write_json_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrieverSpec:
    """The `retriever` config group: family name, depth, and the family's validated settings."""

    name: str
    depth: int
    settings: Any


@dataclass(frozen=True)
class FirstStageRun:
    """A cached first-stage run: where it is and what produced it."""

    path: Path
    manifest: dict[str, Any]
    reused: bool = False  # served from the cache rather than computed by this call

    def __iter__(self) -> Iterator[RankedList]:
        return iter_trec(self.path)

    @property
    def signature(self) -> str:
        return self.manifest["signature"]


def first_stage(dataset: Dataset, spec: RetrieverSpec, cache_dir: Path, *, force: bool = False,
                workers: Workers | None = None, progress: bool = True) -> FirstStageRun:
    """The run of `spec` over `dataset`, cached under `cache_dir/first_stage/`. Corpus-side families (BM25 index,
    dense shards) keep their artefacts under `cache_dir` too, and share building them between `workers`."""
    workers = workers or Workers()
    fam = family(spec.name)
    retriever = fam.build(spec.settings, cache_dir=cache_dir, workers=workers, progress=progress)
    key, path, manifest_path = _cache_entry(retriever, dataset, spec, cache_dir)
    signature = signature_of(key)
    if not workers.distributed:
        return _ensure(retriever, dataset, spec.depth, key, path, manifest_path, force)
    if fam.corpus_side and (force or _cached(path, manifest_path, signature) is None):
        retriever.prepare(dataset, spec.depth)  # every rank: shared corpus-side work, with its own barriers
    run = _ensure(retriever, dataset, spec.depth, key, path, manifest_path, force) if workers.is_main else None
    workers.barrier()  # the main worker has built (or found) it
    if run is None:
        run = _cached(path, manifest_path, signature)
        if run is None:
            raise RuntimeError(f"{path}: the main worker did not leave a valid first-stage run")
    return run


def cached_first_stage(dataset: Dataset, spec: RetrieverSpec, cache_dir: Path) -> FirstStageRun | None:
    """The cached run of `spec` over `dataset` if there is a valid one; nothing is computed (kalm-eval-plan)."""
    retriever = family(spec.name).build(spec.settings, cache_dir=cache_dir, workers=Workers(), progress=False)
    key, path, manifest_path = _cache_entry(retriever, dataset, spec, cache_dir)
    return _cached(path, manifest_path, signature_of(key))


def _cache_entry(retriever, dataset: Dataset, spec: RetrieverSpec, cache_dir: Path) -> tuple[dict[str, Any], Path, Path]:
    tie_break = getattr(retriever, "tie_break", TIE_BREAK)
    key = {"dataset": dataset.identity(), "source": retriever.identity(), "depth": spec.depth, "tie_break": tie_break}
    path = cache_dir / "first_stage" / dataset.name.replace("/", "__") / f"{signature_of(key)[:16]}.trec.gz"
    return key, path, path.with_name(path.name.replace(".trec.gz", ".manifest.json"))


def _ensure(retriever, dataset: Dataset, depth: int, key: dict[str, Any], path: Path, manifest_path: Path,
            force: bool) -> FirstStageRun:
    signature = signature_of(key)
    if not force:
        cached = _cached(path, manifest_path, signature)
        if cached is not None:
            return cached
    started = time.perf_counter()
    queries = write_trec(path, retriever.retrieve(dataset, depth), tag=key["source"]["kind"])
    manifest = {"signature": signature, "sha256": sha256_file(path), "queries": queries,
                "seconds": time.perf_counter() - started, "harness_version": __version__, **key}
    if getattr(retriever, "report", None):
        manifest["validation"] = retriever.report
    write_json_atomic(manifest_path, manifest)
    return FirstStageRun(path, manifest)


def _cached(path: Path, manifest_path: Path, signature: str) -> FirstStageRun | None:
    if not (path.exists() and manifest_path.exists()):
        return None
    manifest = read_json(manifest_path)
    if manifest.get("signature") == signature and manifest.get("sha256") == sha256_file(path):
        log.info("reusing first-stage run %s", path)
        return FirstStageRun(path, manifest, reused=True)
    log.warning("first-stage cache %s does not match its manifest; rebuilding", path)
    return None
