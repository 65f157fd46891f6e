"""Sweeps: Hydra multirun over model x compression (x benchmark) deduplicates by signature, reruns only what is missing,
and the report reads the whole tree. (The tiny-model report acceptance on real SciFact is in tests/test_rerank_pipeline.py,
sharing its r = 1, 4, 32 run.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kalm_eval.report.build import build_report
from kalm_eval.result import discover

from ..conftest import SHARED_DATA
from ..helpers import run_overrides

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def toy_dataset(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    docs = [{"_id": f"d{i}", "title": f"title {i}", "text": f"document on topic {i % 5} word{i} alpha beta"} for i in range(40)]
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    (root / "queries.jsonl").write_text("\n".join(json.dumps({"_id": f"q{i}", "text": f"topic {i} word{i}"}) for i in range(10)) + "\n")
    (root / "qrels/test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(10)))
    return root


def kalm_eval(cwd: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kalm_eval", *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def test_multirun_dedupes_and_report_reads_the_sweep(tmp_path, monkeypatch):
    """`-m model=nano,small compression=1,4` without a reranker: 4 jobs, one signature, one record; a rerun does nothing."""
    data = toy_dataset(tmp_path / "toy")
    args = ["-m", "benchmark=local", f"benchmark.path={data}", "benchmark.label=toy", "retriever=bm25", "retriever.depth=20",
            "model=nano,small", "compression=1,4"]
    first = kalm_eval(tmp_path, *args)
    assert first.returncode == 0, first.stderr[-3000:] + first.stdout[-3000:]
    log = first.stdout + first.stderr
    assert log.count("already done (same signature)") == 3  # jobs 2-4 hit the record job 1 wrote
    records = discover([tmp_path / "results/runs", tmp_path / "results/multirun"]).records
    assert len(records) == 1 and records[0].dataset == "local/toy"
    # a rerun of any point of the sweep (in-process here, to save a second interpreter start) finds it done
    record = records[0].path / "metrics.json"
    stamp = record.stat().st_mtime_ns
    monkeypatch.chdir(tmp_path)
    (out_dir,) = run_overrides("benchmark=local", f"benchmark.path={data}", "benchmark.label=toy", "retriever=bm25",
                               "retriever.depth=20", "model=small", "compression=4")
    assert out_dir.resolve() == records[0].path.resolve() and record.stat().st_mtime_ns == stamp

    out = build_report(None, tmp_path / "rep", plots=False)  # default roots: results/runs + results/multirun (cwd)
    assert len(out.records) == 1 and (tmp_path / "rep/paper_table.local.md").exists()


@pytest.mark.slow
def test_tiny_model_multirun_sweep(tmp_path):
    """`kalm-eval -m model=tiny compression=1,4`: one record per (model, r) under results/runs, passages encoded once
    (shared cache), a rerun does nothing, and the report reads the sweep."""
    if not (SHARED_DATA / "beir/scifact").exists():
        pytest.skip(f"real data not available: {SHARED_DATA / 'beir/scifact'} is absent")
    args = ["-m", "benchmark=beir/scifact", "retriever=bm25", "reranker=kalm", "reranker.depth=5", "model=tiny",
            "model.doc_max_len=128", "compression=1,4", f"data_dir={SHARED_DATA}"]
    proc = kalm_eval(tmp_path, *args, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    records = discover([tmp_path / "results/runs", tmp_path / "results/multirun"]).records
    assert sorted(r.compression for r in records) == [1, 4]
    again = kalm_eval(tmp_path, *args, timeout=1800)
    assert (again.stdout + again.stderr).count("already done (same signature)") == 2
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        out = build_report(None, tmp_path / "rep")
    finally:
        os.chdir(cwd)
    assert "ndcg_vs_r.beir.png" in {p.name for p in out.plots}
