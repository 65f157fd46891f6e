"""Suite runs: units in sequence, skipping finished ones, one summary (per dataset, per LMEB memory type,
averages; missing listed, never 0) as summary.json and summary.md."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf, open_dict

from kalm_eval.data.loaders import load_dataset
from kalm_eval.data.miracl import LANGUAGES
from kalm_eval.errors import DataError
from kalm_eval.storage import read_json
from kalm_eval.suite import expand_units, run_suite
from kalm_eval.config import CONFIG_MODULE
from tests.conftest import shared_dataset
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


# ---- exit status of a suite with failed units (the CLI) --------------------------------------------------------

def _cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "kalm_eval", *overrides, f"cache_dir={tmp_path / 'cache'}",
                           f"results_dir={tmp_path / 'results'}", "progress=false"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


def test_suite_with_failed_units_writes_its_summary_then_exits_3(tmp_path):
    """beir with 1 of 13 datasets present: the present one runs, the summary is written, exit status 3, one line."""
    data = tmp_path / "data" / "beir"
    data.mkdir(parents=True)
    (data / "scifact").symlink_to(shared_dataset("beir", "scifact"))
    done = _cli(tmp_path, "benchmark=beir", "retriever=bm25", f"data_dir={tmp_path / 'data'}")
    assert done.returncode == 3, done.stderr[-3000:]
    summary_path = Path(done.stdout.strip().splitlines()[-1])
    summary = read_json(summary_path)
    assert summary["units"]["beir/scifact"]["scores"]["first_stage"] == pytest.approx(0.6863, abs=0.002)  # reference-scores.md §1
    assert len(summary["failures"]) == 12 and summary["complete"] is False
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("kalm-eval: error:")]
    assert line.startswith("kalm-eval: error: suite beir: 12 of 13 unit(s) failed (first: beir/arguana: ")
    assert line.endswith(f"the others ran, summary in {summary_path.with_name('summary.md')}")
    assert "Traceback" not in done.stderr


def test_suite_without_any_data_exits_3(tmp_path):
    done = _cli(tmp_path, "benchmark=lmeb_dialogue", f"data_dir={tmp_path / 'nothing'}")
    assert done.returncode == 3, done.stderr[-3000:]
    summary = read_json(Path(done.stdout.strip().splitlines()[-1]))
    assert len(summary["failures"]) == 42 and summary["missing_units"] == list(summary["units"])
    assert [line for line in done.stderr.splitlines() if line.startswith("kalm-eval: error:")] == [
        line for line in done.stderr.splitlines() if "suite lmeb_dialogue: 42 of 42 unit(s) failed" in line
        and "; none ran, summary in " in line]
    assert "Traceback" not in done.stderr


def test_bm25_runs_on_every_miracl_language(tmp_path):
    """The real MIRACL topics and qrels of all 18 languages (../shared/data) with a small corpus made of the first
    queries' judged passages (text = the query): one suite run, every unit done, exit 0. 11 languages use no
    stopword list (`stopwords: null`), ja/ko/zh/th no stemmer."""
    topics = shared_dataset("miracl")
    for language in LANGUAGES:
        target = tmp_path / "data" / "miracl" / language
        target.mkdir(parents=True)
        for name in ("queries.jsonl.gz", "qrels"):
            (target / name).symlink_to(topics / language / name)
        queries = {}
        with gzip.open(topics / language / "queries.jsonl.gz", "rt", encoding="utf-8") as fh:
            for line, _ in zip(fh, range(5)):
                row = json.loads(line)
                queries[row["_id"]] = row["text"]
        docs = [line.split("\t") for line in (topics / language / "qrels" / "dev.tsv").read_text().splitlines()[1:]]
        with open(target / "corpus.jsonl", "w", encoding="utf-8") as fh:
            for qid, doc_id, _grade in docs:
                if qid in queries:
                    fh.write(json.dumps({"_id": doc_id, "title": "", "text": queries[qid]}, ensure_ascii=False) + "\n")
    done = _cli(tmp_path, "benchmark=miracl", "retriever=bm25", f"data_dir={tmp_path / 'data'}")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = read_json(Path(done.stdout.strip().splitlines()[-1]))
    assert summary["complete"] and not summary["failures"]
    assert all(summary["units"][f"miracl/{lang}"]["scores"]["first_stage"] > 0 for lang in LANGUAGES)


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
