"""MIRACL loader on fixtures in the upstream formats: HF miracl/miracl raw topics + qrels, miracl/miracl-corpus
shards, BEIR layout, MTEB's MIRACLRetrieval layout; judged-0 rows; identical ids kept; missing passages."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from kalm_eval.data.loaders import load_dataset
from kalm_eval.errors import DataError
from kalm_eval.config import RunConfig
from kalm_eval.pipeline import run
from kalm_eval.storage import read_json
from tests.data.upstream_formats import (MIRACL_QRELS, MIRACL_SHARDS, MIRACL_TOPICS, write_jsonl, write_miracl_raw,
                                        write_mteb_repo, write_tsv)

PINS = {"topics_revision": "5be20db9509754dadad47689368639fcec739c00",
        "corpus_revision": "d921ec7e349ce0d28daf30b2da9da5ee698bef0d"}


def miracl_cfg(path: Path, corpus_path: Path | None, **extra) -> dict:
    return {"name": "miracl/sw", "loader": "miracl", "language": "sw", "source": "local", "path": str(path),
            "corpus_path": str(corpus_path) if corpus_path else None, "split": "dev", "joiner": " ",
            "instruction": "Retrieval relevant passage for the given query", "hf": PINS,
            "quirks": {"ignore_identical_ids": False, "relevance_threshold": 1}, **extra}


def _check(ds) -> None:
    assert ds.name == "miracl/sw" and ds.split == "dev"
    assert list(ds.queries) == [q for q, _ in MIRACL_TOPICS]
    assert len(ds.qrels) == len(MIRACL_QRELS) == 7  # judged-0 rows are kept
    assert sorted(q.relevance for q in ds.qrels) == [0, 0, 0, 1, 1, 1, 1]
    assert len(ds.corpus) == sum(len(s) for s in MIRACL_SHARDS) == 6  # both shards
    assert all(isinstance(d, str) and "#" in d for d in ds.corpus.ids)
    assert ds.passage("32589#0") == "Mombasa Bandari kubwa ya Kenya iko Mombasa."
    assert ds.quirks.ignore_identical_ids is False and ds.candidates is None
    assert "10020#0" in ds.queries and "10020#0" in ds.corpus  # a query id that is also a relevant passage id


def test_raw_hf_files(tmp_path):
    topics, corpus = write_miracl_raw(tmp_path)
    ds = load_dataset(miracl_cfg(topics, corpus), tmp_path / "cache")
    _check(ds)
    assert ds.stats["qrels_judged_nonrelevant"] == 3 and ds.stats["corpus_files"] == 2


def test_beir_layout(tmp_path):
    d = tmp_path / "sw"
    write_jsonl(d / "queries.jsonl.gz", [{"_id": q, "text": t, "metadata": {}} for q, t in MIRACL_TOPICS], gz=True)
    write_tsv(d / "qrels" / "dev.tsv", MIRACL_QRELS, header=("query-id", "corpus-id", "score"))
    write_jsonl(d / "corpus.jsonl.gz", [{"_id": r["docid"], "title": r["title"], "text": r["text"]}
                                        for shard in MIRACL_SHARDS for r in shard], gz=True)
    _check(load_dataset(miracl_cfg(d, d), tmp_path / "cache"))


def test_missing_passages_say_what_and_where(tmp_path):
    topics, corpus = write_miracl_raw(tmp_path)
    shutil.rmtree(corpus)
    with pytest.raises(DataError) as err:
        load_dataset(miracl_cfg(topics, corpus), tmp_path / "cache")
    message = str(err.value)
    assert str(corpus) in message and "corpus.jsonl" in message and "docs-*.jsonl.gz" in message
    assert "miracl/miracl-corpus" in message
    corpus.mkdir(parents=True)
    with pytest.raises(DataError, match="none of"):
        load_dataset(miracl_cfg(topics, corpus), tmp_path / "cache")
    with pytest.raises(DataError, match="no passages configured"):
        load_dataset(miracl_cfg(topics, None), tmp_path / "cache")


def test_hf_source_fetches_pinned_files(tmp_path, monkeypatch):
    import huggingface_hub

    write_miracl_raw(tmp_path / "hub")
    calls = []

    def fake_snapshot_download(repo_id, repo_type, revision, allow_patterns):
        calls.append((repo_id, repo_type, revision, tuple(allow_patterns)))
        return str(tmp_path / "hub" / repo_id.split("/")[1])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    _check(load_dataset(miracl_cfg(tmp_path / "unused", None, source="hf"), tmp_path / "cache"))
    assert calls[0][:3] == ("miracl/miracl", "dataset", PINS["topics_revision"])
    assert calls[1][:3] == ("miracl/miracl-corpus", "dataset", PINS["corpus_revision"])
    assert calls[1][3] == ("miracl-corpus-v1.0-sw/*",)

    def offline(*args, **kwargs):
        raise OSError("offline mode is enabled")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(DataError, match="HF_HUB_OFFLINE"):
        load_dataset(miracl_cfg(tmp_path / "unused", None, source="hf"), tmp_path / "cache")


def test_mteb_layout(tmp_path):
    roles = {"corpus": [{"_id": r["docid"], "title": r["title"], "text": r["text"]} for s in MIRACL_SHARDS for r in s],
             "queries": [{"_id": q, "text": t} for q, t in MIRACL_TOPICS],
             "qrels": [{"query-id": q, "corpus-id": d, "score": r} for q, d, r in MIRACL_QRELS]}
    repo = write_mteb_repo(tmp_path / "MIRACLRetrieval", {"sw": roles}, split="dev")
    _check(load_dataset(miracl_cfg(tmp_path, None, source="mteb", mteb_repo=str(repo), mteb_revision=None),
                        tmp_path / "cache"))


def test_identical_ids_are_scored_not_dropped(tmp_path, monkeypatch):
    """Query 10020#0 has relevant passage 10020#0 at rank 1 of a given run: with MIRACL's quirks it counts."""
    monkeypatch.chdir(tmp_path)
    topics, corpus = write_miracl_raw(tmp_path)
    run_file = tmp_path / "run.trec"
    run_file.write_text("10020#0 Q0 10020#0 1 2.0 s\n10020#0 Q0 10020#1 2 1.0 s\n6 Q0 32589#0 1 1.0 s\n"
                        "8 Q0 777#0 1 1.0 s\n")
    cfg = RunConfig.from_mapping(dict(benchmark=miracl_cfg(topics, corpus), reranker={"name": "none"},
                    retriever={"name": "trec_run", "depth": 100, "path": str(run_file)}, cache_dir=tmp_path / "cache",
                    output_dir=tmp_path / "out"))
    (out,) = run(cfg)
    record = read_json(out / "metrics.json")
    rows = [line.split("\t") for line in (out / "per_query.tsv").read_text().splitlines()]
    per_query = {r[2]: float(r[3]) for r in rows if r[:2] == ["first_stage", "nDCG@10"]}
    assert per_query["10020#0"] == pytest.approx(1.0)
    assert record["protocol"]["metrics"]["ignore_identical_ids"] is False
    assert gzip.decompress((out / "run.first_stage.trec.gz").read_bytes()).decode().startswith("10020#0 Q0 10020#0 1 ")
