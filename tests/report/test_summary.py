"""The suite summary built from the results frame: per unit, per dataset (mean over its subsets, null unless
complete), per memory type, averages; missing units listed, never 0; pandas Markdown."""

from __future__ import annotations

import pytest

from kalm_eval.report.frame import load_results
from kalm_eval.report.summary import Unit, summarize_suite
from kalm_eval.result import discover

from .conftest import write_record

UNITS = [Unit("lmeb/LoCoMo/a", "lmeb/LoCoMo", "Dialogue"), Unit("lmeb/LoCoMo/b", "lmeb/LoCoMo", "Dialogue"),
         Unit("lmeb/TMD/x", "lmeb/TMD", "Dialogue"), Unit("lmeb/CovidQA/Covid-QA", "lmeb/CovidQA", "Semantic"),
         Unit("lmeb/LooGLE/L", "lmeb/LooGLE", "Semantic"), Unit("lmeb/LooGLE/S", "lmeb/LooGLE", "Semantic")]
VALUES = {"lmeb/LoCoMo/a": (0.2, {4: 0.4, 32: 0.3}), "lmeb/LoCoMo/b": (0.4, {4: 0.6, 32: 0.5}),
          "lmeb/TMD/x": (0.5, {4: 0.7, 32: 0.6}), "lmeb/CovidQA/Covid-QA": (0.8, {4: 0.9, 32: 0.85}),
          "lmeb/LooGLE/L": (0.1, {4: 0.3, 32: 0.2})}  # LooGLE/S missing


def write_suite(root):
    for name, (first, reranked) in VALUES.items():
        for ratio, value in reranked.items():  # one record per ratio, as the pipeline writes them
            write_record(root / name.replace("/", "__") / f"r{ratio}", dataset=name, model="nano", ratio=ratio,
                         n_queries=4, values=[value] * 4, fs_values=[first] * 4)
    return root


def test_summary_lmeb_aggregation(tmp_path):
    records = discover(write_suite(tmp_path)).records
    s, md = summarize_suite(records, suite="lmeb", units=UNITS, failures={"lmeb/LooGLE/S": "missing file"})
    assert s["columns"] == ["first_stage", "reranked r=4", "reranked r=32"]
    assert s["units"]["lmeb/LoCoMo/a"]["scores"] == pytest.approx({"first_stage": 0.2, "reranked r=4": 0.4,
                                                                     "reranked r=32": 0.3})
    assert len(s["units"]["lmeb/LoCoMo/a"]["records"]) == 2
    assert s["datasets"]["lmeb/LoCoMo"]["scores"]["first_stage"] == pytest.approx(0.3)  # mean over subsets
    assert s["datasets"]["lmeb/LoCoMo"]["scores"]["reranked r=4"] == pytest.approx(0.5)
    assert s["datasets"]["lmeb/LooGLE"]["scores"]["first_stage"] is None  # never a partial or zero score
    assert s["datasets"]["lmeb/LooGLE"]["missing_units"]["first_stage"] == ["lmeb/LooGLE/S"]
    assert s["types"]["Dialogue"]["scores"]["first_stage"] == {"mean": pytest.approx(0.4), "n": 2, "of": 2, "complete": True}
    semantic = s["types"]["Semantic"]["scores"]["first_stage"]
    assert semantic["mean"] == pytest.approx(0.8) and (semantic["n"], semantic["of"], semantic["complete"]) == (1, 2, False)
    overall = s["averages"]["mean_over_datasets"]["first_stage"]
    assert overall["mean"] == pytest.approx((0.3 + 0.5 + 0.8) / 3) and not overall["complete"]
    assert s["averages"]["mean_over_types"]["first_stage"]["mean"] == pytest.approx(0.4)  # complete types only
    assert s["missing_units"] == ["lmeb/LooGLE/S"] and not s["complete"] and s["failures"]
    lines = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("|")]
    assert ["lmeb/LoCoMo (2 subsets)", "30.00", "50.00", "40.00"] in lines
    assert ["Dialogue (2)", "40.00", "60.00", "50.00"] in lines
    assert ["lmeb/LooGLE (2 subsets)", "—", "—", "—"] in lines
    assert ["mean over datasets", "53.33* (3/4)", "70.00* (3/4)", "61.67* (3/4)"] in lines
    assert ["lmeb/LoCoMo/b", "40.00", "60.00", "50.00"] in lines  # subset detail
    assert md.startswith("# lmeb: nDCG@10 (×100)") and "Missing (1): lmeb/LooGLE/S" in md


def test_summary_complete_beir_like_from_a_frame(tmp_path):
    write_record(tmp_path / "a", dataset="beir/a", model=None, n_queries=2, fs_values=[0.5, 0.5])
    write_record(tmp_path / "b", dataset="beir/b", model=None, n_queries=2, fs_values=[0.6, 0.8])
    s, md = summarize_suite(load_results(tmp_path), suite="beir")  # units: those present
    assert s["complete"] and "types" not in s and "mean_over_types" not in s["averages"]
    assert s["columns"] == ["first_stage"] and s["datasets"]["beir/b"]["units"] == 1
    assert s["averages"]["mean_over_datasets"]["first_stage"]["mean"] == pytest.approx(0.6)
    assert ["mean over datasets", "60.00"] in [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines()]


def test_summary_columns_for_other_families_and_cascades(tmp_path):
    write_record(tmp_path / "q", dataset="beir/a", model="qwen3_reranker_0.6b", n_queries=2, values=[0.7, 0.7])
    s, _ = summarize_suite(discover(tmp_path).records, suite="beir")
    assert s["columns"] == ["first_stage", "reranked"] and s["datasets"]["beir/a"]["scores"]["reranked"] == pytest.approx(0.7)
    write_record(tmp_path / "c", dataset="beir/b", model="qwen3_reranker_0.6b", n_queries=2, values=[0.5, 0.5])
    write_record(tmp_path / "k", dataset="beir/a", model="small", n_queries=2, values=[0.6, 0.6],
                 cascade=[{"depth": 100, "compression": 32}, {"depth": 20, "compression": 2}])
    s, _ = summarize_suite(discover(tmp_path).records, suite="beir")
    assert s["columns"] == ["first_stage", "qwen3_reranker_0.6b reranked", "small reranked top-100 @ r=32 → top-20 @ r=2"]


def test_no_results(tmp_path):
    s, md = summarize_suite([], suite="beir", units=[Unit("beir/a", "beir/a")])
    assert s["missing_units"] == ["beir/a"] and s["columns"] == [] and "No results." in md
