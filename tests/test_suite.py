"""Suite runs: units in sequence, skipping finished ones, one summary (per dataset, per LMEB memory type,
averages; missing listed, never 0) as summary.json and summary.md."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf, open_dict

from kalm_eval.data.loaders import load_dataset
from kalm_eval.errors import DataError
from kalm_eval.storage import read_json
from kalm_eval.suite import expand_units, run_suite
from kalm_eval.config import CONFIG_MODULE
from tests.data.upstream_formats import write_lmeb_fixture
from tests.report.conftest import write_record


def _compose(*overrides: str):
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def _record(path: Path, dataset: str, first: float) -> list[Path]:
    """A first-stage result record as the pipeline writes it (two judged queries scoring `first` each)."""
    return [write_record(path, dataset=dataset, model=None, n_queries=2, fs_values=[first, first])]


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
        return _record(tmp_path / "records" / name.replace("/", "__"), name, 0.5 if "LoCoMo" in name else 0.25)

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


def test_run_path_placeholder_names_each_member(tmp_path):
    """`retriever.path="runs/{dataset}.trec.gz"`: every member of a suite reads its own run file (run and plan alike)."""
    from kalm_eval.config import RunConfig

    cfg = _compose("benchmark=beir", "retriever=trec_run", 'retriever.path="runs/{dataset}.trec.gz"',
                   f"cache_dir={tmp_path}")
    paths = {u.name: RunConfig.from_hydra(u.config, probe_paths=False).retriever.settings.path
             for u in expand_units(cfg)}
    assert paths["beir/nq"] == "runs/nq.trec.gz" and paths["beir/webis-touche2020"] == "runs/webis-touche2020.trec.gz"
    assert len(set(paths.values())) == 13
    single = _compose("benchmark=miracl/sw", "retriever=trec_run", 'retriever.path="r/{dataset}/{dataset}.gz"',
                      f"cache_dir={tmp_path}")
    assert RunConfig.from_hydra(single, probe_paths=False).retriever.settings.path == "r/sw/sw.gz"


def test_a_unit_that_wrote_no_record_is_not_done(tmp_path, monkeypatch):
    """A job-array worker whose dataset still misses another worker's units returns no record: the ledger must not
    call that unit done, or the resume and every later pass skip it and its records are never written (found by
    scripts/failure_injection.py: a worker killed with kill -9, the others finished, the resume skipped all)."""
    monkeypatch.chdir(tmp_path)
    cfg = _compose("benchmark=beir", f"output_dir={tmp_path / 'suite'}", f"cache_dir={tmp_path / 'cache'}")
    with open_dict(cfg):
        for name in list(cfg.benchmark.datasets):
            if name not in ("scifact", "nfcorpus"):
                del cfg.benchmark.datasets[name]
    calls: list[str] = []

    def array_worker(run_cfg):  # the other worker's units are missing: nothing to write yet
        calls.append(run_cfg.benchmark["name"])
        return []

    run_suite(cfg, runner=array_worker)
    assert read_json(tmp_path / "suite" / "summary.json")["missing_units"] == ["beir/nfcorpus", "beir/scifact"]

    def resumed(run_cfg):
        calls.append(run_cfg.benchmark["name"])
        return _record(tmp_path / "records" / run_cfg.benchmark["name"].replace("/", "__"), run_cfg.benchmark["name"], 0.5)

    calls.clear()
    run_suite(cfg, runner=resumed)
    assert calls == ["beir/nfcorpus", "beir/scifact"]  # run again, not skipped
    assert read_json(tmp_path / "suite" / "summary.json")["missing_units"] == []
