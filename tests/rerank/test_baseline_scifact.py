"""Issue 13, end to end offline on real data (slow): each baseline family with a random tiny checkpoint and KaLM tiny
(`reranker=kalm model=tiny compression=4`) rerank BEIR SciFact over one shared BM25 first stage through the CLI
config, and `kalm-eval-report` lists all four in one baselines table.

The settings are those of scripts/baselines_scifact_tiny.sh: BM25 top-100, reranker.depth=20 (300 queries x 20 =
6,000 pairs per reranker; the rest of the top-100 is the first-stage tail), reranker.batch_size=16 for all, and
model.max_length=2048 for the tiny qwen3 (its byte-level tokenizer makes ~4x the real tokenizer's tokens). A full
top-100 rerank (30,000 pairs) took > 15 minutes for the fastest family on a shared 2-core CPU. Needs
../shared/data/beir/scifact (skips visibly without it). Takes ~30-40 minutes on 2 shared cores."""

from __future__ import annotations

import gzip
import json
import math
import time

import pytest

from kalm_eval.testing.baselines import BUILDERS
from tests.conftest import shared_dataset
from tests.helpers import run_overrides

pytestmark = pytest.mark.slow

FAMILIES = ("qwen3", "cross_encoder", "bge_gemma")
FIRST_STAGE_DEPTH, RERANK_DEPTH, QUERIES = 100, 20, 300


@pytest.fixture(scope="module")
def scifact_runs(tmp_path_factory):
    """family -> (record directory, wall seconds); the module's results and report directory."""
    data = shared_dataset("beir", "scifact")
    base = tmp_path_factory.mktemp("scifact_baselines")
    common = ["benchmark=beir/scifact", f"data_dir={data.parent.parent}", "retriever=bm25",
              f"cache_dir={base / 'cache'}", f"results_dir={base / 'results'}", "progress=false",
              f"retriever.depth={FIRST_STAGE_DEPTH}", f"reranker.depth={RERANK_DEPTH}", "reranker.batch_size=16"]
    runs = {}
    for family in FAMILIES:
        name = f"tiny-{family.replace('_', '-')}"
        checkpoint = BUILDERS[family](base / "checkpoints" / name, seed=0)
        extra = ["model.max_length=2048"] if family == "qwen3" else []
        started = time.perf_counter()
        [out] = run_overrides(*common, f"reranker={family}", f"model.path={checkpoint}", f"model.name={name}",
                              "model.hf_id=null", "model.dtype=float32", "model.device=cpu", *extra)
        runs[family] = (out, time.perf_counter() - started)
    started = time.perf_counter()
    [out] = run_overrides(*common, "reranker=kalm", "model=tiny", "compression=4")
    runs["kalm"] = (out, time.perf_counter() - started)
    for name, (out, seconds) in runs.items():
        latency = json.loads((out / "metrics.json").read_text())["timings"]["latency"]
        print(f"\n{name}: {seconds:.1f} s wall, latency p50 {latency['ms_per_pair_p50']:.3f} ms/pair ({out.name})")
    return base, runs


def read_scores(path):
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        header, *lines = handle.read().splitlines()
    return [dict(zip(header.split("\t"), line.split("\t"))) for line in lines]


@pytest.mark.parametrize("name", [*FAMILIES, "kalm"])
def test_scifact_record(name, scifact_runs):
    _, runs = scifact_runs
    out, _ = runs[name]
    record = json.loads((out / "metrics.json").read_text())
    assert record["dataset"] == "beir/scifact" and record["split"] == "test"
    reranker = record["protocol"]["reranker"]
    assert reranker["name"] == name and reranker["depth"] == RERANK_DEPTH
    assert record["protocol"]["first_stage"]["depth"] == FIRST_STAGE_DEPTH
    assert record["counts"]["queries"] == QUERIES and record["counts"]["pairs"] == QUERIES * RERANK_DEPTH
    rows = read_scores(out / "scores.reranked.tsv.gz")
    assert len(rows) == QUERIES * RERANK_DEPTH
    margins = [float(r["margin"]) for r in rows]
    assert all(math.isfinite(m) for m in margins) and len(set(margins)) > len(margins) // 2
    assert all(0.0 <= float(r["p_yes"]) <= 1.0 for r in rows)
    latency = record["timings"]["latency"]
    assert latency["pairs_per_batch"] == 16 and latency["timed_batches"] == 10
    assert latency["ms_per_pair_p50"] > 0 and latency["device"] == "cpu" and latency["dtype"] == "float32"
    for stage in ("first_stage", "reranked"):
        assert 0.0 <= record["stages"][stage]["nDCG@10"] <= 1.0
    if name != "kalm":
        identity = reranker["model"]
        weights = identity["checkpoint"]  # the checkpoint block (rerank.base.Identity)
        assert identity["family"] == name and weights["checkpoint"] == "local"
        assert weights["weights_fingerprint"].startswith("sha256:") and "compression" not in reranker
        assert "/" not in json.dumps(weights["checkpoint"])
    else:
        assert reranker["compression"] == 4
    with gzip.open(out / "run.reranked.trec.gz", "rt") as handle:  # reranked head + first-stage tail
        per_query: dict[str, int] = {}
        for line in handle:
            per_query[line.split()[0]] = per_query.get(line.split()[0], 0) + 1
    assert len(per_query) == QUERIES and set(per_query.values()) == {FIRST_STAGE_DEPTH}


def test_scifact_same_first_stage(scifact_runs):
    _, runs = scifact_runs
    signatures = {json.loads((out / "metrics.json").read_text())["protocol"]["first_stage"]["signature"]
                  for out, _ in runs.values()}
    assert len(signatures) == 1


def test_report_lists_every_reranker_in_one_table(scifact_runs, monkeypatch):
    import sys

    from kalm_eval.report.cli import report_main

    base, runs = scifact_runs
    report = base / "report"
    monkeypatch.setattr(sys, "argv", ["kalm-eval-report", f"results={base / 'results'}", f"output_dir={report}"])
    report_main()
    table = (report / "baselines.md").read_text()
    print("\n" + table)
    rows = [line for line in table.splitlines() if line.startswith("|") and "---" not in line]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]
    family = header.index("Family")
    ms = header.index("ms/pair p50 (measured)")
    ours = {row[family]: row for row in cells if row[family]}
    assert set(ours) == {"qwen3", "cross_encoder", "bge_gemma", "kalm"}
    labels = {row[0].split(" ")[0] for row in ours.values()}
    assert labels == {"tiny-qwen3", "tiny-cross-encoder", "tiny-bge-gemma", "tiny"}
    for row in ours.values():
        assert row[ms].split(" ")[0].replace(".", "", 1).isdigit(), row  # measured, e.g. "0.512 (cpu)"
