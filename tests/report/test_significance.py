"""Sweeps and the baselines table say which differences are real: each value beside its difference from the
reference (r = 1 in a sweep, the reference KaLM row in the baselines table) and the gate's paired test, Holm-adjusted
over the table. Expected p-values are recomputed here with the gate's own functions (report/stats.py)."""

from __future__ import annotations

import numpy as np

from kalm_eval.report import stats
from kalm_eval.report.aggregate import aggregate_subsets, condition_rows
from kalm_eval.report.baselines_table import baselines_section
from kalm_eval.report.frame import load_results
from kalm_eval.report.options import ReportOptions
from kalm_eval.report.paper import load_paper
from kalm_eval.report.sweep_table import sweep_sections

from .conftest import synthetic_values, write_record
from .helpers import row_starting

N = 300
BASE = synthetic_values(N, 0.5, 7)
NOISE = np.random.default_rng(3).normal(0, 0.05, N)
ORDER = sorted(range(N), key=lambda i: f"q{i}")  # queries are paired by id, in id order (as the gate does)


def fmt(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def test_sweep_marks_each_ratio_against_r1(tmp_path):
    values = {1: BASE, 4: np.clip(BASE + NOISE, 0, 1), 32: BASE - 0.1}
    for r, v in values.items():
        write_record(tmp_path / f"nano{r}", model="nano", ratio=r, values=v)
    (section,) = sweep_sections(load_results(tmp_path), load_paper("v1"), ReportOptions())
    md = section.markdown()
    p = stats.holm([stats.randomization_test((values[r] - BASE)[ORDER], 10000, 0) for r in (4, 32)])
    assert row_starting(md, "1")[1] == f"{BASE.mean() * 100:.2f} (ref)"
    d4 = (values[4] - BASE).mean() * 100
    assert row_starting(md, "4")[1] == f"{values[4].mean() * 100:.2f} (Δ {d4:+.2f}, p {fmt(p[0])}{'*' if p[0] < 0.05 else ''})"
    assert row_starting(md, "32")[1] == f"{values[32].mean() * 100:.2f} (Δ -10.00, p {fmt(p[1])}*)"
    assert p[1] < 0.05 <= p[0]  # the constant drop is real, the noise is not
    assert "Holm-adjusted across the 2 comparison(s)" in md
    csv = section.records
    r32 = csv[(csv["row"] == "reranked") & (csv["ratio"] == 32)].iloc[0]
    assert abs(r32["delta_vs_r1"] + 0.1) < 1e-9 and abs(r32["p_holm"] - p[1]) < 1e-12


def test_sweep_without_r1_has_no_marks(tmp_path):
    for r in (4, 32):
        write_record(tmp_path / f"nano{r}", model="nano", ratio=r)
    md = sweep_sections(load_results(tmp_path), load_paper("v1"), ReportOptions())[0].markdown()
    assert "Δ" not in row_starting(md, "32")[1] and "(ref)" not in md


def test_baselines_mark_each_row_against_the_reference_kalm_row(tmp_path):
    for ds in ("beir/scifact", "beir/nfcorpus"):
        write_record(tmp_path / ds / "nano", dataset=ds, model="nano", ratio=4, values=BASE)
        write_record(tmp_path / ds / "small", dataset=ds, model="small", ratio=4, values=np.clip(BASE + NOISE, 0, 1))
        write_record(tmp_path / ds / "qwen", dataset=ds, model="qwen3_reranker_0.6b", values=BASE + 0.05)
    units = condition_rows(load_results(tmp_path))
    rows = aggregate_subsets(units)
    md = baselines_section(rows, load_paper("v1"), ReportOptions(), units).markdown()
    small_d = np.clip(BASE + NOISE, 0, 1) - BASE
    p = stats.holm([stats.stratified_test([BASE * 0 + 0.05, BASE * 0 + 0.05], "randomization", 10000, 0),
                    stats.stratified_test([small_d[ORDER], small_d[ORDER]], "randomization", 10000, 0)])
    nano = row_starting(md, "nano → KaLM-Reranker-V1-Nano")
    qwen = row_starting(md, "qwen3_reranker_0.6b → Qwen3-Reranker-0.6B")
    small = row_starting(md, "small → KaLM-Reranker-V1-Small")
    assert nano[4] == f"partial: 2/13 ({BASE.mean() * 100:.2f}) (ref)"
    assert qwen[4] == f"partial: 2/13 ({(BASE + 0.05).mean() * 100:.2f}) (Δ +5.00, p {fmt(p[0])}*)"
    assert small[4].endswith(f"(Δ {small_d.mean() * 100:+.2f}, p {fmt(p[1])})") and p[1] >= 0.05
    assert nano[6] == "missing"  # no MIRACL result: nothing to mark
    # without the unaggregated rows the table is as before: no marks
    plain = baselines_section(rows, load_paper("v1"), ReportOptions()).markdown()
    assert row_starting(plain, "qwen3_reranker_0.6b → Qwen3-Reranker-0.6B")[4] == "partial: 2/13 (55.00)"
