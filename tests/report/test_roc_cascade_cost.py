"""ROC-AUC vs r (with the paper's FiQA figures beside), the cascade table, and the cost-benchmark file."""

from __future__ import annotations

import json

import pytest

from kalm_eval.report.aggregate import aggregate_subsets, condition_rows
from kalm_eval.report.cascade_table import cascade_section
from kalm_eval.report.cost_benchmark import CostBenchmarkError, load_cost_benchmark
from kalm_eval.report.frame import load_results
from kalm_eval.report.latency_table import latency_section
from kalm_eval.report.options import ReportOptions
from kalm_eval.report.paper import load_paper
from kalm_eval.report.plots import plot_roc_auc
from kalm_eval.report.roc_table import roc_rows, roc_section

from .conftest import write_record
from .helpers import row_starting
from .test_plots import assert_png

AUC = {("nano", 2): (0.875, 0.80, 120), ("nano", 32): (0.80, 0.74, 118), ("large", 2): (0.952, 0.9, 121)}


def test_roc_auc_table_with_paper_figures(tmp_path):
    for (model, r), roc in AUC.items():
        write_record(tmp_path / f"{model}{r}", dataset="beir/fiqa", model=model, ratio=r, roc=roc)
    write_record(tmp_path / "other", dataset="beir/scifact", model="nano", ratio=2, roc=(0.7, 0.6, 10))
    write_record(tmp_path / "no_auc", dataset="beir/scifact", model="nano", ratio=4)  # no roc_auc: not a row
    section = roc_section(load_results(tmp_path), load_paper("v1"), ReportOptions())
    md = section.markdown()
    # Dataset, Model, r, pooled, per-query mean, queries, paper, Δ, verdict
    assert row_starting(md, "beir/fiqa", "nano → KaLM-Reranker-V1-Nano", "2")[3:] == \
        ["0.875", "0.800", "120", "0.871", "+0.004", "OK"]
    assert row_starting(md, "beir/fiqa", "nano → KaLM-Reranker-V1-Nano", "32")[3:] == \
        ["0.800", "0.740", "118", "0.832", "-0.032", "FAIL"]
    assert row_starting(md, "beir/fiqa", "large → KaLM-Reranker-V1-Large", "2")[6:] == ["0.952", "+0.000", "OK"]
    assert row_starting(md, "beir/scifact", "nano → KaLM-Reranker-V1-Nano", "2")[6:] == ["", "", ""]
    assert row_starting(md, "beir/fiqa", "KaLM-Reranker-V1-Large (paper only)", "32")[6] == "0.948"
    assert "positive = qrel > 0" in md and "per-query AUCs" in md  # the definition is stated
    assert len(section.records) == 4
    path = plot_roc_auc(roc_rows(load_results(tmp_path), load_paper("v1"), ReportOptions()), tmp_path / "plots",
                        load_paper("v1"))
    assert_png(path)


def test_roc_auc_of_subsets_is_their_mean_and_counts_add(tmp_path):
    write_record(tmp_path / "a", dataset="lmeb/LoCoMo/a", model="nano", ratio=4, roc=(0.8, 0.7, 10))
    write_record(tmp_path / "b", dataset="lmeb/LoCoMo/b", model="nano", ratio=4, roc=(0.6, 0.5, 30))
    (row,) = [r for _, r in roc_rows(load_results(tmp_path), None, ReportOptions()).iterrows()]
    assert row["roc_auc"] == pytest.approx(0.7) and row["roc_auc_query_mean"] == pytest.approx(0.6)
    assert row["roc_auc_queries"] == 40


