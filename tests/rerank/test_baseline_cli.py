"""Issue 13 acceptance through the command line: each baseline family run by the CLI config (`run_overrides`, the
config `kalm-eval` composes) on a local BEIR-layout dataset, its written scores compared with the authors' own
scoring code on the same tiny checkpoint, and its result record checked.

References (the functions of tests/rerank/test_baseline_parity.py, which share no code with kalm_eval.rerank):

* qwen3:         mteb's `Qwen3RerankerWrapper.predict` (installed mteb) -> P(yes); compared with the `p_yes`
                 column (mteb's output scale), and `margin` with log(P / (1 - P)) of it where P is not saturated;
* cross_encoder: `sentence_transformers.CrossEncoder(dir).predict` -> with its default activation (Sigmoid for a
                 num_labels=1 model) compared with `p_yes`; with activation_fn=Identity (the raw logit) with `margin`;
* bge_gemma:     a plain-transformers forward of FlagEmbedding's `compute_score` layout -> the raw "Yes" logit
                 (FlagEmbedding's default output) compared with `margin`; its normalize=True output with `p_yes`.

The reference's inputs are rebuilt from the fixture files (query text, title + " " + text, the local benchmark's
instruction), not from the harness' dataset objects. The record checks: protocol.reranker.name is the family and
protocol.reranker.model equals the identity() of the family's reranker built directly on the same settings (with
no local path in it), counts.pairs = the pairs scored, timings.latency is measured, and reranked order = margin
descending, ties by doc id descending (trec_eval's order of the written run), then the first-stage tail.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from kalm_eval.result import ResultRecord
from kalm_eval.testing.baselines import build_tiny_cross_encoder, build_tiny_gemma, build_tiny_qwen3
from tests.helpers import run_overrides
from tests.rerank.test_baseline_parity import (
    LONG_PASSAGE,
    QWEN3_MAX_LENGTH,
    flag_embedding_reference,
    max_abs_diff,
    mteb_qwen3_scores,
)

TOLERANCE = 1e-5
DEPTH = 3
LOCAL_INSTRUCTION = "Given a query, retrieve documents that answer the query."  # conf/benchmark/local.yaml
MAX_LENGTH = {"qwen3": QWEN3_MAX_LENGTH, "cross_encoder": 512, "bge_gemma": 512}  # the long passage exceeds each

# Varied lengths: one-word passages, sentences, the ~5,000-character LONG_PASSAGE (truncated by every family at its
# max length) and two documents with identical text (d_dup_a, d_dup_b: equal scores, so the tie rule decides).
CORPUS = [
    {"_id": "d_long", "title": "Water cycle", "text": LONG_PASSAGE},
    {"_id": "d_water1", "title": "Water", "text": "Water evaporates from the ocean and falls again as rain."},
    {"_id": "d_water2", "title": "Rain", "text": "Rain is water that condenses in clouds."},
    {"_id": "d_ice", "title": "Ice", "text": "Frozen water is ice."},
    {"_id": "d_beijing", "title": "Beijing", "text": "The capital of China is Beijing, a city of 21 million people."},
    {"_id": "d_china", "title": "China", "text": "China is a country in East Asia with a long history."},
    {"_id": "d_paris", "title": "Paris", "text": "Paris is the capital and most populous city of France."},
    {"_id": "d_france", "title": "France", "text": "France borders Spain, Italy and Germany; its capital is Paris."},
    {"_id": "d_berlin", "title": "Berlin", "text": "Berlin had a population of 3,520,031 in 2019."},
    {"_id": "d_museum", "title": "Museums", "text": "Berlin is well known for its museums and its population growth."},
    {"_id": "d_germany", "title": "Germany", "text": "Germany's capital Berlin is also its largest city by population."},
    {"_id": "d_tides", "title": "Tides", "text": "The Moon's gravity causes the tides of the ocean."},
    {"_id": "d_moon", "title": "Moon", "text": "The Moon orbits the Earth; its gravity pulls on the oceans."},
    {"_id": "d_gravity", "title": "Gravity", "text": "Gravity attracts bodies toward one another, tides included."},
    {"_id": "d_dup_a", "title": "Quantum", "text": "Quantum mechanics describes energy levels of atoms."},
    {"_id": "d_dup_b", "title": "Quantum", "text": "Quantum mechanics describes energy levels of atoms."},
    {"_id": "d_atoms", "title": "Atoms", "text": "Atoms have discrete energy levels; electrons jump between them."},
    {"_id": "d_photo", "title": "Photosynthèse", "text": "La photosynthèse convertit la lumière en énergie chimique."},
    {"_id": "d_plants", "title": "Plantes", "text": "Les plantes utilisent la lumière et produisent de l'oxygène."},
    {"_id": "d_light", "title": "Lumière", "text": "La lumière du soleil est une énergie."},
    {"_id": "d_short", "title": "yes", "text": "no"},
]
QUERIES = [
    {"_id": "q_water", "text": "water cycle evaporation condensation precipitation ocean"},
    {"_id": "q_china", "text": "what is the capital of China"},
    {"_id": "q_france", "text": "capital of France Paris"},
    {"_id": "q_berlin", "text": "How many people live in Berlin? population"},
    {"_id": "q_tides", "text": "why does the ocean have tides gravity Moon"},
    {"_id": "q_quantum", "text": "quantum mechanics energy levels"},
    {"_id": "q_photo", "text": "Qu'est-ce que la photosynthèse ? lumière énergie"},
    {"_id": "q_rain", "text": "rain water clouds"},
]
QRELS = "query-id\tcorpus-id\tscore\n" + "".join(
    f"{q}\t{d}\t1\n" for q, d in [("q_water", "d_long"), ("q_china", "d_beijing"), ("q_france", "d_paris"),
                                  ("q_berlin", "d_berlin"), ("q_tides", "d_tides"), ("q_quantum", "d_atoms"),
                                  ("q_photo", "d_photo"), ("q_rain", "d_water2")])

CONF = Path(__file__).resolve().parents[2] / "conf"
PRESETS = {"qwen3": "qwen3_reranker_0.6b", "cross_encoder": "bge_reranker_v2_m3", "bge_gemma": "bge_reranker_v2_gemma"}
BUILDERS = {"qwen3": build_tiny_qwen3, "cross_encoder": build_tiny_cross_encoder, "bge_gemma": build_tiny_gemma}


def write_beir(root: Path, corpus: list[dict], queries: list[dict], qrels: str) -> Path:
    """BEIR layout: corpus.jsonl, queries.jsonl, qrels/test.tsv. (tests/data/test_beir_readers.write_beir does the
    same but cannot be imported at this commit: that module imports load_beir from its old place.)"""
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus), encoding="utf-8")
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    (root / "qrels" / "test.tsv").write_text(qrels, encoding="utf-8")
    return root


def passage_text(doc: dict) -> str:
    """BEIR/MTEB passage = title + " " + text (the local benchmark's joiner); every fixture doc has both."""
    return f"{doc['title']} {doc['text']}"


def read_tsv_gz(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        header, *lines = handle.read().splitlines()
    names = header.split("\t")
    return [dict(zip(names, line.split("\t"))) for line in lines]


def read_run(path: Path) -> dict[str, list[str]]:
    """TREC run -> query id -> doc ids in rank order (by the rank column)."""
    ranked: dict[str, list[tuple[int, str]]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            qid, _, doc, rank, _score, _tag = line.split()
            ranked.setdefault(qid, []).append((int(rank), doc))
    return {q: [d for _, d in sorted(rows)] for q, rows in ranked.items()}


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    return write_beir(tmp_path_factory.mktemp("beir") / "mini", CORPUS, QUERIES, QRELS)


@pytest.fixture(scope="module")
def run_family(tmp_path_factory, dataset_dir):
    """family -> (record directory, tiny checkpoint directory); each family built and run once per module."""
    done: dict[str, tuple[Path, Path]] = {}

    def run(family: str) -> tuple[Path, Path]:
        if family not in done:
            base = tmp_path_factory.mktemp(f"cli_{family}")
            checkpoint = BUILDERS[family](base / f"tiny-{family}-weights", seed=0)
            [out] = run_overrides(
                "benchmark=local", f"benchmark.path={dataset_dir}", "benchmark.label=mini",
                f"cache_dir={base / 'cache'}", f"output_dir={base / 'record'}", "retriever=bm25",
                f"reranker={family}", f"model.path={checkpoint}", "model.dtype=float32", "model.device=cpu",
                f"model.max_length={MAX_LENGTH[family]}", f"reranker.depth={DEPTH}", "progress=false",
            )
            done[family] = (out, checkpoint)
        return done[family]

    return run


def reference_scores(family: str, checkpoint: Path, triples: list[tuple[str, str, str]]) -> dict[str, np.ndarray]:
    """The authors' code on (query, instruction, passage): {"p_yes": ..., "margin": ...} on their own scales."""
    if family == "qwen3":
        p_yes = mteb_qwen3_scores(checkpoint, triples, instructions=True)  # max_length = QWEN3_MAX_LENGTH
        return {"p_yes": np.asarray(p_yes, dtype=np.float64)}
    pairs = [(query, passage) for query, _, passage in triples]
    if family == "cross_encoder":
        from sentence_transformers import CrossEncoder

        reference = CrossEncoder(str(checkpoint), device="cpu")  # its saved max_length (512), its default activation
        assert reference.max_seq_length == MAX_LENGTH["cross_encoder"]
        default = reference.predict(pairs, batch_size=5, show_progress_bar=False)
        raw = reference.predict(pairs, batch_size=5, activation_fn=torch.nn.Identity(), show_progress_bar=False)
        return {"p_yes": np.asarray(default, np.float64), "margin": np.asarray(raw, np.float64)}
    raw, normalized = flag_embedding_reference(checkpoint, pairs, max_length=MAX_LENGTH["bge_gemma"], batch_size=5)
    return {"margin": np.asarray(raw, np.float64), "p_yes": np.asarray(normalized, np.float64)}


def preset_values(family: str) -> dict:
    """The family's default model preset (conf/model/<preset>.yaml), as the reranker group selects it."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(CONF / "model" / f"{PRESETS[family]}.yaml"), resolve=True)


def direct_identity(family: str, checkpoint: Path, cache_dir: Path) -> dict:
    """identity() of the family's reranker built through the registry from its default preset + the same overrides."""
    from kalm_eval.rerank import family as reranker_family
    from kalm_eval.rerank.settings import CacheSettings, RerankContext, RerankSettings

    values = preset_values(family)
    values.update(path=str(checkpoint), dtype="float32", device="cpu", max_length=MAX_LENGTH[family])
    chosen = reranker_family(family)
    reranker = chosen.build(chosen.parse_model(values), RerankSettings(name=family, batch_size=4),
                            RerankContext(cache_dir=cache_dir, cache=CacheSettings()))
    return reranker.identity().as_dict()


@pytest.mark.parametrize("family", ["qwen3", "cross_encoder", "bge_gemma"])
def test_cli_scores_match_reference(family, run_family):
    out, checkpoint = run_family(family)
    rows = read_tsv_gz(out / "scores.reranked.tsv.gz")
    assert list(rows[0]) == ["query_id", "doc_id", "first_stage_rank", "first_stage_score", "margin", "p_yes"]
    assert len(rows) >= 18 and len(rows) == DEPTH * len(QUERIES)
    record = json.loads((out / "metrics.json").read_text())
    assert record["protocol"]["reranker"]["instruction"] == LOCAL_INSTRUCTION

    docs = {d["_id"]: d for d in CORPUS}
    queries = {q["_id"]: q["text"] for q in QUERIES}
    triples = [(queries[r["query_id"]], LOCAL_INSTRUCTION, passage_text(docs[r["doc_id"]])) for r in rows]
    assert any(p == passage_text(docs["d_long"]) for _, _, p in triples), "the truncated passage must be scored"
    from transformers import AutoTokenizer

    long_tokens = AutoTokenizer.from_pretrained(checkpoint)(passage_text(docs["d_long"]), add_special_tokens=False)
    assert len(long_tokens["input_ids"]) > 2 * MAX_LENGTH[family]  # cut by the family's own truncation rule
    assert len({len(p) for _, _, p in triples}) >= 10, "passages of varied lengths"
    reference = reference_scores(family, checkpoint, triples)
    margin = np.array([float(r["margin"]) for r in rows])
    p_yes = np.array([float(r["p_yes"]) for r in rows])

    deltas = {"p_yes": max_abs_diff(p_yes, reference["p_yes"])}
    if "margin" in reference:
        deltas["margin"] = max_abs_diff(margin, reference["margin"])
    else:  # mteb's Qwen3 wrapper returns P(yes) only: its log-odds, where P is not saturated in float32
        usable = (reference["p_yes"] > 1e-4) & (reference["p_yes"] < 1 - 1e-4)
        assert usable.sum() >= 18
        logit = np.log(reference["p_yes"][usable] / (1 - reference["p_yes"][usable]))
        deltas["margin (log-odds of mteb's P)"] = max_abs_diff(margin[usable], logit)
    print(f"\n{family} via CLI vs reference: {len(rows)} pairs, " +
          ", ".join(f"max |delta {k}| = {v:.3e}" for k, v in deltas.items()))
    assert deltas["p_yes"] <= TOLERANCE
    if "margin" in deltas:
        assert deltas["margin"] <= TOLERANCE
    else:  # log-odds amplify P's float32 rounding by 1 / (P (1 - P)); still <= 1e-4 here
        assert deltas["margin (log-odds of mteb's P)"] <= 1e-4
    # A meaningful comparison: scores spread, not saturated, and one scale is the sigmoid of the other.
    assert np.std(margin) > 0.05 and np.std(p_yes) > 0.01
    assert np.all(np.abs(1 / (1 + np.exp(-margin)) - p_yes) <= 1e-6)


@pytest.mark.parametrize("family", ["qwen3", "cross_encoder", "bge_gemma"])
def test_cli_record(family, run_family, tmp_path):
    out, checkpoint = run_family(family)
    record = ResultRecord.load(out)
    raw = json.loads((out / "metrics.json").read_text())
    reranker = raw["protocol"]["reranker"]
    assert reranker["name"] == family and record.reranker_name == family
    identity = reranker["model"]
    assert identity["family"] == family
    # model.path over the family's default preset: the preset's hub id stays as a *label* of the local copy (the
    # convention of hf_common.resolve_source and of the KaLM loader); the weights are identified by content, with
    # no revision, and the report treats a sha256 fingerprint as local weights (never matched to a paper row).
    weights = identity["checkpoint"]  # the checkpoint block (rerank.base.Identity)
    assert weights["checkpoint"] == preset_values(family)["hf_id"] and weights["revision"] is None
    assert weights["weights_fingerprint"].startswith("sha256:") and len(weights["weights_fingerprint"]) == 71
    assert weights["dtype"] == "float32" and identity["max_length"] == MAX_LENGTH[family]
    assert identity == direct_identity(family, checkpoint, tmp_path)  # exactly what the family reports, nothing added
    text = json.dumps(reranker)
    assert checkpoint.name not in text and str(out.parent) not in text and "/tmp" not in text
    assert reranker["depth"] == DEPTH and reranker["score"] == "margin" and "compression" not in reranker

    rows = read_tsv_gz(out / "scores.reranked.tsv.gz")
    assert raw["counts"]["pairs"] == len(rows) == DEPTH * len(QUERIES)
    latency = raw["timings"]["latency"]
    assert latency is not None and latency["ms_per_pair_p50"] > 0 and latency["timed_batches"] >= 1
    assert latency["device"] == "cpu" and latency["dtype"] == "float32" and latency["pairs_per_batch"] == DEPTH
    assert raw["timings"]["online_ms_per_query"] == pytest.approx(DEPTH * latency["ms_per_pair_p50"])
    assert "nDCG@10" in raw["stages"]["reranked"] and "nDCG@10" in raw["stages"]["first_stage"]

    # Reranked order: each query's head by margin descending, ties by doc id descending (as trec_eval reads the
    # written run); then the first-stage tail.
    first_stage = read_run(out / "run.first_stage.trec.gz")
    reranked = read_run(out / "run.reranked.trec.gz")
    assert set(reranked) == set(first_stage) == {q["_id"] for q in QUERIES}
    ties = 0
    for qid, fs_docs in first_stage.items():
        head = [r for r in rows if r["query_id"] == qid]
        assert [r["doc_id"] for r in head] == fs_docs[:DEPTH]
        assert [int(r["first_stage_rank"]) for r in head] == list(range(1, DEPTH + 1))
        expected = sorted(head, key=lambda r: (float(r["margin"]), r["doc_id"]), reverse=True)
        assert reranked[qid] == [r["doc_id"] for r in expected] + fs_docs[DEPTH:]
        ties += len(head) - len({r["margin"] for r in head})
    # The duplicate passages tie exactly, and the larger doc id wins (trec_eval's rule, whatever their first-stage
    # ranks).
    dup = {r["doc_id"]: r for r in rows if r["query_id"] == "q_quantum" and r["doc_id"].startswith("d_dup")}
    assert set(dup) == {"d_dup_a", "d_dup_b"} and dup["d_dup_a"]["margin"] == dup["d_dup_b"]["margin"] and ties >= 1
    order = reranked["q_quantum"]
    assert order.index("d_dup_b") < order.index("d_dup_a")
    assert int(dup["d_dup_b"]["first_stage_rank"]) < int(dup["d_dup_a"]["first_stage_rank"])
    assert not math.isnan(raw["stages"]["reranked"]["nDCG@10"])
