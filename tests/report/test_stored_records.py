"""Every report output on three stored records (tests/report/data/records), compared exactly:

- scifact-bm25           schema 1 (no schema_version), first stage only, per-query 0.25 0.5 0.75 0.5 -> 0.5
- scifact-nano-r4        schema 2, KaLM Nano r=4 (fbnl identity nested under "model"), reranked 1 0.5 0.75 0.5 ->
                         0.6875, ROC-AUC 0.8125 / 0.78125 over 3 queries, p50 0.5 ms/pair, 50 ms/query
- scifact-small-cascade  schema 2, KaLM Small cascade top-100 @ r=32 -> top-20 @ r=2, reranked -> 0.75, 150 ms/query"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kalm_eval.report.aggregate import aggregate_subsets, condition_rows
from kalm_eval.report.cascade_table import cascade_section
from kalm_eval.report.compare import PASS, REFUSED, CompareOptions, compare_records
from kalm_eval.report.frame import load_results
from kalm_eval.report.latency_table import latency_section
from kalm_eval.report.mteb_export import model_name_and_revision
from kalm_eval.report.options import ReportOptions
from kalm_eval.report.paper import load_paper
from kalm_eval.report.paper_table import paper_sections
from kalm_eval.report.roc_table import roc_section
from kalm_eval.report.summary import Unit, summarize_suite
from kalm_eval.result import ResultRecord, discover

from .helpers import row_starting

STORED = Path(__file__).parent / "data" / "records"
NANO_REV = "1d3dcd79115a77b91b2ece798f536880d2115e48"
SMALL_REV = "e8eaadc957a7ae383a4983a483c2c399f1056cd3"
CASCADE = "top-100 @ r=32 → top-20 @ r=2"


@pytest.fixture(scope="module")
def frame():
    return load_results(STORED)


def rows(frame):
    return aggregate_subsets(condition_rows(frame))


def test_frame_values(frame):
    main = frame[frame["measure"] == "nDCG@10"].set_index(["path", "stage"])["value"]
    assert main.to_dict() == {(str(STORED / "scifact-bm25"), "first_stage"): 0.5,
                              (str(STORED / "scifact-nano-r4"), "first_stage"): 0.5,
                              (str(STORED / "scifact-nano-r4"), "reranked"): 0.6875,
                              (str(STORED / "scifact-small-cascade"), "first_stage"): 0.5,
                              (str(STORED / "scifact-small-cascade"), "cascade_1"): 0.625,
                              (str(STORED / "scifact-small-cascade"), "cascade_2"): 0.75,
                              (str(STORED / "scifact-small-cascade"), "reranked"): 0.75}
    nano = frame[(frame["path"] == str(STORED / "scifact-nano-r4")) & (frame["stage"] == "reranked")]
    extras = nano.set_index("measure")["value"].to_dict()
    assert (extras["roc_auc"], extras["roc_auc_query_mean"], extras["roc_auc_queries"]) == (0.8125, 0.78125, 3.0)
    first = nano.iloc[0]
    assert (first["model"], first["revision"], first["online_ms_per_query"], first["stored_bytes_per_passage"],
            first["pooled_vectors_per_passage"]) == ("nano", NANO_REV, 50.0, 81920.0, 64.0)


def test_paper_table(frame):
    (section,) = paper_sections(rows(frame), load_paper("v1"), ReportOptions(compare_to="average"))
    md = section.markdown()
    assert row_starting(md, "bm25 (first stage) (ours only)") == [
        "bm25 (first stage) (ours only)", "–", "bm25 top-100", "50.00", "partial: 1/13 (50.00)"]
    assert row_starting(md, "nano → KaLM-Reranker-V1-Nano") == [
        "nano → KaLM-Reranker-V1-Nano", "4", "bm25 top-100", "68.75 · 57.41† · Δ +11.34 · FAIL", "partial: 1/13 (68.75)"]
    assert row_starting(md, "small → KaLM-Reranker-V1-Small") == [
        "small → KaLM-Reranker-V1-Small", "32→2", f"bm25 top-100 (cascade {CASCADE})",
        "75.00 · 60.01† · Δ +14.99 · FAIL", "partial: 1/13 (75.00)"]
    csv = section.records
    assert csv.loc[csv["model"].str.startswith("nano") & (csv["dataset"] == "beir/scifact"), "delta"].item() == 11.34


def test_latency_roc_and_cascade(frame):
    latency = latency_section(frame, load_paper("v1"), ReportOptions()).markdown()
    assert row_starting(latency, "beir/scifact", "nano → KaLM-Reranker-V1-Nano") == [
        "beir/scifact", "nano → KaLM-Reranker-V1-Nano", "4", "cuda:0 (NVIDIA H200)", "bfloat16", "68.75", "0.500",
        "0.625", "2000.0", "2.000", "81,920", "1.00x (vs nano)", "1x (paper v1, r unknown)", "50.00", "2", "5.000"]
    roc = roc_section(frame, load_paper("v1"), ReportOptions()).markdown()
    assert row_starting(roc, "beir/scifact", "nano → KaLM-Reranker-V1-Nano") == [
        "beir/scifact", "nano → KaLM-Reranker-V1-Nano", "4", "0.812", "0.781", "3", "", "", ""]
    cascade = cascade_section(rows(frame), None).markdown()  # Small's only plan here is the cascade
    assert row_starting(cascade, CASCADE) == [CASCADE, "75.00", "75.00", "150.00", "1.00x"]
    assert "nano" not in cascade  # Nano has no cascade: no table


def test_gate_on_stored_records(tmp_path):
    nano = ResultRecord.load(STORED / "scifact-nano-r4")
    same = compare_records([nano], [ResultRecord.load(STORED / "scifact-nano-r4")], CompareOptions())
    assert same.exit_code == PASS and same.rows[0].delta == 0.0 and same.rows[0].p == 1.0 and same.rows[0].n == 4
    cascade = compare_records([nano], [ResultRecord.load(STORED / "scifact-small-cascade")], CompareOptions())
    assert cascade.exit_code == REFUSED
    refused = cascade.refused[0]
    assert "reranker.cascade: baseline null, candidate [" in refused and "reranker.compression: baseline 4, candidate null" in refused
    first = compare_records([ResultRecord.load(STORED / "scifact-bm25")], [nano], CompareOptions())
    assert first.exit_code == REFUSED and "reranker: baseline is first stage only" in first.refused[0]


def test_suite_summary_and_mteb_names(tmp_path, frame):
    summary, md = summarize_suite(frame, suite="beir", units=[Unit("beir/scifact", "beir/scifact"), Unit("beir/nq", "beir/nq")])
    assert summary["columns"] == ["first_stage", "nano reranked r=4", f"small reranked {CASCADE}"]
    assert summary["datasets"]["beir/scifact"]["scores"] == {"first_stage": 0.5, "nano reranked r=4": 0.6875,
                                                             f"small reranked {CASCADE}": 0.75}
    assert summary["missing_units"] == ["beir/nq"]
    assert summary["averages"]["mean_over_datasets"]["nano reranked r=4"] == {"mean": 0.6875, "n": 1, "of": 2,
                                                                             "complete": False}
    assert "68.75* (1/2)" in md
    names = {p.name: model_name_and_revision(ResultRecord.load(p)) for p in STORED.iterdir()}
    assert names == {"scifact-bm25": ("kalm-eval/bm25", "no_revision_available"),
                     "scifact-nano-r4": ("KaLM-Embedding/KaLM-Reranker-V1-Nano", f"{NANO_REV}-r4"),
                     "scifact-small-cascade": ("KaLM-Embedding/KaLM-Reranker-V1-Small",
                                               f"{SMALL_REV}-cascade-100r32-20r2")}


def test_stored_tree_reads_once_when_copied(tmp_path):
    shutil.copytree(STORED, tmp_path / "a")
    shutil.copytree(STORED, tmp_path / "b")
    found = discover([tmp_path / "a", tmp_path / "b"])
    assert len(found.records) == 3 and sum(len(v) for v in found.duplicates.values()) == 3
