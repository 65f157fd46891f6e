"""BEIR-layout readers and validators: good input parses, malformed input names the file and line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from kalm_eval.data.beir import load_beir
from kalm_eval.data.docstore import DocStore
from kalm_eval.data.quirks import Quirks
from kalm_eval.errors import DataError
from kalm_eval.data.readers import read_qrels, read_queries
from kalm_eval.records import Document


def write_beir(root: Path, corpus: list[dict], queries: list[dict], qrels: str, *, gz: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "qrels").mkdir(exist_ok=True)
    opener = (lambda p: gzip.open(str(p) + ".gz", "wt", encoding="utf-8")) if gz else (lambda p: open(p, "w", encoding="utf-8"))
    with opener(root / "corpus.jsonl") as fh:
        fh.writelines(json.dumps(d) + "\n" for d in corpus)
    with opener(root / "queries.jsonl") as fh:
        fh.writelines(json.dumps(q) + "\n" for q in queries)
    (root / "qrels" / "test.tsv").write_text(qrels)
    return root


CORPUS = [
    {"_id": "d1", "title": "Alpha", "text": "first doc"},
    {"_id": "d2", "title": "", "text": "second doc"},
    {"_id": "q1", "title": "Self", "text": "the query itself"},
]
QUERIES = [{"_id": "q1", "text": "what is alpha", "metadata": {}}, {"_id": "q2", "text": "unjudged", "metadata": {}}]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td9\t1\n"


@pytest.mark.parametrize("gz", [False, True])
def test_load_beir_layout(tmp_path, cache_dir, gz):
    root = write_beir(tmp_path / "ds", CORPUS, QUERIES, QRELS, gz=gz)
    ds = load_beir(root, name="local/x", split="test", quirks=Quirks(), joiner=" ", cache_dir=cache_dir)
    assert list(ds.queries) == ["q1"]  # only judged queries of the split
    assert len(ds.qrels) == 2 and ds.qrels[0].relevance == 2
    assert ds.stats["qrels_docs_missing_from_corpus"] == 1  # d9: counted and reported, kept
    assert ds.passage("d1") == "Alpha first doc"
    assert ds.passage("d2") == "second doc"  # no dangling joiner for an empty title
    assert [d.id for d in ds.corpus] == ["d1", "d2", "q1"]
    assert ds.corpus["q1"] == Document("q1", "Self", "the query itself")
    assert set(ds.files) == {"corpus", "queries", "qrels"}


def test_joiner_is_configurable():
    assert Document("x", "T", "body").passage("\n") == "T\nbody"


def test_docstore_reuses_index_and_survives_reload(tmp_path, cache_dir):
    root = write_beir(tmp_path / "ds", CORPUS, QUERIES, QRELS, gz=True)
    first = DocStore(root / "corpus.jsonl.gz", cache_dir)
    index_files = sorted((cache_dir / "docstore").rglob("*"))
    second = DocStore(root / "corpus.jsonl.gz", cache_dir)
    assert sorted((cache_dir / "docstore").rglob("*")) == index_files
    assert second.get_many(["q1", "d1"]) == [first["q1"], first["d1"]]
    with pytest.raises(KeyError, match="nope"):
        second["nope"]


def test_bad_json_line_names_file_and_line(tmp_path, cache_dir):
    root = write_beir(tmp_path / "ds", CORPUS, QUERIES, QRELS)
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "ok"}\n{"_id": "q2", "text": \n')
    with pytest.raises(DataError, match=r"queries\.jsonl:2: invalid JSON"):
        read_queries(root / "queries.jsonl")
    (root / "corpus.jsonl").write_text('{"_id": "d1", "text": "a"}\n\n{"_id": "d2" "text": "b"}\n')
    with pytest.raises(DataError, match=r"corpus\.jsonl:3: invalid JSON"):
        DocStore(root / "corpus.jsonl", cache_dir)


def test_missing_fields_and_duplicates(tmp_path, cache_dir):
    path = tmp_path / "queries.jsonl"
    path.write_text('{"_id": "q1", "text": "a"}\n{"_id": "q2"}\n')
    with pytest.raises(DataError, match=r"queries\.jsonl:2: missing field\(s\) \['text'\]"):
        read_queries(path)
    path.write_text('{"_id": "q1", "text": "a"}\n{"_id": "q1", "text": "b"}\n')
    with pytest.raises(DataError, match=r"queries\.jsonl:2: duplicate query id 'q1'"):
        read_queries(path)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "d1", "text": "a"}\n{"_id": "d1", "text": "b"}\n')
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: duplicate doc id 'd1' \(first at line 1\)"):
        DocStore(corpus, cache_dir)


@pytest.mark.parametrize(
    "content, message",
    [
        ("query-id\tcorpus-id\nq1\td1\n", r"test\.tsv:1: bad qrels header"),
        ("query-id\tcorpus-id\tscore\nq1\td1\n", r"test\.tsv:2: expected 3 columns"),
        ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\thigh\n", r"test\.tsv:3: relevance score 'high' is not an integer"),
        ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td1\t0\n", r"test\.tsv:3: duplicate judgement for \(q1, d1\), first at line 2"),
        ("query-id\tcorpus-id\tscore\n", r"test\.tsv: no judgements"),
    ],
)
def test_malformed_qrels(tmp_path, content, message):
    path = tmp_path / "test.tsv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_qrels(path)


def test_trec_style_qrels_accepted(tmp_path):
    path = tmp_path / "qrels.txt"
    path.write_text("q1 0 d1 1\nq1 0 d2 0\n")
    assert [(q.query_id, q.doc_id, q.relevance) for q in read_qrels(path)] == [("q1", "d1", 1), ("q1", "d2", 0)]


def test_judged_query_missing_from_queries_file(tmp_path, cache_dir):
    root = write_beir(tmp_path / "ds", CORPUS, QUERIES, QRELS + "q7\td1\t1\n")
    with pytest.raises(DataError, match=r"test\.tsv: 1 judged query id\(s\) not in .*queries\.jsonl, e\.g\. \['q7'\]"):
        load_beir(root, name="x", split="test", quirks=Quirks(), joiner=" ", cache_dir=cache_dir)


def test_missing_directory_and_split(tmp_path, cache_dir):
    with pytest.raises(DataError, match="dataset directory not found"):
        load_beir(tmp_path / "nope", name="x", split="test", quirks=Quirks(), joiner=" ", cache_dir=cache_dir)
    root = write_beir(tmp_path / "ds", CORPUS, QUERIES, QRELS)
    with pytest.raises(DataError, match=r"qrels/dev\.tsv: not found"):
        load_beir(root, name="x", split="dev", quirks=Quirks(), joiner=" ", cache_dir=cache_dir)


def test_unknown_quirk_rejected():
    with pytest.raises(ValueError, match="unknown dataset quirk"):
        Quirks.from_config({"ignore_identical": True})
