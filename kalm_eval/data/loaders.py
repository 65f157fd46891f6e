"""Benchmark config (the `benchmark` Hydra group) -> Dataset. One loader per data layout."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from kalm_eval.data.beir import load_beir_benchmark
from kalm_eval.data.dataset import Dataset
from kalm_eval.data.lmeb import load_lmeb
from kalm_eval.data.miracl import load_miracl
from kalm_eval.data.quirks import check_quirks
from kalm_eval.data.readers import input_notes
from kalm_eval.errors import DataError
from kalm_eval.registry import Registry

log = logging.getLogger(__name__)


LOADERS: Registry[Callable[[dict[str, Any], Path], Dataset]] = Registry("benchmark.loader", "dataset loader")
LOADERS.register("beir", load_beir_benchmark)
LOADERS.register("miracl", load_miracl)
LOADERS.register("lmeb", load_lmeb)


INPUT_POLICIES = {"invalid_utf8": ("error", "replace"), "empty_queries": ("keep", "drop")}


def load_dataset(cfg: dict[str, Any], cache_dir: Path) -> Dataset:
    """Load the benchmark's dataset; input oddities are counted into its stats and handled by policy:
    benchmark.invalid_utf8 (error: DataError naming file and line | replace: U+FFFD, counted) and
    benchmark.empty_queries (keep: scored like any query | drop: not evaluated), both recorded in its identity."""
    if "datasets" in cfg:
        raise DataError(f"benchmark {cfg.get('name')!r} is a suite; run it with kalm_eval.suite.run_suite")
    loader = cfg.get("loader", "beir")
    policies = {name: cfg.get(name, choices[0]) for name, choices in INPUT_POLICIES.items()}
    with input_notes(invalid_utf8=policies["invalid_utf8"]) as notes:
        dataset = LOADERS[loader](cfg, cache_dir)
    dataset.policies = policies
    dataset.stats.update(notes.stats())
    _empty_queries(dataset, policies["empty_queries"])
    if notes.files_with_bom or notes.crlf_lines or notes.invalid_utf8_lines:
        log.warning("%s: read %d file(s) with a byte-order mark, %d CRLF line(s), %d line(s) with bytes that are "
                    "not UTF-8 (replaced)", dataset.name, len(notes.files_with_bom), notes.crlf_lines,
                    len(notes.invalid_utf8_lines))
    deviation = check_quirks(dataset.name, dataset.quirks)
    if deviation:
        log.warning("%s", deviation)
    return dataset


def _empty_queries(dataset: Dataset, policy: str) -> None:
    empty = [qid for qid, query in dataset.queries.items() if not query.text.strip()]
    dataset.stats["empty_queries"] = len(empty)
    if not empty:
        return
    dataset.stats["empty_query_ids"] = empty[:20]
    log.warning("%s: %d judged quer(y/ies) with an empty text (%s...): %s", dataset.name, len(empty), empty[:5],
                "not evaluated (benchmark.empty_queries=drop)" if policy == "drop" else
                "scored like any other (benchmark.empty_queries=keep; =drop leaves them out)")
    if policy == "drop":
        dropped = set(empty)
        dataset.dropped_queries = frozenset(dropped)
        dataset.queries = {qid: q for qid, q in dataset.queries.items() if qid not in dropped}
        dataset.qrels = [q for q in dataset.qrels if q.query_id not in dropped]