def test_cascade_table_relative_to_the_cheapest_plan(tmp_path):
    plan = [{"depth": 100, "compression": 32}, {"depth": 20, "compression": 2}]
    for ds in ("beir/scifact", "beir/nfcorpus"):
        write_record(tmp_path / ds / "r2", dataset=ds, model="small", ratio=2, values=[0.62] * 10, n_queries=10,
                     online_ms_per_query=480.0)
        write_record(tmp_path / ds / "r4", dataset=ds, model="small", ratio=4, values=[0.61] * 10, n_queries=10,
                     online_ms_per_query=420.0)
        write_record(tmp_path / ds / "cascade", dataset=ds, model="small", cascade=plan, values=[0.615] * 10,
                     n_queries=10, online_ms_per_query=120.0)
    write_record(tmp_path / "nano", dataset="beir/scifact", model="nano", ratio=4)  # another model: no cascade, no table
    rows = aggregate_subsets(condition_rows(load_results(tmp_path)))
    section = cascade_section(rows, load_paper("v3"))
    md = section.markdown()
    assert row_starting(md, "top-100 @ r=32 → top-20 @ r=2") == ["top-100 @ r=32 → top-20 @ r=2", "61.50", "61.50",
                                                                   "61.50", "120.00", "1.00x"]
    assert row_starting(md, "top-100 @ r=4")[-3:] == ["61.00", "420.00", "3.50x"]
    assert row_starting(md, "top-100 @ r=2")[-3:] == ["62.00", "480.00", "4.00x"]
    assert "cheapest plan shown (top-100 @ r=32 → top-20 @ r=2)" in md
    assert row_starting(md, "beir", "KaLM-Reranker-V1-Small", "cascade top-100 @ r=32 -> top-20 @ r=2")[3] == "61.11"
    assert sum(1 for t in section.tables if t.in_latex) == 1  # one of ours (small); the paper's rows are orientation
    assert cascade_section(aggregate_subsets(condition_rows(load_results(tmp_path / "nano"))), load_paper("v1")) is None


def cost_file(tmp_path, rows=None, **top):
    rows = rows if rows is not None else [
        {"model": "KaLM-Reranker-V1-Nano", "shape": "nano", "r": 4, "device": "NVIDIA H200", "dtype": "bfloat16",
         "ms_per_pair": {"median": 0.1, "min": 0.09, "max": 0.12}, "relative_to_nano": 1.0},
        {"model": "KaLM-Reranker-V1-Large", "shape": "large", "r": 4, "device": "NVIDIA H200", "dtype": "bfloat16",
         "ms_per_pair": {"median": 3.1, "min": 3.0, "max": 3.3}, "relative_to_nano": 31.0}]
    path = tmp_path / "cost.json"
    path.write_text(json.dumps({"schema": "kalm-eval/cost-benchmark", "schema_version": 1, "rows": rows, **top}))
    return path


def test_latency_table_shows_the_cost_benchmark_beside_the_paper(tmp_path):
    write_record(tmp_path / "res/n", model="nano", ratio=4)
    write_record(tmp_path / "res/l", model="large", ratio=4)
    write_record(tmp_path / "res/l8", model="large", ratio=8)
    benchmark = load_cost_benchmark(cost_file(tmp_path, created="2026-12-05"))
    md = latency_section(load_results(tmp_path / "res"), load_paper("v1"), ReportOptions(), benchmark).markdown()
    large4 = row_starting(md, "beir/scifact", "large → KaLM-Reranker-V1-Large", "4")
    assert large4[12:14] == ["43.7x (paper v1, r unknown)", "31.00x (NVIDIA H200, bfloat16)"]
    assert row_starting(md, "beir/scifact", "large → KaLM-Reranker-V1-Large", "8")[13] == "missing"  # not benchmarked
    assert row_starting(md, "KaLM-Reranker-V1-Large", "large") == [
        "KaLM-Reranker-V1-Large", "large", "4", "NVIDIA H200", "bfloat16", "3.1000 [3.0000–3.3000]", "31.00x",
        "43.7x (paper v1, r unknown)"]
    without = latency_section(load_results(tmp_path / "res"), load_paper("v1"), ReportOptions()).markdown()
    assert "benchmark rel. online cost" not in without


@pytest.mark.parametrize("change, message", [
    ({"schema": "other"}, "not a cost-benchmark file"),
    ({"schema_version": 2}, "schema_version 2"),
    ({"rows": []}, "non-empty list"),
    ({"rows": [{"model": "m", "shape": "nano", "r": 4, "device": "d", "dtype": "bf16",
                "ms_per_pair": {"median": 1.0, "min": 2.0, "max": 3.0}, "relative_to_nano": 1.0}]}, "min <= median <= max"),
    ({"rows": [{"model": "m", "shape": "nano", "r": 0, "device": "d", "dtype": "bf16",
                "ms_per_pair": {"median": 1.0, "min": 1.0, "max": 1.0}, "relative_to_nano": None}]}, "positive integer"),
    ({"rows": [{"model": "m", "shape": "nano", "r": 4, "device": "d", "dtype": "bf16",
                "ms_per_pair": {"median": 1.0, "min": 1.0, "max": 1.0}}]}, "missing 'relative_to_nano'"),
])
def test_cost_benchmark_schema_is_checked(tmp_path, change, message):
    path = cost_file(tmp_path)
    raw = {**json.loads(path.read_text()), **change}
    path.write_text(json.dumps(raw))
    with pytest.raises(CostBenchmarkError, match=message):
        load_cost_benchmark(path)
