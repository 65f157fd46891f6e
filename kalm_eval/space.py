"""Disk space: what a run will write (estimated from the benchmark config's `sizes`, as kalm-eval-plan does), the
free-space check before the spend, and the one-line message when a write fails anyway.

Estimates per dataset (bytes; measured on SciFact's 5,183 passages, 213.6 words each, and rounded up):
- cache_dir: the corpus doc store (an uncompressed copy + index, 7.5 per passage word + 40 per passage), the BM25
  index (4.5 per passage word, twice that while it is built from its spill files) or dense embedding shards
  (corpus x 1024 dimensions x the stored dtype's bytes), the first-stage run (18 per line), rerank units (16 per pair
  and ratio) and persisted pooled states (the cache policy);
- output: per result record the first-stage run, the reranked run (18 per line) and the pair scores (40 per pair).
The check warns (never refuses): estimates are estimates, and caches from earlier runs may already hold the parts.
A write that fails anyway is one WriteFailed line (kalm_eval.storage.writing) quoting these estimates."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kalm_eval.errors import WriteFailed
from kalm_eval.storage import (PERMISSION_ERRNOS, SPACE_ERRNOS, WRITE_ERRNOS, expect_writes, expected_writes,
                               free_bytes, human_bytes, user_path)

log = logging.getLogger(__name__)

DOCSTORE_PER_WORD, DOCSTORE_PER_PASSAGE = 7.5, 40
BM25_PER_WORD = 4.5  # the saved index; its build needs about twice that (spill files beside the index)
DENSE_DIM = 1024  # embedding width assumed before the model is loaded
RUN_PER_LINE, UNIT_PER_PAIR, SCORES_PER_PAIR = 18, 16, 40
STORE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}


@dataclass
class DiskNeeds:
    """Bytes a run (or a suite) will write: into cache_dir and into the result directories."""

    cache_dir: Path
    output: Path
    cache_bytes: int = 0
    output_bytes: int = 0
    parts: dict[str, int] = field(default_factory=dict)

    def __add__(self, other: DiskNeeds) -> DiskNeeds:
        parts = {k: self.parts.get(k, 0) + other.parts.get(k, 0) for k in {**self.parts, **other.parts}}
        return DiskNeeds(self.cache_dir, self.output, self.cache_bytes + other.cache_bytes,
                         self.output_bytes + other.output_bytes, parts)


def estimate(cfg: Any) -> DiskNeeds | None:
    """What one run of `cfg` (a RunConfig) writes, from its benchmark's `sizes`; None when the config states none."""
    sizes = cfg.benchmark.get("sizes") or {}
    queries, corpus = sizes.get("queries"), sizes.get("corpus")
    output = cfg.output_dir or cfg.results_dir
    if not queries or not corpus:
        return None
    words = corpus * float(sizes.get("passage_words") or 100)
    depth = cfg.retriever.depth
    parts = {"doc store": int(words * DOCSTORE_PER_WORD + corpus * DOCSTORE_PER_PASSAGE),
             "first-stage run": int(queries * depth * RUN_PER_LINE)}
    name = cfg.retriever.name
    if name == "bm25":
        parts["bm25 index (peak while built)"] = int(2 * words * BM25_PER_WORD)
    elif hasattr(cfg.retriever.settings, "store_dtype"):
        settings = cfg.retriever.settings
        dtype = settings.store_dtype if settings.store_dtype != "auto" else settings.dtype
        parts["dense embedding shards"] = int(corpus * DENSE_DIM * STORE_BYTES.get(dtype, 4))
    records, record_bytes = 1, queries * depth * RUN_PER_LINE
    if cfg.reranker is not None:
        variants = len(getattr(cfg.reranker, "compressions_scored", ()) or (1,))
        pairs = queries * min(cfg.reranker.depth, depth)
        parts["rerank units"] = pairs * variants * UNIT_PER_PAIR
        records = 1 if getattr(cfg.reranker, "cascade", None) else variants
        record_bytes += queries * depth * RUN_PER_LINE + pairs * SCORES_PER_PAIR
    cache = sum(parts.values())
    parts["result records"] = records * record_bytes
    return DiskNeeds(Path(cfg.cache_dir), Path(output), cache, records * record_bytes, parts)


def check_space(needs: DiskNeeds | None) -> list[str]:
    """Warn (log and return the warnings) where a location has less free space than the run will write there."""
    if needs is None:
        return []
    warnings = []
    for knob, place, wanted in (("cache_dir", needs.cache_dir, needs.cache_bytes),
                                ("results", needs.output, needs.output_bytes)):
        expect_writes(place, wanted)
        free = free_bytes(place)
        if free is not None and free < wanted:
            warnings.append(f"{knob}={place}: {human_bytes(free)} free, this run will write about {human_bytes(wanted)} there "
                            "(kalm-eval-plan's estimate); it may stop with no space left (finished work is kept)")
    same = free_bytes(needs.cache_dir) is not None and _same_fs(needs.cache_dir, needs.output)
    if same and not warnings:
        free = free_bytes(needs.cache_dir) or 0
        if free < needs.cache_bytes + needs.output_bytes:
            warnings.append(f"cache_dir={needs.cache_dir} and results {needs.output} share {human_bytes(free)} free; this "
                            f"run will write about {human_bytes(needs.cache_bytes + needs.output_bytes)} there")
    for warning in warnings:
        log.warning("%s", warning)
    return warnings


def _same_fs(a: Path, b: Path) -> bool:
    def device(path: Path) -> int | None:
        path = Path(path).absolute()
        for candidate in (path, *path.parents):
            if candidate.exists():
                return candidate.stat().st_dev
        return None

    return device(a) == device(b)


def write_failure(path: Path | str | None, err: OSError) -> WriteFailed:
    """The one-line error for a failed write: the path, the reason, and for space what is free and needed."""
    where = user_path(err.filename or path or "?")
    message = f"{where}: cannot write: {err.strerror or err}"
    if err.errno in SPACE_ERRNOS:
        free = free_bytes(where)
        expected = expected_writes(where)
        needed = (f", this run writes about {human_bytes(expected[1])} under {expected[0]} (kalm-eval-plan's "
                  "estimate)") if expected is not None else ""
        message += (f" ({human_bytes(free) if free is not None else 'unknown'} free there{needed}); free space or "
                    "point cache_dir= / results_dir= elsewhere and rerun: finished work is kept, nothing partial was "
                    "left")
    return WriteFailed(message)


@contextmanager
def writing(path: str | Path, *, permission: bool = True) -> Iterator[None]:
    """Turn a failed write under `path` into WriteFailed naming the file (or `path`): no space, quota, file too
    large, read-only file system; no permission where `permission` (a scope that only writes) or where the writer
    marked it (kalm_eval.storage.named_writes)."""
    try:
        yield
    except OSError as err:
        marked = getattr(err, "kalm_eval_write", False)
        if err.errno in WRITE_ERRNOS or (err.errno in PERMISSION_ERRNOS and (permission or marked)):
            raise write_failure(path, err) from None
        raise
