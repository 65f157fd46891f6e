"""Discovery and defensive reading of result records."""

from __future__ import annotations

import json
import shutil

from kalm_eval.report.results import load_records

from .conftest import write_record


def test_reads_whole_trees_and_dedupes_by_signature(tmp_path):
    a = write_record(tmp_path / "results/runs/beir__scifact/bm25-nano-r4-abc", model="nano", ratio=4,
                     finished_at="2026-11-26T00:00:00+00:00")
    # the same run copied into a multirun folder (same signature), newer
    copy = tmp_path / "results/multirun/2026-11-26/0/rec"
    shutil.copytree(a, copy)
    meta = json.loads((copy / "metrics.json").read_text())
    meta["provenance"]["finished_at"] = "2026-11-27T00:00:00+00:00"
    (copy / "metrics.json").write_text(json.dumps(meta))
    write_record(tmp_path / "results/runs/beir__scifact/bm25-nano-r32-abc", model="nano", ratio=32)
    (tmp_path / "results/runs/broken").mkdir(parents=True)
    (tmp_path / "results/runs/broken/metrics.json").write_text("{not json")
    (tmp_path / "results/cache/x").mkdir(parents=True)
    (tmp_path / "results/cache/x/metrics.json").write_text("{}")  # cache folders are never scanned

    recs = load_records([tmp_path / "results/runs", tmp_path / "results/multirun", tmp_path / "nope"])
    assert sorted(r.ratio for r in recs) == [4, 32]
    r4 = next(r for r in recs if r.ratio == 4)
    assert r4.path == copy and r4.duplicates == [a]  # newest kept, the other listed
    assert r4.model.label == "nano" and r4.model.checkpoint == "KaLM-Embedding/KaLM-Reranker-V1-Nano"
    assert r4.model.dtype == "bfloat16" and not r4.model.local and not r4.model.random


def test_missing_fields_are_none_never_zero(tmp_path):
    d = write_record(tmp_path / "rec", model="small", ratio=8, latency=None, stored_bytes=None)
    meta = json.loads((d / "metrics.json").read_text())
    del meta["timings"], meta["counts"]
    (d / "metrics.json").write_text(json.dumps(meta))
    (rec,) = load_records(d)
    lat = rec.latency
    assert not lat.recorded
    assert lat.ms_per_pair_p50 is None and lat.pairs_per_s is None and lat.device is None
    assert rec.stored_bytes_per_passage is None and rec.whole_run_ms_per_pair is None
    assert rec.value("reranked", "R@1000") is None


def test_latency_and_stored_bytes(tmp_path):
    d = write_record(tmp_path / "rec", model="nano", ratio=4, stored_bytes={"1": 1000, "4": 250})
    (rec,) = load_records(d)
    assert rec.stored_bytes_per_passage == 250
    assert rec.latency.recorded and rec.latency.device == "NVIDIA H100" and rec.latency.warmup_batches == 3
    d2 = write_record(tmp_path / "rec2", model="nano", ratio=4, stored_bytes=321.0)
    assert load_records(d2)[0].stored_bytes_per_passage == 321.0


def test_per_query_and_labels(tmp_path):
    d = write_record(tmp_path / "rec", model="tiny", ratio=1, n_queries=5, values=[0.1, 0.2, 0.3, 0.4, 0.5])
    (rec,) = load_records(d)
    assert rec.per_query("reranked") == {"q0": 0.1, "q1": 0.2, "q2": 0.3, "q3": 0.4, "q4": 0.5}
    assert len(rec.per_query("first_stage")) == 5
    assert rec.model.label == "tiny" and rec.model.random
    d2 = write_record(tmp_path / "rec2", model="mycheckpoint", ratio=1)
    (rec2,) = load_records(d2)
    assert rec2.model.local and rec2.model.label == "mycheckpoint"
    d3 = write_record(tmp_path / "rec3", model=None)
    (rec3,) = load_records(d3)
    assert rec3.model is None and rec3.main_stage == "first_stage" and rec3.first_stage_label == "bm25"


def test_reads_a_real_pipeline_record(tmp_path):
    """A first-stage record exactly as kalm_eval.pipeline writes it (copied from a bm25 SciFact run's shape)."""
    d = tmp_path / "real"
    d.mkdir()
    (d / "metrics.json").write_text(json.dumps({
        "dataset": "beir/scifact", "split": "test", "signature": "a" * 64,
        "stages": {"first_stage": {"nDCG@10": 0.6863, "R@100": 0.9127, "queries": 300}},
        "protocol": {"harness_version": "0.1.0", "dataset": {"name": "beir/scifact", "split": "test"},
                     "first_stage": {"signature": "b" * 64, "source": {"kind": "bm25"}, "depth": 100}, "reranker": None},
        "timings": {"first_stage_s": 0.3}, "counts": {"queries": 300}, "provenance": {}, "files": {"per_query": "per_query.tsv"}}))
    (d / "per_query.tsv").write_text("stage\tmeasure\tquery_id\tvalue\nfirst_stage\tnDCG@10\t1\t0.0\nfirst_stage\tnDCG@10\t3\t1.0\n")
    (rec,) = load_records(d)
    assert rec.reranker is None and rec.ratio is None and rec.model is None
    assert rec.per_query("first_stage") == {"1": 0.0, "3": 1.0}
    assert rec.recall_ceiling == ("R@100", 0.9127)
