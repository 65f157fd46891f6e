"""The real topics and qrels in ../shared/data (relative to the repo root): MIRACL's 18 dev languages load and
validate, and a MIRACL run stops on the missing passages before any first stage or model; BEIR loads, and
BM25 on SciFact reproduces the reference score."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from kalm_eval.data.loaders import load_dataset
from kalm_eval.data.miracl import LANGUAGES, find_topics, read_topics
from kalm_eval.errors import DataError
from kalm_eval.data.readers import read_qrels
from kalm_eval.config import CONFIG_MODULE
from tests.data.upstream_formats import SHARED_DATA

pytestmark = pytest.mark.skipif(not (SHARED_DATA / "miracl").is_dir(),
                                reason=f"shared data not found at {SHARED_DATA} (../shared/data from the repo root)")

# ../shared/data/README.md: queries, qrels rows, rel=1 rows per language
MIRACL_COUNTS = {"ar": (2896, 29197, 5658), "bn": (411, 4206, 863), "de": (305, 3144, 811), "en": (799, 8350, 2326),
                 "es": (648, 6443, 2987), "fa": (632, 6571, 1314), "fi": (1271, 12008, 2447), "fr": (343, 3429, 731),
                 "hi": (350, 3494, 752), "ja": (860, 8354, 1790), "ko": (213, 3057, 547), "ru": (1252, 13100, 3560),
                 "sw": (482, 5092, 910), "te": (828, 1606, 854), "th": (733, 7573, 1343), "yo": (119, 1188, 144),
                 "zh": (393, 3928, 994), "id": (960, 9668, 3088)}


def _benchmark(name: str) -> dict:
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        cfg = compose("config", overrides=[f"benchmark={name}", f"data_dir={SHARED_DATA}"])
    return OmegaConf.to_container(cfg.benchmark, resolve=True)


def test_miracl_topics_and_qrels_of_all_18_languages():
    assert sorted(MIRACL_COUNTS) == sorted(LANGUAGES)
    identical_relevant = {}
    for lang in LANGUAGES:
        topics = find_topics(SHARED_DATA / "miracl" / lang, lang, "dev")
        queries, qrels = read_topics(topics), read_qrels(topics.qrels)
        judged = {q.query_id for q in qrels}
        assert (len(judged), len(qrels), sum(q.relevance == 1 for q in qrels)) == MIRACL_COUNTS[lang], lang
        assert judged <= set(queries) and {q.relevance for q in qrels} == {0, 1}, lang
        identical_relevant[lang] = sum(q.query_id == q.doc_id and q.relevance > 0 for q in qrels)
    # why identical-id removal must stay off for MIRACL: it would delete relevant passages
    assert identical_relevant["yo"] == 32 and identical_relevant["fa"] == 35 and identical_relevant["ar"] == 0


def test_miracl_without_passages_stops_before_the_first_stage(tmp_path, monkeypatch):
    from kalm_eval import pipeline
    from kalm_eval.config import RunConfig

    def must_not_run(*args, **kwargs):
        raise AssertionError("first stage reached without passages")

    monkeypatch.setattr(pipeline, "first_stage", must_not_run)
    bench = _benchmark("miracl/sw")
    assert bench["path"] == bench["corpus_path"] == str(SHARED_DATA / "miracl" / "sw")
    with pytest.raises(DataError) as err:
        pipeline.run(RunConfig.from_mapping(dict(benchmark=bench, retriever={"name": "bm25", "depth": 100},
                                        reranker={"name": "none"},
                                        cache_dir=tmp_path / "cache", output_dir=tmp_path / "out")))
    assert "passages missing" in str(err.value) and "miracl/miracl-corpus" in str(err.value)
    for lang in ("ar", "yo", "zh"):
        with pytest.raises(DataError, match=f"MIRACL-{lang} passages missing"):
            load_dataset(_benchmark(f"miracl/{lang}"), tmp_path / "cache")


def test_beir_without_corpus_stops_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bench = {**_benchmark("beir/fiqa"), "path": str(SHARED_DATA / "beir_queries_qrels_only" / "fiqa")}
    with pytest.raises(DataError, match="corpus.jsonl"):
        load_dataset(bench, tmp_path / "cache")
    with pytest.raises(DataError, match="offline"):  # configured path absent: no download attempt offline
        load_dataset(_benchmark("beir/fiqa"), tmp_path / "cache")


def test_beir_arguana_identical_ids(tmp_path):
    ds = load_dataset(_benchmark("beir/arguana"), tmp_path / "cache")
    assert (len(ds.corpus), len(ds.queries), len(ds.qrels)) == (8674, 1406, 1406)
    assert sum(qid in ds.corpus for qid in ds.queries) == 1298 and ds.quirks.ignore_identical_ids


@pytest.mark.slow  # ~15 s on a loaded 2-core machine (tokenising, indexing, record writing)
def test_bm25_scifact_reproduces_reference(tmp_path, monkeypatch):
    from kalm_eval.config import RunConfig
    from kalm_eval.pipeline import run
    from kalm_eval.storage import read_json

    monkeypatch.chdir(tmp_path)
    retriever = {"name": "bm25", "depth": 100, "method": "lucene", "k1": 1.5, "b": 0.75, "stopwords": "en",
                 "stemmer": "english"}
    (out,) = run(RunConfig.from_mapping(dict(benchmark=_benchmark("beir/scifact"), retriever=retriever, reranker={"name": "none"},
                           cache_dir=tmp_path / "cache", output_dir=tmp_path / "out")))
    record = read_json(Path(out) / "metrics.json")
    assert record["counts"]["data_docs"] == 5183 and record["counts"]["queries"] == 300
    assert record["stages"]["first_stage"]["nDCG@10"] == pytest.approx(0.6863, abs=0.002)  # reference-scores.md §1
