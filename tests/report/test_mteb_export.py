"""mteb export: each record as mteb's TaskResult layout, loadable by the installed mteb with the same ndcg_at_10."""

from __future__ import annotations

import json
import sys
import warnings

import pytest

from kalm_eval.report.cli import report_main
from kalm_eval.report.mteb_export import export_mteb
from kalm_eval.result import discover

from .conftest import write_record

mteb = pytest.importorskip("mteb")
NANO = "KaLM-Embedding/KaLM-Reranker-V1-Nano"
NANO_REV = "1d3dcd79115a77b91b2ece798f536880d2115e48"


@pytest.fixture
def exported(tmp_path):
    write_record(tmp_path / "res/scifact-r4", dataset="beir/scifact", model="nano", ratio=4, values=[0.123456789] * 4,
                 n_queries=4)
    write_record(tmp_path / "res/scifact-r32", dataset="beir/scifact", model="nano", ratio=32, values=[0.25] * 4,
                 n_queries=4)
    write_record(tmp_path / "res/locomo-a", dataset="lmeb/LoCoMo/multi_hop", model="nano", ratio=4, values=[0.5] * 4,
                 n_queries=4)
    write_record(tmp_path / "res/locomo-b", dataset="lmeb/LoCoMo/single_hop", model="nano", ratio=4, values=[0.75] * 4,
                 n_queries=4)
    write_record(tmp_path / "res/miracl", dataset="miracl/sw", model="qwen3_reranker_0.6b", values=[0.5] * 4, n_queries=4)
    write_record(tmp_path / "res/toy", dataset="local/toy", model="nano", ratio=4)
    result = export_mteb(discover(tmp_path / "res").records, tmp_path / "cache/results")
    return tmp_path, result


def test_layout_and_round_trip_through_mteb(exported):
    tmp_path, result = exported
    folder = tmp_path / "cache/results" / "KaLM-Embedding__KaLM-Reranker-V1-Nano" / f"{NANO_REV}-r4"
    assert (folder / "SciFact.json").is_file() and (folder / "LoCoMo.json").is_file()
    meta = json.loads((folder / "model_meta.json").read_text())
    assert (meta["name"], meta["revision"]) == (NANO, f"{NANO_REV}-r4")
    loaded = mteb.TaskResult.from_disk(folder / "SciFact.json")
    (entry,) = loaded.scores["test"]
    assert loaded.task_name == "SciFact" and loaded.dataset_revision == "rev-scifact"
    assert entry["ndcg_at_10"] == round(0.123456789, 6) == entry["main_score"]  # mteb stores 6 decimals
    assert entry["hf_subset"] == "default" and entry["languages"] == ["eng-Latn"] and entry["recall_at_100"] == 0.91
    locomo = mteb.TaskResult.from_disk(folder / "LoCoMo.json")
    assert {e["hf_subset"]: e["ndcg_at_10"] for e in locomo.scores["test"]} == {"multi_hop": 0.5, "single_hop": 0.75}
    sources = [json.loads(line) for line in (folder / "kalm_eval_sources.jsonl").read_text().splitlines()]
    assert {s["hf_subset"] for s in sources} == {"default", "multi_hop", "single_hop"}
    assert any("local/toy" in message for message in result.skipped)


def test_the_whole_tree_loads_with_mteb_loaders(exported, monkeypatch):
    tmp_path, _ = exported
    loaded = mteb.ResultCache(cache_path=tmp_path / "cache").load_results(include_remote=False)
    scores = {(m.model_name, m.model_revision, t.task_name): {e["hf_subset"]: e["ndcg_at_10"] for e in t.scores[t.eval_splits[0]]}
              for m in loaded.model_results for t in m.task_results}
    assert scores[(NANO, f"{NANO_REV}-r4", "SciFact")] == {"default": 0.123457}
    assert scores[(NANO, f"{NANO_REV}-r32", "SciFact")] == {"default": 0.25}  # each ratio its own revision
    assert scores[("Qwen/Qwen3-Reranker-0.6B", "main-sha", "MIRACLRetrieval")] == {"sw": 0.5}
    monkeypatch.setenv("MTEB_CACHE", str(tmp_path / "cache"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        legacy = mteb.load_results(download_latest=False, validate_and_filter=False)
    assert {(m.model_name, m.model_revision) for m in legacy.model_results} >= {(NANO, f"{NANO_REV}-r4")}


def test_cli_export(tmp_path, monkeypatch, capsys):
    write_record(tmp_path / "res/a", dataset="beir/nfcorpus", model="large", ratio=8, values=[0.5] * 4, n_queries=4)
    out = tmp_path / "mteb"
    monkeypatch.setattr(sys, "argv", ["kalm-eval-report", f"results={tmp_path / 'res'}", "export=mteb", f"output_dir={out}"])
    report_main()
    path = out / "KaLM-Embedding__KaLM-Reranker-V1-Large" / "bc5cb8fe5a266b6d0b5ffdb9da4c06c950ae242f-r8" / "NFCorpus.json"
    assert mteb.TaskResult.from_disk(path).get_score() == 0.5 and "1 task file(s)" in capsys.readouterr().out
