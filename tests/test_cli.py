"""The command line and the results contract: metrics.json fields, run files, signatures, skip-if-done."""

from __future__ import annotations

import gzip
import logging
import os
import subprocess
import sys

import pytest

from kalm_eval.storage import read_json
from tests.conftest import REPO_ROOT
from tests.data.test_beir_readers import write_beir
from tests.helpers import compose_config, run_overrides

CORPUS = [{"_id": f"d{i}", "title": f"title {i}", "text": f"alpha beta {'gamma ' * i}"} for i in range(12)]
QUERIES = [{"_id": "q1", "text": "gamma"}, {"_id": "q2", "text": "alpha beta"}, {"_id": "q3", "text": "delta"}]
QRELS = "query-id\tcorpus-id\tscore\nq1\td11\t1\nq2\td0\t2\nq3\td5\t1\n"


@pytest.fixture
def local(tmp_path):
    root = write_beir(tmp_path / "mini", CORPUS, QUERIES, QRELS)
    return ["benchmark=local", f"benchmark.path={root}", "benchmark.label=mini", f"cache_dir={tmp_path / 'cache'}"]


def test_metrics_json_contract(tmp_path, local):
    [out] = run_overrides(*local, f"output_dir={tmp_path / 'run'}", "retriever.depth=5")
    record = read_json(out / "metrics.json")
    assert record["dataset"] == "local/mini" and record["split"] == "test"
    assert len(record["signature"]) == 64
    stage = record["stages"]["first_stage"]
    assert {"nDCG@10", "RR@10", "R@1", "R@5"} <= set(stage) and "R@100" not in stage  # R@k only for k <= depth
    assert record["protocol"]["first_stage"]["depth"] == 5
    assert record["protocol"]["dataset"]["joiner"] == " "
    assert record["protocol"]["metrics"]["provider"].startswith("ir_measures==")
    assert {"harness_version", "git_commit", "packages", "config"} <= set(record["provenance"])
    assert "first_stage_s" in record["timings"]
    rows = [line.split() for line in gzip.open(out / "run.first_stage.trec.gz", "rt")]
    assert [r[3] for r in rows if r[0] == "q1"] == ["1", "2", "3", "4", "5"]
    per_query = (out / "per_query.tsv").read_text().splitlines()
    assert per_query[0] == "stage\tmeasure\tquery_id\tvalue"
    assert any(line.startswith("first_stage\tnDCG@10\tq3\t") for line in per_query)


def test_default_output_dir_is_derived_from_signature(tmp_path, local, monkeypatch):
    monkeypatch.chdir(tmp_path)
    [a] = run_overrides(*local)
    [b] = run_overrides(*local, "retriever.k1=1.2")
    [a_again] = run_overrides(*local)
    assert a == a_again and a != b
    assert a.parts[:3] == ("results", "runs", "local__mini")
    assert read_json(a / "metrics.json")["signature"] != read_json(b / "metrics.json")["signature"]


def test_skip_if_done_and_force(tmp_path, local, caplog):
    caplog.set_level(logging.INFO)
    out = tmp_path / "run"
    run_overrides(*local, f"output_dir={out}")
    stamp = (out / "metrics.json").stat().st_mtime_ns
    run_overrides(*local, f"output_dir={out}")
    assert (out / "metrics.json").stat().st_mtime_ns == stamp
    assert "already done" in caplog.text
    run_overrides(*local, f"output_dir={out}", "force=true")
    assert (out / "metrics.json").stat().st_mtime_ns != stamp


def test_trec_run_retriever(tmp_path, local):
    run_file = tmp_path / "given.trec"
    run_file.write_text("q1 Q0 d11 1 3 sys\nq1 Q0 d3 2 2 sys\nq2 Q0 d0 1 1 sys\n")
    [out] = run_overrides(*local, "retriever=trec_run", f"retriever.path={run_file}", f"output_dir={tmp_path / 'r'}")
    record = read_json(out / "metrics.json")
    assert record["protocol"]["first_stage"]["source"]["kind"] == "trec_run"
    # q1 and q2 perfect, q3 has no candidates -> 0
    assert record["stages"]["first_stage"]["nDCG@10"] == pytest.approx(2 / 3)


def test_every_beir_config_composes():
    names = sorted(p.stem for p in (REPO_ROOT / "conf" / "benchmark" / "beir").glob("*.yaml"))
    assert len(names) == 13 and "cqadupstack" not in names
    for name in names:
        cfg = compose_config(f"benchmark=beir/{name}")
        assert cfg.benchmark.name == f"beir/{name}" and cfg.benchmark.split == "test" and cfg.benchmark.instruction
        assert cfg.benchmark.quirks.ignore_identical_ids is (name in ("arguana", "quora"))


def test_command_line_entry_point(tmp_path, local):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "cli"
    done = subprocess.run([sys.executable, "-m", "kalm_eval", *local, f"output_dir={out}"], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert str(out / "metrics.json") in done.stdout
    missing = subprocess.run([sys.executable, "-m", "kalm_eval", "benchmark=local", f"benchmark.path={tmp_path / 'nope'}"],
                             cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert missing.returncode == 2
    assert "dataset directory not found" in missing.stdout + missing.stderr
