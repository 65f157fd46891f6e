"""The baselines table: KaLM sizes and baseline families in one table, ours beside the paper's, measured ms/pair
beside the paper's analytic relative cost; published rows without a result listed as paper only."""

from __future__ import annotations

import numpy as np

from kalm_eval.report.aggregate import aggregate_subsets, condition_rows
from kalm_eval.report.baselines_table import baselines_section
from kalm_eval.report.frame import load_results
from kalm_eval.report.options import ReportOptions
from kalm_eval.report.paper import load_paper

from .conftest import write_record
from .helpers import md_rows, row_starting


def test_kalm_and_baseline_families_in_one_table(tmp_path):
    for ds, value in (("beir/scifact", 0.60), ("beir/nfcorpus", 0.40)):
        write_record(tmp_path / ds / "nano", dataset=ds, model="nano", ratio=4, values=np.full(300, value))
        write_record(tmp_path / ds / "qwen", dataset=ds, model="qwen3_reranker_0.6b", values=np.full(300, value + 0.1))
    write_record(tmp_path / "miracl" / "gemma", dataset="miracl/sw", model="bge_reranker_v2_gemma", values=np.full(300, 0.7))
    rows = aggregate_subsets(condition_rows(load_results(tmp_path)))
    md = baselines_section(rows, load_paper("v1"), ReportOptions()).markdown()
    nano = row_starting(md, "nano → KaLM-Reranker-V1-Nano")
    qwen = row_starting(md, "qwen3_reranker_0.6b → Qwen3-Reranker-0.6B")
    gemma = row_starting(md, "bge_reranker_v2_gemma → bge-reranker-v2-gemma")
    # Model, Family, r, Params, BEIR ours/paper, MIRACL ours/paper, LMEB ours/paper, ms/pair, measured rel., paper rel.
    assert nano[:6] == ["nano → KaLM-Reranker-V1-Nano", "kalm", "4", "0.27B", "partial: 2/13 (50.00)", "57.41"]
    assert nano[10:] == ["0.700 (NVIDIA H100)", "1.00x (vs nano r=4)", "1x"]
    assert qwen[:6] == ["qwen3_reranker_0.6b → Qwen3-Reranker-0.6B", "qwen3", "–", "0.6B", "partial: 2/13 (60.00)", "59.36"]
    assert qwen[10:] == ["40.000 (NVIDIA H100)", "57.14x (vs nano r=4)", "42.4x"]
    assert gemma[4:8] == ["missing", "", "partial: 1/18 (70.00)", "69.82"] and gemma[-1] == "81.3x"
    assert row_starting(md, "Qwen3-Reranker-8B (paper only)")[-1] == "539.7x"
    assert row_starting(md, "Qwen3-Reranker-8B (paper only)")[9] == "66.42"  # its LMEB number
    assert not [r for r in md_rows(md) if r[0].startswith("KaLM-Embedding-V2.5")]  # the first stage is no reranker row


def test_no_reranked_records_no_section(tmp_path):
    write_record(tmp_path / "fs", model=None)
    rows = aggregate_subsets(condition_rows(load_results(tmp_path)))
    assert baselines_section(rows, load_paper("v1"), ReportOptions()) is None
