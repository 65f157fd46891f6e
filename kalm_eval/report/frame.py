"""Result records as one tidy pandas DataFrame: the single table every report table and the suite summary start from.

One row per evaluated unit × stage × measure (a record is one unit, one model, one ratio or cascade plan), with the
record's protocol, timings and identity repeated on each row:

    path, signature, finished_at                     where the record lives, which one it is
    benchmark, unit, dataset, subset, subset_mean    `lmeb/LoCoMo/multi_hop` -> dataset `lmeb/LoCoMo`, subset
                                                     `multi_hop`, subset_mean True (the dataset scores as the mean
                                                     over its subsets); a two-part name is its own dataset
    memory_type, split                               LMEB memory type (provenance.config.benchmark), data split
    first_stage, first_stage_model, first_stage_key, first_stage_depth
    reranker, model, model_key, checkpoint, revision, dtype, weights, generation
                                                     family (kalm | qwen3 | ...), label, identity hash, hub id ...,
                                                     checkpoint generation (r1 | r2 | NA = unknown)
    compression, rerank_depth, instruction, instruction_sha, tail, cascade, plan
    latency_p50, latency_p95, pairs_per_s, encode_ms_per_passage, latency_device, latency_dtype, warmup_batches,
    online_ms_per_query, stored_bytes_per_passage, pooled_vectors_per_passage, pairs, total_s, score_s, encode_s,
    passages_encoded                                 timings.latency (warm, timed apart), timings, counts
    stage, measure, value, queries                   stages.<stage>.<measure> (and stage extras: recall_ceiling,
                                                     roc_auc ...), with the stage's number of judged queries

Missing numbers are NA (never 0); integer columns are pandas' nullable Int64."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from kalm_eval.report import labels
from kalm_eval.result import ResultRecord, discover

RECORD_COLUMNS = [
    "path", "signature", "finished_at", "benchmark", "unit", "dataset", "subset", "subset_mean", "memory_type", "split",
    "first_stage", "first_stage_model", "first_stage_key", "first_stage_depth",
    "reranker", "model", "model_key", "checkpoint", "revision", "dtype", "weights", "generation",
    "compression", "rerank_depth", "instruction", "instruction_sha", "tail", "cascade", "plan",
    "latency_p50", "latency_p95", "pairs_per_s", "encode_ms_per_passage", "latency_device", "latency_dtype",
    "warmup_batches", "online_ms_per_query", "stored_bytes_per_passage", "pooled_vectors_per_passage", "pairs", "total_s",
    "score_s", "encode_s", "passages_encoded",
]
MEASURE_COLUMNS = ["stage", "measure", "value", "queries"]
COLUMNS = RECORD_COLUMNS + MEASURE_COLUMNS
INT_COLUMNS = ["first_stage_depth", "compression", "rerank_depth", "warmup_batches", "queries", "pairs",
               "passages_encoded"]
FLOAT_COLUMNS = ["value", "latency_p50", "latency_p95", "pairs_per_s", "encode_ms_per_passage", "online_ms_per_query",
                 "stored_bytes_per_passage", "pooled_vectors_per_passage", "total_s", "score_s", "encode_s"]


def load_results(paths: Iterable[str | Path] | str | Path) -> pd.DataFrame:
    """Every complete result record under `paths` (deduplicated by signature) as one tidy DataFrame."""
    return results_frame(discover(paths).records)


def results_frame(records: Iterable[ResultRecord]) -> pd.DataFrame:
    rows = [row for record in records for row in record_rows(record)]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for column in INT_COLUMNS:
        frame[column] = pd.array(frame[column].tolist(), dtype="Int64")
    for column in FLOAT_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    frame["subset_mean"] = frame["subset_mean"].astype(bool)
    return frame


def record_rows(record: ResultRecord) -> list[dict[str, Any]]:
    fields = record_fields(record)
    rows = []
    for stage, values in record.stages.items():
        queries = (values or {}).get("queries")
        for measure, value in (values or {}).items():
            number = _number(value)
            if measure == "queries" or number is None:
                continue
            rows.append({**fields, "stage": stage, "measure": measure, "value": number,
                         "queries": None if queries is None else int(queries)})
    return rows


def record_fields(record: ResultRecord) -> dict[str, Any]:
    return {**_where(record), **_first_stage(record), **_model(record), **_plan(record), **_costs(record)}


def _where(record: ResultRecord) -> dict[str, Any]:
    parts = record.dataset.split("/")
    benchmark = (record.provenance.get("config") or {}).get("benchmark") or {}
    return {"path": str(record.path) if record.path else None, "signature": record.signature,
            "finished_at": record.finished_at, "benchmark": record.benchmark, "unit": record.dataset,
            "dataset": "/".join(parts[:2]), "subset": "/".join(parts[2:]) or None, "subset_mean": len(parts) > 2,
            "memory_type": benchmark.get("memory_type"), "split": record.split}


def _first_stage(record: ResultRecord) -> dict[str, Any]:
    source = labels.first_stage_source(record)
    return {"first_stage": labels.first_stage_label(record), "first_stage_model": source.get("model"),
            "first_stage_key": labels.first_stage_key(record), "first_stage_depth": record.first_stage_depth}


def _model(record: ResultRecord) -> dict[str, Any]:
    model = labels.model_identity(record)
    if model is None:
        return {}
    return {"reranker": model.family, "model": model.label, "model_key": model.key, "checkpoint": model.checkpoint,
            "revision": model.revision, "dtype": model.dtype, "weights": model.weights, "generation": model.generation}


def _plan(record: ResultRecord) -> dict[str, Any]:
    if not record.reranked:
        return {}
    reranker = record.reranker or {}
    return {"compression": record.compression, "rerank_depth": record.rerank_depth, "instruction": record.instruction,
            "instruction_sha": labels.instruction_hash(record.instruction), "tail": reranker.get("tail"),
            "cascade": labels.cascade_text(record), "plan": labels.plan_text(record)}


def _costs(record: ResultRecord) -> dict[str, Any]:
    latency = record.timings.get("latency") or {}
    ratio = None if record.compression is None else str(record.compression)
    return {"latency_p50": latency.get("ms_per_pair_p50"), "latency_p95": latency.get("ms_per_pair_p95"),
            "pairs_per_s": latency.get("pairs_per_s"), "encode_ms_per_passage": latency.get("encode_ms_per_passage"),
            "latency_device": latency.get("device"), "latency_dtype": latency.get("dtype"),
            "warmup_batches": latency.get("warmup_batches"),
            "online_ms_per_query": record.timings.get("online_ms_per_query"),
            "stored_bytes_per_passage": _per_ratio(record.counts.get("stored_bytes_per_passage"), ratio),
            "pooled_vectors_per_passage": _per_ratio(record.counts.get("pooled_vectors_per_passage"), ratio),
            "pairs": record.counts.get("pairs"), "total_s": record.timings.get("total_s"),
            "score_s": record.timings.get("score_s"), "encode_s": record.timings.get("encode_s"),
            "passages_encoded": record.counts.get("passages_encoded")}


def _per_ratio(values: Any, ratio: str | None) -> Any:
    """counts.<x>_per_passage maps the ratio r (as a string) to a number; a cascade or another family has none."""
    return values.get(ratio) if isinstance(values, dict) and ratio is not None else None


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
