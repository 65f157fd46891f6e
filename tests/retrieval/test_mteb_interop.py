"""MTEB as a first stage: `retriever=mteb_predictions` (a file written by mteb's own prediction writer) and
`retriever=top_ranked` (an mteb reranking task's candidate lists, from a dataset repo in mteb's upload layout, which
mteb's own loader reads back identically). Both run through the CLI config path."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from kalm_eval.errors import DataError
from kalm_eval.storage import read_json
from tests.helpers import run_overrides

CORPUS = [{"_id": f"d{i}", "title": f"title {i}", "text": f"alpha beta {'gamma ' * i}"} for i in range(12)]
QUERIES = [{"_id": f"q{i}", "text": f"query {i}"} for i in range(1, 5)]
QRELS = "query-id\tcorpus-id\tscore\nq1\td3\t1\nq1\td1\t2\nq2\td0\t1\nq3\td5\t1\nq4\td4\t0\nq4\td9\t1\n"
QRELS_DICT = {"q1": {"d3": 1, "d1": 2}, "q2": {"d0": 1}, "q3": {"d5": 1}, "q4": {"d4": 0, "d9": 1}}

# What mteb's search returns for a retrieval task: query id -> {doc id: score}, in search order. Ties on purpose:
# q1 d3/d7 at 2.0 (trec_eval order: doc id descending, so d7 before d3), q2 three-way at 1.0. q3 is absent.
PREDICTIONS = {
    "q1": {"d1": 5.0, "d3": 2.0, "d7": 2.0, "d11": 0.5},
    "q2": {"d2": 1.0, "d0": 1.0, "d10": 1.0, "d4": 3.25},
    "q4": {"d9": 0.75, "d4": 0.9},
}


def write_beir(root: Path, corpus: list[dict], queries: list[dict], qrels: str) -> Path:
    """A dataset in BEIR layout (corpus.jsonl, queries.jsonl, qrels/test.tsv)."""
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus), encoding="utf-8")
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    (root / "qrels" / "test.tsv").write_text(qrels, encoding="utf-8")
    return root


def mteb_writer(folder: Path, predictions: dict, *, subset: str = "default", split: str = "test") -> Path:
    """Write predictions with mteb's own writer (AbsTask._save_task_predictions, as mteb.evaluate(...,
    prediction_folder=folder) calls it) for the SciFact task; the model meta of mteb's BM25 baseline."""
    mteb = pytest.importorskip("mteb")
    task = mteb.get_task("SciFact")
    model = SimpleNamespace(mteb_model_meta=mteb.get_model_meta("mteb/baseline-bm25s"))
    task._save_task_predictions(predictions, model, folder, hf_split=split, hf_subset=subset)
    return folder / "SciFact_predictions.json"


@pytest.fixture
def local(tmp_path):
    root = write_beir(tmp_path / "mini", CORPUS, QUERIES, QRELS)
    return ["benchmark=local", f"benchmark.path={root}", "benchmark.label=mini", f"cache_dir={tmp_path / 'cache'}"]


def trec_rows(path: Path) -> dict[str, list[tuple[str, int, float]]]:
    out: dict[str, list] = {}
    for line in gzip.open(path, "rt"):
        qid, _, doc, rank, score, _ = line.split()
        out.setdefault(qid, []).append((doc, int(rank), float(score)))
    return out


# ---- retriever=mteb_predictions -------------------------------------------------------------------------------

