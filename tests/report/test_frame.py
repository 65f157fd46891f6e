"""The tidy results frame: one row per unit × stage × measure, protocol columns read from exactly the written keys."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from kalm_eval.report.frame import COLUMNS, load_results, results_frame
from kalm_eval.report.labels import LOCAL, RANDOM, model_identity
from kalm_eval.result import ResultRecord, discover

from .conftest import fbnl_identity, write_record


def one(frame: pd.DataFrame, **where) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for column, value in where.items():
        mask &= frame[column] == value
    (index,) = frame.index[mask]
    return frame.loc[index]


def test_one_row_per_stage_and_measure_with_protocol_columns(tmp_path):
    write_record(tmp_path / "a", model="nano", ratio=4, n_queries=5, values=[0.1, 0.2, 0.3, 0.4, 0.5],
                 fs_values=[0.0, 0.5, 0.5, 0.5, 1.0], roc=(0.9, 0.85, 4))
    frame = load_results(tmp_path)
    assert list(frame.columns) == COLUMNS
    # first stage: nDCG@10, R@100; reranked: nDCG@10, R@100, recall_ceiling, roc_auc, roc_auc_query_mean, roc_auc_queries
    assert len(frame) == 2 + 6
    row = one(frame, stage="reranked", measure="nDCG@10")
    assert row["value"] == pytest.approx(0.3) and row["queries"] == 5
    assert (row["benchmark"], row["unit"], row["dataset"], row["subset"], row["subset_mean"]) == \
        ("beir", "beir/scifact", "beir/scifact", None, False)
    assert (row["reranker"], row["model"], row["checkpoint"], row["weights"]) == \
        ("kalm", "nano", "KaLM-Embedding/KaLM-Reranker-V1-Nano", "hub")
    assert (row["compression"], row["rerank_depth"], row["tail"], row["plan"]) == (4, 100, "first_stage", "top-100 @ r=4")
    assert pd.isna(row["cascade"]) and row["first_stage"] == "bm25" and row["first_stage_depth"] == 100
    assert row["latency_p50"] == pytest.approx(0.7) and row["online_ms_per_query"] == pytest.approx(70.0)
    assert row["stored_bytes_per_passage"] == 64 * 640 * 2 and row["latency_device"] == "NVIDIA H100"
    assert len(row["instruction_sha"]) == 12
    assert one(frame, stage="reranked", measure="roc_auc")["value"] == 0.9
    assert str(frame["compression"].dtype) == "Int64" and str(frame["queries"].dtype) == "Int64"


def test_first_stage_only_and_missing_costs_are_na(tmp_path):
    write_record(tmp_path / "fs", model=None)
    write_record(tmp_path / "l", model="large", ratio=8, latency=None, stored_bytes=None)
    frame = load_results(tmp_path)
    fs = frame[frame["path"].str.endswith("/fs")]
    assert set(fs["stage"]) == {"first_stage"} and fs["reranker"].isna().all() and fs["compression"].isna().all()
    large = one(frame, stage="reranked", measure="nDCG@10", model="large")
    assert pd.isna(large["latency_p50"]) and pd.isna(large["stored_bytes_per_passage"]) and large["compression"] == 8
    assert pd.isna(large["online_ms_per_query"])


def test_lmeb_subset_units(tmp_path):
    write_record(tmp_path / "a", dataset="lmeb/LoCoMo/multi_hop", model=None)
    row = load_results(tmp_path).iloc[0]
    assert (row["unit"], row["dataset"], row["subset"], row["subset_mean"], row["memory_type"]) == \
        ("lmeb/LoCoMo/multi_hop", "lmeb/LoCoMo", "multi_hop", True, "Dialogue")


def test_model_labels_and_weights(tmp_path):
    records = {}
    for name, kw in {"tiny": {"model": "tiny"}, "mine": {"model": "mine"}, "qwen": {"model": "qwen3_reranker_0.6b"},
                     "nested": {"model": "small", "identity": fbnl_identity("small")}}.items():
        records[name] = ResultRecord.load(write_record(tmp_path / name, **kw))
    tiny, mine, qwen, nested = (model_identity(records[k]) for k in ("tiny", "mine", "qwen", "nested"))
    assert (tiny.label, tiny.weights) == ("tiny", RANDOM)
    assert (mine.label, mine.weights, mine.fingerprint) == ("mine", LOCAL, "sha256:" + "ab" * 32)  # the folder's name
    assert (qwen.family, qwen.label, qwen.checkpoint, qwen.weights) == \
        ("qwen3", "qwen3_reranker_0.6b", "Qwen/Qwen3-Reranker-0.6B", "hub")
    # KaLM's fbnl identity nests the loaded model under "model": same fields
    assert (nested.checkpoint, nested.revision, nested.dtype) == \
        ("KaLM-Embedding/KaLM-Reranker-V1-Small", "e8eaadc957a7ae383a4983a483c2c399f1056cd3", "bfloat16")
    frame = results_frame(records.values())
    assert frame.loc[frame["model"] == "qwen3_reranker_0.6b", "compression"].isna().all()


def test_cascade_plan(tmp_path):
    write_record(tmp_path / "c", model="small", cascade=[{"depth": 100, "compression": 32}, {"depth": 20, "compression": 2}])
    row = one(load_results(tmp_path), stage="reranked", measure="nDCG@10")
    assert row["cascade"] == row["plan"] == "top-100 @ r=32 → top-20 @ r=2" and pd.isna(row["compression"])


def test_reads_whole_trees_deduplicated_by_signature(tmp_path):
    a = write_record(tmp_path / "results/runs/beir__scifact/bm25-nano-r4-abc", model="nano", ratio=4)
    copy = tmp_path / "results/multirun/2026-11-26/0/rec"
    shutil.copytree(a, copy)
    meta = json.loads((copy / "metrics.json").read_text())
    meta["provenance"]["finished_at"] = "2026-11-27T00:00:00+00:00"
    (copy / "metrics.json").write_text(json.dumps(meta))
    write_record(tmp_path / "results/runs/beir__scifact/bm25-nano-r32-abc", model="nano", ratio=32)
    (tmp_path / "results/runs/broken").mkdir(parents=True)
    (tmp_path / "results/runs/broken/metrics.json").write_text("{not json")
    found = discover([tmp_path / "results/runs", tmp_path / "results/multirun", tmp_path / "nope"])
    frame = results_frame(found.records)
    assert sorted(frame.loc[frame["measure"] == "nDCG@10", "compression"].dropna().unique()) == [4, 32]
    assert set(frame["path"]) == {str(copy), str(tmp_path / "results/runs/beir__scifact/bm25-nano-r32-abc")}
    assert list(found.duplicates.values()) == [[a]] and len(found.skipped) == 2  # broken record, missing root
