"""Paper table, compression sweep and latency tables on synthetic result records."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import pandas as pd

from kalm_eval.report.aggregate import aggregate_subsets, condition_rows
from kalm_eval.report.build import build_report
from kalm_eval.report.frame import load_results
from kalm_eval.report.latency_table import latency_section
from kalm_eval.report.options import ReportOptions
from kalm_eval.report.paper import load_paper
from kalm_eval.report.paper_table import paper_sections
from kalm_eval.report.sweep_table import sweep_sections

from .conftest import write_record


def table_rows(path, measure="nDCG@10"):
    """The paper table's input: newest record per (condition, unit), LMEB subsets averaged."""
    return aggregate_subsets(condition_rows(load_results(path), measure))

BEIR13 = ["arguana", "climate-fever", "dbpedia-entity", "fever", "fiqa", "hotpotqa", "nfcorpus", "nq", "quora", "scidocs",
          "scifact", "trec-covid", "webis-touche2020"]


def md_of(sections, name):
    return next(s for s in sections if s.name == name).markdown()


def row_of(md: str, start: str) -> list[str]:
    line = next(line for line in md.splitlines() if line.startswith(f"| {start}"))
    return [c.strip() for c in line.strip("|").split(" | ")]


def test_tiny_on_scifact_shows_ours_paper_delta_verdict(tmp_path):
    write_record(tmp_path / "r", dataset="beir/scifact", model="tiny", ratio=4, values=np.full(300, 0.0512))
    recs = table_rows(tmp_path)
    paper = load_paper("v1")

    # default: v1 publishes no per-dataset value -> "paper unknown"; tiny matches no paper row -> ours only
    md = md_of(paper_sections(recs, paper, ReportOptions()), "paper_table.beir")
    row = row_of(md, "tiny")
    assert row[0] == "tiny (ours only)" and row[3] == "5.12" and row[4] == "partial: 1/13 (5.12)"

    opts = ReportOptions(paper_row="KaLM-Reranker-V1-Nano")
    md = md_of(paper_sections(recs, paper, opts), "paper_table.beir")
    assert row_of(md, "tiny")[3] == "5.12 · paper unknown"

    opts = ReportOptions(paper_row="KaLM-Reranker-V1-Nano", compare_to="average")
    md = md_of(paper_sections(recs, paper, opts), "paper_table.beir")
    row = row_of(md, "tiny")
    assert row[0] == "tiny → KaLM-Reranker-V1-Nano (chosen)"
    assert row[3] == "5.12 · 57.41† · Δ -52.29 · FAIL"
    long = row_of(md.split("cells compared with the paper")[1], "tiny")
    assert long[2:9] == ["SciFact", "5.12", "57.41†", "unknown", "-52.29", "±0.5 (OKish ×1.5)", "FAIL"]
    assert "not like-for-like" in md and "partial: 1/13" in md


def test_missing_cells_say_missing_not_zero(tmp_path):
    write_record(tmp_path / "a", dataset="beir/scifact", model="nano", ratio=4)
    write_record(tmp_path / "b", dataset="beir/nfcorpus", model="small", ratio=4)
    md = md_of(paper_sections(table_rows(tmp_path), load_paper("v1"), ReportOptions(compare_to="average")), "paper_table.beir")
    nano = row_of(md, "nano")
    assert nano[3] == "missing · paper 57.41†"  # NFCorpus column (suite order: NFCorpus before SciFact)
    small = row_of(md, "small")
    assert small[4] == "missing · paper 60.01†"
    assert " 0.00 " not in md


def test_full_suite_average_is_compared(tmp_path):
    # 13 datasets whose nDCG@10 average to exactly 0.5741 -> OK against Nano's 57.41
    targets = np.linspace(0.40, 0.7482, 13)
    targets += 0.5741 - targets.mean()
    for name, t in zip(BEIR13, targets):
        write_record(tmp_path / name, dataset=f"beir/{name}", model="nano", ratio=4, n_queries=50,
                     values=np.full(50, t))
    sections = paper_sections(table_rows(tmp_path), load_paper("v1"), ReportOptions())
    md = md_of(sections, "paper_table.beir")
    assert row_of(md, "nano")[-1] == "57.41 · 57.41 · Δ +0.00 · OK"
    assert "paper unknown" in row_of(md, "nano")[3]
    records = sections[0].records
    rec = records[(records["dataset"] == "average") & records["model"].str.startswith("nano")].iloc[0]
    assert rec["verdict"] == "OK" and rec["paper"] == 57.41 and abs(rec["ours"] - 0.5741) < 1e-12


def test_suite_columns_option(tmp_path):
    write_record(tmp_path / "a", dataset="beir/scifact", model="nano", ratio=4)
    md = md_of(paper_sections(table_rows(tmp_path), load_paper("v1"), ReportOptions(columns="suite")), "paper_table.beir")
    header = row_of(md, "Model")
    assert len(header) == 3 + 13 + 1 and header[3] == "ArguAna"
    assert row_of(md, "nano")[3] == "missing · paper unknown"


def test_no_paper_table_benchmark(tmp_path):
    write_record(tmp_path / "a", dataset="local/mine", model="nano", ratio=4, values=np.full(300, 0.5))
    md = md_of(paper_sections(table_rows(tmp_path), load_paper("v1"), ReportOptions()), "paper_table.local")
    assert "No published table" in md and "50.00 (mean of 1)" in md