def test_mteb_predictions_file_is_the_first_stage(tmp_path, local):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    file = mteb_writer(tmp_path / "preds", PREDICTIONS)
    text = file.read_text()
    assert text.startswith('{"mteb_model_meta": {"model_name": "mteb/baseline-bm25s", "revision": ')  # mteb's layout
    assert json.loads(text)["default"]["test"] == PREDICTIONS

    [out] = run_overrides(*local, "retriever=mteb_predictions", f"retriever.path={file}", "retriever.depth=10",
                          f"output_dir={tmp_path / 'run'}")
    record = read_json(out / "metrics.json")
    source = record["protocol"]["first_stage"]["source"]
    assert source["kind"] == "mteb_predictions" and source["task"] == "SciFact"
    assert (source["subset"], source["split"]) == ("default", "test")
    assert source["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    assert source["mteb_model_meta"]["model_name"] == "mteb/baseline-bm25s"
    runs = trec_rows(out / "run.first_stage.trec.gz")
    assert [d for d, _, _ in runs["q1"]] == ["d1", "d7", "d3", "d11"]  # tie at 2.0: doc id descending
    assert [d for d, _, _ in runs["q2"]] == ["d4", "d2", "d10", "d0"]  # three-way tie, doc id descending (strings)
    assert [s for _, _, s in runs["q2"]] == [3.25, 1.0, 1.0, 1.0]  # scores as given
    assert "q3" not in runs
    # the metrics mteb computes from this very dict (pytrec_eval, mteb's ndcg_cut) per query, and 0 for q3
    expected = pytrec_eval.RelevanceEvaluator(QRELS_DICT, {"ndcg_cut.10"}).evaluate(PREDICTIONS)
    per_query = {line.split("\t")[2]: float(line.split("\t")[3]) for line in (out / "per_query.tsv").read_text().splitlines()
                 if line.startswith("first_stage\tnDCG@10\t")}
    assert per_query == {**{q: v["ndcg_cut_10"] for q, v in expected.items()}, "q3": 0.0}
    assert record["stages"]["first_stage"]["nDCG@10"] == sum(per_query.values()) / 4
    manifest = read_json(next((tmp_path / "cache" / "first_stage").rglob("*.manifest.json")))
    assert manifest["validation"]["tied_docs"] == 5 and manifest["validation"]["queries_without_candidates"] == 1


def test_depth_cut_folder_with_task_and_signature_follows_the_file(tmp_path, local):
    folder = tmp_path / "preds"
    file = mteb_writer(folder, PREDICTIONS)
    [out] = run_overrides(*local, "retriever=mteb_predictions", f"retriever.path={folder}", "retriever.task=SciFact",
                          "retriever.depth=2", f"output_dir={tmp_path / 'a'}")
    runs = trec_rows(out / "run.first_stage.trec.gz")
    assert {q: [d for d, _, _ in r] for q, r in runs.items()} == {"q1": ["d1", "d7"], "q2": ["d4", "d2"], "q4": ["d4", "d9"]}
    first = read_json(out / "metrics.json")["protocol"]["first_stage"]["signature"]
    mteb_writer(folder, {**PREDICTIONS, "q3": {"d5": 1.0}})  # same path, new content
    [again] = run_overrides(*local, "retriever=mteb_predictions", f"retriever.path={file}", "retriever.depth=2",
                            f"output_dir={tmp_path / 'b'}")
    assert read_json(again / "metrics.json")["protocol"]["first_stage"]["signature"] != first
    assert [d for d, _, _ in trec_rows(again / "run.first_stage.trec.gz")["q3"]] == ["d5"]
    with pytest.raises(DataError, match=r"preds: a prediction folder; set retriever.task .*SciFact_predictions.json"):
        run_overrides(*local, "retriever=mteb_predictions", f"retriever.path={folder}", f"output_dir={tmp_path / 'c'}")


def test_subset_and_split_selection(tmp_path, local):
    folder = tmp_path / "preds"
    mteb_writer(folder, PREDICTIONS, subset="en")
    file = mteb_writer(folder, {"q1": {"d1": 1.0}}, subset="fr")  # mteb merges subsets into one file
    mteb_writer(folder, {"q1": {"d2": 1.0}}, subset="fr", split="dev")
    base = [*local, "retriever=mteb_predictions", f"retriever.path={file}"]
    with pytest.raises(DataError, match=r"SciFact_predictions.json: the file holds 2 subsets \['en', 'fr'\]; choose one with retriever.subset"):
        run_overrides(*base, f"output_dir={tmp_path / 'a'}")
    with pytest.raises(DataError, match=r"\['fr'\] holds 2 splits \['dev', 'test'\]; choose one with retriever.split"):
        run_overrides(*base, "retriever.subset=fr", f"output_dir={tmp_path / 'a'}")
    with pytest.raises(DataError, match=r"predictions of split 'dev', but the benchmark evaluates split 'test'"):
        run_overrides(*base, "retriever.subset=fr", "retriever.split=dev", f"output_dir={tmp_path / 'a'}")
    with pytest.raises(DataError, match=r"has no subset 'de'; it has \['en', 'fr'\]"):
        run_overrides(*base, "retriever.subset=de", f"output_dir={tmp_path / 'a'}")
    [out] = run_overrides(*base, "retriever.subset=fr", "retriever.split=test", f"output_dir={tmp_path / 'b'}")
    assert trec_rows(out / "run.first_stage.trec.gz") == {"q1": [("d1", 1, 1.0)]}
    assert read_json(out / "metrics.json")["protocol"]["first_stage"]["source"]["subset"] == "fr"


def test_unknown_ids_error_or_drop(tmp_path, local):
    bad = {"q1": {"d1": 5.0, "zz": 4.0}, "qX": {"d1": 1.0}, "q2": {"d0": 1.0}}
    file = mteb_writer(tmp_path / "preds", bad)
    base = [*local, "retriever=mteb_predictions", f"retriever.path={file}"]
    with pytest.raises(DataError, match=r"SciFact_predictions.json: \['default'\]\['test'\]\['q1'\]\['zz'\]: unknown doc id 'zz'"):
        run_overrides(*base, f"output_dir={tmp_path / 'a'}")
    [out] = run_overrides(*base, "retriever.on_unknown=drop", f"output_dir={tmp_path / 'b'}")
    assert trec_rows(out / "run.first_stage.trec.gz") == {"q1": [("d1", 1, 5.0)], "q2": [("d0", 1, 1.0)]}
    manifest = read_json(next((tmp_path / "cache" / "first_stage").rglob("*.manifest.json")))
    assert manifest["validation"]["unknown_doc_ids"] == 1 and manifest["validation"]["unknown_query_ids"] == 1
    no_doc = mteb_writer(tmp_path / "p2", {"qX": {"d1": 1.0}})
    with pytest.raises(DataError, match=r"\['qX'\]: unknown query id 'qX'"):
        run_overrides(*local, "retriever=mteb_predictions", f"retriever.path={no_doc}", f"output_dir={tmp_path / 'c'}")


def test_identical_ids_dropped_by_the_quirk(tmp_path):
    corpus = CORPUS + [{"_id": "q1", "title": "", "text": "the query itself"}]
    root = write_beir(tmp_path / "mini", corpus, QUERIES, QRELS)
    file = mteb_writer(tmp_path / "preds", {"q1": {"q1": 9.0, "d1": 5.0}})
    common = ["benchmark=local", f"benchmark.path={root}", f"cache_dir={tmp_path / 'cache'}",
              "retriever=mteb_predictions", f"retriever.path={file}"]
    [kept] = run_overrides(*common, f"output_dir={tmp_path / 'a'}")
    assert [d for d, _, _ in trec_rows(kept / "run.first_stage.trec.gz")["q1"]] == ["q1", "d1"]
    [dropped] = run_overrides(*common, "benchmark.quirks.ignore_identical_ids=true", f"output_dir={tmp_path / 'b'}")
    assert [d for d, _, _ in trec_rows(dropped / "run.first_stage.trec.gz")["q1"]] == ["d1"]


@pytest.mark.parametrize("text, message", [
    ('{"mteb_model_meta": {}, "default": {"test": {"q1": {"d1": 1.0, "d1": 2.0}}}}', r"key 'd1' appears twice"),
    ('{"mteb_model_meta": {}, "default": {"test": {"q1": {"d1": NaN}}}}', r"\['q1'\]\['d1'\]: score nan is not a finite number"),
    ('{"mteb_model_meta": {}, "default": {"test": {"q1": {"d1": -Infinity}}}}', r"\['d1'\]: score -inf is not a finite number"),
    ('{"mteb_model_meta": {}, "default": {"test": {"q1": {"d1": 1e400}}}}', r"\['d1'\]: score inf is not a finite number"),
    ('{"mteb_model_meta": {}, "default": {"test": {"q1": {"d1": 1' + "0" * 400 + '}}}}',
     r"\['d1'\]: score 10+ is not a finite number"),
    ('{"mteb_model_meta": {}, "default": {"test": {"q1": {"d1": "3"}}}}', r"score '3' is not a finite number"),
    ('{"mteb_model_meta": {}, "default": {"test": {"q1": ["d1"]}}}', r"\['q1'\] must map doc ids to scores"),
    ('{"mteb_model_meta": {}, "default": {"test": [1]}}', r"must map query ids to \{doc id: score\}"),
    ('{"mteb_model_meta": {},\n "default": {"test": {"q1": {"d1": 1.0,}}}}', r"X_predictions.json:2: not valid JSON"),
    ('[]', r"expected a JSON object of mteb predictions"),
])
def test_malformed_files_name_the_file(tmp_path, local, text, message):
    file = tmp_path / "X_predictions.json"
    file.write_text(text)
    with pytest.raises(DataError, match=message):
        run_overrides(*local, "retriever=mteb_predictions", f"retriever.path={file}", f"output_dir={tmp_path / 'a'}")


def test_missing_file_and_task_mismatch(tmp_path, local):
    with pytest.raises(DataError, match=r"nope_predictions.json: mteb predictions file not found"):
        run_overrides(*local, "retriever=mteb_predictions", f"retriever.path={tmp_path / 'nope_predictions.json'}",
                      f"output_dir={tmp_path / 'a'}")
    file = mteb_writer(tmp_path / "preds", PREDICTIONS)
    with pytest.raises(DataError, match=r"the file name says task 'SciFact', retriever.task says 'NFCorpus'"):
        run_overrides(*local, "retriever=mteb_predictions", f"retriever.path={file}", "retriever.task=NFCorpus",
                      f"output_dir={tmp_path / 'a'}")


# ---- retriever=top_ranked -------------------------------------------------------------------------------------

TOP_RANKED = [  # q1's list has a doc the corpus lacks (dropped at load) and q2's repeats one; q3 has no list
    {"query-id": "q1", "corpus-ids": ["d7", "d3", "ghost", "d1", "d11"]},
    {"query-id": "q2", "corpus-ids": ["d0", "d4", "d0", "d2"]},
    {"query-id": "q4", "corpus-ids": ["d9", "d4"]},
]


def write_mteb_upload(root: Path, configs: dict[str, list[dict]], split: str) -> Path:
    """A dataset repo as mteb's `_push_dataset_to_hub` leaves it (DatasetDict.push_to_hub per config): one folder
    per config holding `<split>-00000-of-00001.parquet`, and a README whose `configs:` block maps each config's
    split to `<config>/<split>-*`. Single-subset tasks name their configs corpus, queries, qrels, top_ranked."""
    import datasets

    lines = ["---", "configs:"]
    for config, rows in configs.items():
        (root / config).mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_list(rows).to_parquet(str(root / config / f"{split}-00000-of-00001.parquet"))
        lines += [f"- config_name: {config}", "  data_files:", f"  - split: {split}", f"    path: {config}/{split}-*"]
    (root / "README.md").write_text("\n".join([*lines, "---", ""]), encoding="utf-8")
    return root


@pytest.fixture
def reranking_repo(tmp_path):
    qrels = [{"query-id": q, "corpus-id": d, "score": s} for q, docs in QRELS_DICT.items() for d, s in docs.items()]
    return write_mteb_upload(tmp_path / "MiniReranking", {
        "corpus": [{"id": d["_id"], "title": d["title"], "text": d["text"]} for d in CORPUS],
        "queries": [{"id": q["_id"], "text": q["text"]} for q in QUERIES],
        "qrels": qrels,
        "top_ranked": TOP_RANKED,
    }, split="test")


def test_fixture_is_what_mteb_itself_reads(reranking_repo):
    pytest.importorskip("mteb")
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalDatasetLoader

    loaded = RetrievalDatasetLoader(hf_repo=str(reranking_repo), revision=None, split="test").load()
    assert loaded["top_ranked"] == {row["query-id"]: row["corpus-ids"] for row in TOP_RANKED}
    assert loaded["relevant_docs"] == QRELS_DICT


def test_top_ranked_lists_are_the_first_stage_in_given_order(tmp_path, reranking_repo):
    common = ["benchmark=local", "benchmark.source=mteb", f"benchmark.mteb_repo={reranking_repo}",
              "benchmark.label=minirr", f"cache_dir={tmp_path / 'cache'}", "retriever=top_ranked"]
    [out] = run_overrides(*common, "retriever.depth=3", f"output_dir={tmp_path / 'run'}")
    runs = trec_rows(out / "run.first_stage.trec.gz")
    assert runs == {"q1": [("d7", 1, -1.0), ("d3", 2, -2.0), ("d1", 3, -3.0)],  # "ghost" gone, cut at depth 3
                    "q2": [("d0", 1, -1.0), ("d4", 2, -2.0), ("d2", 3, -3.0)],  # the repeat of d0 gone
                    "q4": [("d9", 1, -1.0), ("d4", 2, -2.0)]}
    record = read_json(out / "metrics.json")
    source = record["protocol"]["first_stage"]["source"]
    assert source["kind"] == "top_ranked" and "no scores" in source["order"]
    assert record["protocol"]["first_stage"]["tie_break"].startswith("given order")
    assert record["protocol"]["dataset"]["files"]["candidates"].startswith("hf-fingerprint:")
    assert record["counts"]["data_candidate_ids_not_in_corpus"] == 1
    # the KaLM reranker (tiny model) reranks these candidates: same docs per query, reordered by margin
    [reranked] = run_overrides(*common, "retriever.depth=3", "reranker=kalm", "model=tiny", "reranker.depth=3",
                               "reranker.latency_batches=0", f"output_dir={tmp_path / 'rr'}")
    final = trec_rows(reranked / "run.reranked.trec.gz")
    assert {q: sorted(d for d, _, _ in r) for q, r in final.items()} == {q: sorted(d for d, _, _ in r) for q, r in runs.items()}


def test_top_ranked_needs_candidate_lists(tmp_path, local):
    with pytest.raises(DataError, match=r"retriever=top_ranked: local/mini \(test\) has no top_ranked candidate lists"):
        run_overrides(*local, "retriever=top_ranked", f"output_dir={tmp_path / 'a'}")
