"""Stand-in suites (kalm_eval/testing/standin.py) and the plan's counted figures against a run of the same config."""

from __future__ import annotations

import gzip
import json

from kalm_eval.config import RunConfig
from kalm_eval.pipeline import run
from kalm_eval.plan import COUNTED, make_plan
from kalm_eval.testing.rehearsal import HARNESS_PARTS, harness_share, per_dataset
from kalm_eval.testing.standin import members, unique_ratio, write_standin
from tests.helpers import compose_config


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_standin_is_deterministic_in_each_members_layout(tmp_path):
    a = write_standin("beir", tmp_path / "a", scale=0.01, only=["scifact", "nfcorpus"], log=lambda _: None)
    write_standin("beir", tmp_path / "b", scale=0.01, only=["scifact", "nfcorpus"], log=lambda _: None)
    files_a, files_b = _files(tmp_path / "a"), _files(tmp_path / "b")
    files_a.pop("beir.standin.json"), files_b.pop("beir.standin.json")  # names its own directory
    assert files_a == files_b
    assert set(files_a) >= {"beir/scifact/corpus.jsonl", "beir/scifact/queries.jsonl",
                                         "beir/scifact/qrels/test.tsv", "runs/scifact.trec.gz", "runs/nfcorpus.trec.gz"}
    scifact = next(m for m in a["members"] if m["name"] == "scifact")
    assert (scifact["queries"], scifact["corpus"], scifact["pairs"]) == (3, 300, 300)  # 300 queries x 0.01, corpus floor
    assert unique_ratio(tmp_path / "a" / "runs" / "scifact.trec.gz") == (300, scifact["unique_passages"])
    assert scifact["unique_passages"] < scifact["pairs"]  # candidates repeat across queries
    nfcorpus = next(m for m in a["members"] if m["name"] == "nfcorpus")
    assert nfcorpus["qrels"] > 3 * 10  # NFCorpus judges ~38 passages per query


def test_miracl_standin_uses_the_raw_layout(tmp_path):
    shape = next(m for m in members("miracl", tmp_path) if m.name == "yo")
    write_standin("miracl", tmp_path, scale=0.002, only=["yo"], log=lambda _: None)
    root = tmp_path / "miracl" / "yo"
    assert shape.path == str(root)
    assert (root / "topics" / "topics.miracl-v1.0-yo-dev.tsv").exists()
    first = json.loads(gzip.open(root / "docs-0.jsonl.gz", "rt").readline())
    assert set(first) == {"docid", "title", "text"} and "#" in first["docid"]


def test_plan_counts_match_the_run(tmp_path):
    """Pairs, unique passages, encoder and decoder tokens: the plan's counts equal the record's."""
    write_standin("beir", tmp_path / "data", scale=0.01, only=["scifact"], log=lambda _: None)
    overrides = ["benchmark=beir/scifact", f"data_dir={tmp_path / 'data'}", "retriever=trec_run",
                 f'retriever.path="{tmp_path}/data/runs/{{dataset}}.trec.gz"', "retriever.depth=20",
                 "reranker=kalm", "model=tiny", "compression=[1,4]", "reranker.latency_batches=0", "progress=false"]
    plans, _, _ = make_plan(compose_config(*overrides, f"cache_dir={tmp_path / 'plan-cache'}"))
    plan = plans[0]
    assert all(plan.basis[f] == COUNTED for f in ("pairs", "unique_passages", "encoder_tokens", "decoder_tokens"))
    records = run(RunConfig.from_hydra(compose_config(*overrides, f"cache_dir={tmp_path / 'cache'}",
                                                      f"output_dir={tmp_path / 'out'}")))
    metrics = [json.loads((r / "metrics.json").read_text())["counts"] for r in records]
    assert plan.pairs == metrics[0]["pairs"] == 60
    assert plan.unique_passages == metrics[0]["unique_passages"]
    assert plan.encoder_tokens == metrics[0]["tokens_encoded"]
    assert plan.decoder_tokens == sum(m["prompt_tokens"] for m in metrics)
    # the rehearsal's accounting of the same records: every part of the harness is timed, and only the workers'
    # processes count as the suite's wall (not the report after it)
    row = per_dataset(tmp_path / "out")["beir/scifact"]
    assert row["records"] == 2 and row["pairs"] == 60 and row["timed_s"] > 0
    assert all(row[part] is not None and row[part] >= 0 for part in HARNESS_PARTS), row
    share = harness_share({"stages": [{"name": "worker0", "wall_s": 100.0}, {"name": "report", "wall_s": 7.0}],
                           "timed_stage_sum_s": row["timed_s"], "datasets": {"beir/scifact": row}})
    assert share["harness_ratio"] == 100.0 / row["timed_s"]
