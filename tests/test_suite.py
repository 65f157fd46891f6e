"""Suite runs: units in sequence, skipping finished ones, one summary (per dataset, per LMEB memory type,
averages; missing listed, never 0) as summary.json and summary.md."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf, open_dict

from kalm_eval.data.loaders import load_dataset
from kalm_eval.errors import DataError
from kalm_eval.storage import read_json, write_json_atomic
from kalm_eval.suite import Unit, expand_units, render_markdown, run_suite, summarize
from kalm_eval.config import CONFIG_MODULE
from tests.data.upstream_formats import write_lmeb_fixture


def _compose(*overrides: str):
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def _record(path: Path, first: float, reranked: dict[int, float] | None = None) -> list[Path]:
    """Result records as the pipeline writes them (one per ratio when reranking)."""
    if not reranked:
        write_json_atomic(path / "metrics.json", {"signature": "s", "stages": {"first_stage": {"nDCG@10": first}},
                                                  "protocol": {"reranker": None}})
        return [path]
    out = []
    for ratio, value in reranked.items():
        write_json_atomic(path / f"r{ratio}" / "metrics.json",
                          {"signature": f"s{ratio}",
                           "stages": {"first_stage": {"nDCG@10": first}, "reranked": {"nDCG@10": value}},
                           "protocol": {"reranker": {"compression": ratio}}})
        out.append(path / f"r{ratio}")
    return out


def _unit(name: str, dataset: str, memory_type: str | None = None) -> Unit:
    return Unit(name=name, dataset=dataset, memory_type=memory_type)


def test_summary_lmeb_aggregation(tmp_path):
    units = [_unit("lmeb/LoCoMo/a", "lmeb/LoCoMo", "Dialogue"), _unit("lmeb/LoCoMo/b", "lmeb/LoCoMo", "Dialogue"),
             _unit("lmeb/TMD/x", "lmeb/TMD", "Dialogue"), _unit("lmeb/CovidQA/Covid-QA", "lmeb/CovidQA", "Semantic"),
             _unit("lmeb/LooGLE/L", "lmeb/LooGLE", "Semantic"), _unit("lmeb/LooGLE/S", "lmeb/LooGLE", "Semantic")]
    values = {"lmeb/LoCoMo/a": (0.2, {4: 0.4, 32: 0.3}), "lmeb/LoCoMo/b": (0.4, {4: 0.6, 32: 0.5}),
              "lmeb/TMD/x": (0.5, {4: 0.7, 32: 0.6}), "lmeb/CovidQA/Covid-QA": (0.8, {4: 0.9, 32: 0.85}),
              "lmeb/LooGLE/L": (0.1, {4: 0.3, 32: 0.2})}  # LooGLE/S missing
    results = {name: _record(tmp_path / name.replace("/", "__"), first, rr) for name, (first, rr) in values.items()}
    s = summarize("lmeb", units, results, failures={"lmeb/LooGLE/S": "missing file"})
    assert s["columns"] == ["first_stage", "reranked r=4", "reranked r=32"]
    assert s["datasets"]["lmeb/LoCoMo"]["scores"]["first_stage"] == pytest.approx(0.3)  # mean over subsets
    assert s["datasets"]["lmeb/LoCoMo"]["scores"]["reranked r=4"] == pytest.approx(0.5)
    assert s["datasets"]["lmeb/LooGLE"]["scores"]["first_stage"] is None  # never a partial or zero score
    assert s["datasets"]["lmeb/LooGLE"]["missing_units"]["first_stage"] == ["lmeb/LooGLE/S"]
    dialogue = s["types"]["Dialogue"]["scores"]["first_stage"]
    assert dialogue == {"mean": pytest.approx(0.4), "n": 2, "of": 2, "complete": True}  # (0.3 + 0.5) / 2
    semantic = s["types"]["Semantic"]["scores"]["first_stage"]
    assert semantic["mean"] == pytest.approx(0.8) and not semantic["complete"]
    assert (semantic["n"], semantic["of"]) == (1, 2)
    overall = s["averages"]["mean_over_datasets"]["first_stage"]
    assert overall["mean"] == pytest.approx((0.3 + 0.5 + 0.8) / 3) and not overall["complete"]
    assert s["averages"]["mean_over_types"]["first_stage"]["mean"] == pytest.approx(0.4)  # complete types only
    assert s["missing_units"] == ["lmeb/LooGLE/S"] and not s["complete"] and s["failures"]
    md = render_markdown(s)
    assert "| lmeb/LoCoMo (2 subsets) | 30.00 | 50.00 | 40.00 |" in md
    assert "| Dialogue (2) | 40.00 | 60.00 | 50.00 |" in md
    assert "53.33* (3/4)" in md and "Missing (1): lmeb/LooGLE/S" in md and "| lmeb/LooGLE (2 subsets) | — |" in md


def test_summary_complete_beir_like(tmp_path):
    units = [_unit(f"beir/{n}", f"beir/{n}") for n in ("a", "b")]
    results = {"beir/a": _record(tmp_path / "a", 0.5), "beir/b": _record(tmp_path / "b", 0.7)}
    s = summarize("beir", units, results)
    assert s["complete"] and "types" not in s and "mean_over_types" not in s["averages"]
    assert s["averages"]["mean_over_datasets"]["first_stage"]["mean"] == pytest.approx(0.6)
    assert "| mean over datasets | 60.00 |" in render_markdown(s)


def test_run_suite_skips_done_units_and_lists_failures(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _compose("benchmark=lmeb", f"output_dir={tmp_path / 'suite'}", f"cache_dir={tmp_path / 'cache'}")
    keep = ["LoCoMo", "CovidQA", "LooGLE", "ToolBench"]
    with open_dict(cfg):  # a 4-dataset LMEB suite spanning 3 memory types
        for name in list(cfg.benchmark.datasets):
            if name not in keep:
                del cfg.benchmark.datasets[name]
    calls: list[str] = []

    def fake_runner(run_cfg):
        name = f"{run_cfg.benchmark['name']}/{run_cfg.benchmark['subset']}"
        calls.append(name)
        if name.startswith("lmeb/ToolBench"):
            raise DataError("ToolBench: missing file(s)")
        assert run_cfg.output_dir is None and run_cfg.retriever.name == "bm25"
        return _record(tmp_path / "records" / name.replace("/", "__"), 0.5 if "LoCoMo" in name else 0.25)

    out = run_suite(cfg, runner=fake_runner)
    assert out == tmp_path / "suite" and len(calls) == 5 + 1 + 2 + 1
    summary = read_json(out / "summary.json")
    assert summary["datasets"]["lmeb/LoCoMo"]["scores"]["first_stage"] == pytest.approx(0.5)
    assert summary["types"]["Procedural"]["scores"]["first_stage"]["mean"] is None
    assert summary["missing_units"] == ["lmeb/ToolBench/ToolBench"] and "ToolBench" in str(summary["failures"])
    assert (out / "summary.md").read_text().startswith("# lmeb: nDCG@10")
    calls.clear()
    run_suite(cfg, runner=fake_runner)  # second run: only the failed unit is tried again
    assert calls == ["lmeb/ToolBench/ToolBench"]
    cfg.force = True
    calls.clear()
    run_suite(cfg, runner=fake_runner)
    assert len(calls) == 9


def test_suite_end_to_end_bm25_on_lmeb_fixture(tmp_path, monkeypatch):
    """Real pipeline runs (bm25, no reranker) of LoCoMo's subsets on an upstream-layout fixture; the fixture
    has 2 of the 5 subsets, so the dataset score stays missing while the unit scores are reported."""
    monkeypatch.chdir(tmp_path)
    write_lmeb_fixture(tmp_path / "data" / "lmeb")
    cfg = _compose("benchmark=lmeb/LoCoMo", f"data_dir={tmp_path / 'data'}", f"cache_dir={tmp_path / 'cache'}")
    assert [u.name for u in expand_units(cfg)][:2] == ["lmeb/LoCoMo/single_hop", "lmeb/LoCoMo/multi_hop"]
    out = run_suite(cfg)
    summary = read_json(out / "summary.json")
    assert out.parts[:3] == ("results", "runs", "suite__lmeb__LoCoMo") and (out / "summary.md").exists()
    for subset in ("single_hop", "multi_hop"):
        unit = summary["units"][f"lmeb/LoCoMo/{subset}"]
        (record,) = unit["records"]
        metrics = read_json(Path(record) / "metrics.json")
        assert metrics["dataset"] == f"lmeb/LoCoMo/{subset}"
        assert unit["scores"]["first_stage"] == metrics["stages"]["first_stage"]["nDCG@10"]
        assert metrics["counts"]["data_queries_with_candidates"] >= 1
    assert summary["datasets"]["lmeb/LoCoMo"]["scores"]["first_stage"] is None
    assert len(summary["missing_units"]) == 3 and len(summary["failures"]) == 3


def test_load_dataset_refuses_a_suite(tmp_path):
    with pytest.raises(DataError, match="is a suite"):
        load_dataset(OmegaConf.to_container(_compose("benchmark=beir").benchmark, resolve=True), tmp_path)