def test_lmeb_subsets_are_averaged_per_dataset(tmp_path):
    for i, sub in enumerate(["a", "b", "c"]):  # REALTALK has 3 subsets
        write_record(tmp_path / sub, dataset=f"lmeb/REALTALK/{sub}", model="nano", ratio=4, n_queries=20,
                     values=np.full(20, 0.5 + 0.1 * i))
    write_record(tmp_path / "lo", dataset="lmeb/LoCoMo/multi_hop", model="nano", ratio=4, n_queries=20,
                 values=np.full(20, 0.3))
    recs = table_rows(tmp_path)
    reranked = recs[recs["kind"] == "reranked"]
    assert sorted(reranked["unit"]) == ["lmeb/LoCoMo", "lmeb/REALTALK"]
    rt = reranked[reranked["unit"] == "lmeb/REALTALK"].iloc[0]
    assert abs(rt["value"] - 0.6) < 1e-12 and rt["subsets"] == 3 and rt["queries"] == 60
    assert rt["subset_units"] == "a, b, c"
    md = md_of(paper_sections(recs, load_paper("v1"), ReportOptions(compare_to="average")), "paper_table.lmeb")
    row = row_of(md, "nano")
    assert row[3] == "partial: 1/5 subsets (30.00)"  # LoCoMo: 1 of 5 subsets, not compared
    assert row[4] == "60.00 · 61.39† · Δ -1.39 · FAIL"  # REALTALK complete (3/3)


def test_sweep_has_first_stage_row_and_recall_ceiling(sweep_tree):
    recs = load_results(sweep_tree)
    (sec,) = sweep_sections(recs, load_paper("v1"), ReportOptions())
    md = sec.markdown()
    scifact = md.split("beir/scifact — first stage")[1]
    assert row_of(scifact, "r") == ["r", "nano", "small", "large"]
    assert row_of(scifact, "first stage (bm25)")[1] == "55.00"
    assert [row_of(scifact, str(r))[0] for r in (1, 4, 32)] == ["1", "4", "32"]
    assert row_of(scifact, "recall ceiling (R@100)")[1] == "91.00"
    assert "mean over 2 datasets" in md
    assert "publishes no per-r nDCG@10 values" in md and "ROC-AUC" in md
    v3 = sweep_sections(recs, load_paper("v3"), ReportOptions())[0].markdown()
    assert "58.75" in v3 and "ROC-AUC" not in v3  # v3 per-r orientation values, no v1 figures


def test_latency_table(tmp_path):
    write_record(tmp_path / "n", model="nano", ratio=4)
    write_record(tmp_path / "s", model="small", ratio=4)
    write_record(tmp_path / "l", model="large", ratio=4, latency=None, stored_bytes=None)
    sec = latency_section(load_results(tmp_path), load_paper("v1"), ReportOptions())
    md = sec.markdown()
    nano, small, large = row_of(md, "beir/scifact | nano"), row_of(md, "beir/scifact | small"), row_of(md, "beir/scifact | large")
    assert nano[3:5] == ["NVIDIA H100", "bfloat16"] and nano[6] == "0.700" and nano[8] == "1428.6"
    assert nano[10] == "81,920" and nano[11] == "1.00x (vs nano)" and nano[12].startswith("1x (paper v1")
    assert small[11] == "6.00x (vs nano)" and small[12].startswith("6.9x")
    assert large[3] == "missing" and large[6] == "missing" and large[10] == "missing" and large[11] == "missing"
    assert large[12].startswith("43.7x") and large[4] == "bfloat16 (model config)"
    assert "1 of 3 rows have no warm latency phase" in md
    rows = sec.records.set_index("model")
    assert pd.isna(rows.at["large", "ms_per_pair_p50"]) and rows.at["nano", "ms_per_pair_p50"] == 0.7
    assert rows.at["small", "measured_relative_cost"] == pytest.approx(6.0) and rows.at["large", "paper_relative_cost"] == 43.7


def test_files_written(sweep_tree, tmp_path):
    out = build_report([sweep_tree], tmp_path / "out", plots=False)
    names = {p.name for p in out.files}
    for n in ("report.md", "paper_table.beir.md", "paper_table.beir.csv", "paper_table.beir.tex",
              "compression_sweep.beir.md", "compression_sweep.beir.csv", "compression_sweep.beir.tex",
              "latency.md", "latency.csv", "latency.tex", "records.csv"):
        assert n in names, n
    tex = (tmp_path / "out/paper_table.beir.tex").read_text()
    assert r"\begin{tabular}{lllrrr}" in tex and r"\bottomrule" in tex
    with open(tmp_path / "out/paper_table.beir.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["dataset"] for r in rows} == {"beir/scifact", "beir/nfcorpus", "average"}
    assert all(r["ours"] != "0" for r in rows)
    assert not out.warnings


def test_subset_aggregation_is_idempotent(tmp_path):
    for i, sub in enumerate(["a", "b"]):
        write_record(tmp_path / sub, dataset=f"lmeb/TMD/{sub}", model="nano", ratio=4, n_queries=2,
                     values=np.full(2, 0.25 + 0.5 * i))
    once = table_rows(tmp_path)
    twice = aggregate_subsets(once)
    assert once.equals(twice)
    reranked = twice[twice["kind"] == "reranked"].iloc[0]
    assert (reranked["unit"], reranked["value"], reranked["subsets"], reranked["subset_units"]) == ("lmeb/TMD", 0.5, 2, "a, b")
