"""Synthetic result records shaped like the pipeline's (metrics.json schema 2 + per_query.tsv): KaLM records at a
ratio r, baseline-family records (qwen3 ...), cascades, first-stage-only records."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from kalm_eval.storage import signature_of

PINNED = {
    "nano": ("KaLM-Embedding/KaLM-Reranker-V1-Nano", "1d3dcd79115a77b91b2ece798f536880d2115e48", 640),
    "small": ("KaLM-Embedding/KaLM-Reranker-V1-Small", "e8eaadc957a7ae383a4983a483c2c399f1056cd3", 1152),
    "large": ("KaLM-Embedding/KaLM-Reranker-V1-Large", "bc5cb8fe5a266b6d0b5ffdb9da4c06c950ae242f", 2560),
    "tiny": (None, None, 64),
}
BASELINES = {  # preset name -> (family, hub id)
    "qwen3_reranker_0.6b": ("qwen3", "Qwen/Qwen3-Reranker-0.6B"),
    "qwen3_reranker_4b": ("qwen3", "Qwen/Qwen3-Reranker-4B"),
    "bge_reranker_v2_gemma": ("bge_gemma", "BAAI/bge-reranker-v2-gemma"),
}
SPEED = {"tiny": 0.05, "nano": 1.0, "small": 6.0, "large": 30.0, "qwen3_reranker_0.6b": 40.0, "qwen3_reranker_4b": 200.0,
         "bge_reranker_v2_gemma": 80.0}  # ms per pair at r=1 (made up)
QUALITY = {"tiny": 0.05, "nano": 0.60, "small": 0.63, "large": 0.66, "qwen3_reranker_0.6b": 0.62,
           "qwen3_reranker_4b": 0.66, "bge_reranker_v2_gemma": 0.65}
BENCHMARK_CONFIG = {"beir": {"mteb_repo": "mteb/{name}", "mteb_revision": "rev-{name}"},
                    "miracl": {"mteb_repo": "mteb/MIRACLRetrieval", "mteb_revision": "9c09abc13478308c27598f350e31d8f06b9b5481"},
                    "lmeb": {"mteb_repo": "mteb/{name}", "mteb_revision": "rev-{name}", "memory_type": "Dialogue"}}


def model_identity(model: str, dtype: str = "bfloat16") -> dict:
    """The reranker identity the pipeline writes under protocol.reranker.model (checkpoint at the top level)."""
    if model in BASELINES:
        hub = BASELINES[model][1]
        return {"checkpoint": hub, "revision": "main-sha", "dtype": dtype, "weights_fingerprint": f"hf:{hub}@main-sha",
                "max_length": 8192}
    hf_id, revision, d = PINNED.get(model, (None, None, 64))
    if model == "tiny":
        inner = {"checkpoint": "random:tiny", "revision": None, "weights_fingerprint": "random:tiny:seed0"}
    elif hf_id:
        inner = {"checkpoint": hf_id, "revision": revision, "weights_fingerprint": f"hf:{hf_id}@{revision}"}
    else:  # a local checkpoint
        inner = {"checkpoint": "local", "revision": None, "weights_fingerprint": "sha256:" + "ab" * 32}
    inner.update({"dtype": dtype, "attn_implementation": "sdpa", "d_model": d})
    return {**inner, "doc_max_len": 1024, "query_max_len": 512, "score": "margin=z_yes-z_no"}


def fbnl_identity(model: str, dtype: str = "bfloat16") -> dict:
    """KaLM's identity as KalmReranker.identity().as_dict() writes it today: the checkpoint block nested under
    "checkpoint", the inputs beside it (records written before rerank.base.Identity nest it under "model")."""
    flat = model_identity(model, dtype)
    outer = ("doc_max_len", "query_max_len", "score")
    return {"family": "kalm", "checkpoint": {k: v for k, v in flat.items() if k not in outer},
            **{k: flat[k] for k in outer}}


def config_model(model: str) -> dict:
    hf_id, revision, _ = PINNED.get(model, (None, None, 64))
    if model in BASELINES:
        return {"name": model, "hf_id": BASELINES[model][1], "revision": "main-sha", "path": None}
    return {"name": model if model in PINNED else "nano", "hf_id": hf_id, "revision": revision,
            "path": None if model in PINNED else f"/models/{model}"}


def config_benchmark(dataset: str) -> dict:
    parts = dataset.split("/")
    template = BENCHMARK_CONFIG.get(parts[0])
    if template is None:
        return {"name": dataset}
    return {"name": "/".join(parts[:2]), **{k: v.format(name=parts[1]) for k, v in template.items()}}


def synthetic_values(n: int, mean: float, seed: int) -> np.ndarray:
    """Per-query nDCG-like values in [0, 1] with the given mean (exactly, up to float error)."""
    rng = np.random.default_rng(seed)
    v = np.clip(rng.beta(2, 2, size=n), 0.1, 0.9)
    v = v - v.mean() + mean
    return np.clip(v, 0.0, 1.0)


def stable_seed(*parts) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode()) % 100_000


def default_latency(model: str, ratio: int | None) -> dict:
    ms = SPEED.get(model, 1.0) * (0.6 + 0.4 / (ratio or 1))
    return {"ms_per_pair_p50": ms, "ms_per_pair_p95": ms * 1.3, "pairs_per_s": 1000.0 / ms, "timed_batches": 10,
            "pairs_per_batch": 32, "warmup_batches": 3, "encode_ms_per_passage": 3.0 * SPEED.get(model, 1.0),
            "device": "NVIDIA H100", "dtype": "bfloat16"}


def write_record(out_dir: Path, *, dataset: str = "beir/scifact", model: str | None = "nano", ratio: int | None = 4,
                 values=None, fs_values=None, n_queries: int = 300, depth: int = 100,
                 instruction: str = "Given a scientific claim, retrieve documents", first_stage: dict | None = None,
                 files: dict | None = None, latency: dict | None | str = "default", stored_bytes: dict | None | str = "default",
                 identity: dict | None = None, finished_at: str = "2026-11-26T00:00:00+00:00", seed: int = 0,
                 query_ids: list[str] | None = None, cascade: list[dict] | None = None, roc: tuple | None = None,
                 online_ms_per_query: float | None | str = "default") -> Path:
    """Write one result record; reranked when `model` is given, first stage only when it is None. `roc` =
    (pooled AUC, per-query mean AUC, queries with both classes) for stages.reranked."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    qids = query_ids or [f"q{i}" for i in range(n_queries)]
    fs_values = np.asarray(fs_values if fs_values is not None else synthetic_values(len(qids), 0.55, stable_seed(dataset)))
    source = first_stage or {"kind": "bm25", "library": "bm25s==0.3.16", "k1": 1.5, "b": 0.75}
    files = files or {"corpus": "c" * 64, "queries": "q" * 64, "qrels": "r" * 64}
    dataset_identity = {"name": dataset, "split": "test", "files": files,
                        "quirks": {"ignore_identical_ids": False, "relevance_threshold": 1}, "joiner": " "}
    protocol = {
        "harness_version": "0.1.0", "dataset": dataset_identity,
        "first_stage": {"signature": signature_of({"dataset": dataset_identity, "source": source, "depth": 100}),
                        "source": source, "depth": 100, "tie_break": "score desc, then doc id desc (trec_eval)"},
        "metrics": {"provider": "ir_measures==0.4.3 (pytrec_eval)", "measures": ["nDCG@10", "R@100"]},
        "reranker": None,
    }
    stages = {"first_stage": {"nDCG@10": float(fs_values.mean()), "R@100": 0.91, "queries": len(qids)}}
    per_query = [("first_stage", "nDCG@10", q, float(v)) for q, v in zip(qids, fs_values)]
    timings = {"first_stage_s": 0.3, "total_s": 1.0}
    counts = {"queries": len(qids)}
    if model is not None:
        family = BASELINES[model][0] if model in BASELINES else "kalm"
        ratio = None if family != "kalm" or cascade else ratio
        if values is None:
            base = QUALITY.get(model, 0.5) - 0.004 * np.log2(ratio or 1) * (1.5 if model in ("nano", "tiny") else 1.0)
            values = synthetic_values(len(qids), base, seed)
        values = np.asarray(values, dtype=float)
        protocol["reranker"] = {"name": family, "model": identity or model_identity(model), "compression": ratio,
                                "depth": depth, "instruction": instruction, "tail": "first_stage",
                                "tie_break": "margin desc, then doc id desc (trec_eval's order of the written run)",
                                "score": "margin z_yes - z_no",
                                "cascade": cascade}
        stages["reranked"] = {"nDCG@10": float(values.mean()), "R@100": 0.91, "queries": len(qids), "recall_ceiling": 0.91}
        if roc is not None:
            stages["reranked"].update({"roc_auc": roc[0], "roc_auc_query_mean": roc[1], "roc_auc_queries": roc[2]})
        per_query += [("reranked", "nDCG@10", q, float(v)) for q, v in zip(qids, values)]
        if latency == "default":
            latency = default_latency(model, ratio)
        if latency is not None:
            timings["latency"] = latency
        if online_ms_per_query == "default":
            online_ms_per_query = None if latency is None else depth * latency["ms_per_pair_p50"]
        if online_ms_per_query is not None:
            timings["online_ms_per_query"] = online_ms_per_query
        timings.update({"encode_s": 12.0, "score_s": 30.0})
        counts.update({"pairs": len(qids) * depth, "unique_passages": 5000, "passages_encoded": 4000})
        if stored_bytes == "default" and family == "kalm":
            d = PINNED.get(model, (None, None, 64))[2]
            stored_bytes = {str(r): int(256 / r) * d * 2 for r in (1, 2, 4, 8, 16, 32)}
        if isinstance(stored_bytes, dict):
            counts["stored_bytes_per_passage"] = stored_bytes
            counts["pooled_vectors_per_passage"] = {r: b / 1280 for r, b in stored_bytes.items()}
    record = {"schema_version": 2, "dataset": dataset, "split": "test", "signature": signature_of(protocol),
              "stages": stages, "protocol": protocol, "timings": timings, "counts": counts,
              "provenance": {"harness_version": "0.1.0", "finished_at": finished_at,
                             "config": {"model": config_model(model or "nano"), "benchmark": config_benchmark(dataset)}},
              "files": {"per_query": "per_query.tsv"}, "file_digests": {}, "file_bytes": {}}
    (out_dir / "metrics.json").write_text(json.dumps(record, indent=2))
    with open(out_dir / "per_query.tsv", "w") as fh:
        fh.write("stage\tmeasure\tquery_id\tvalue\n")
        for row in per_query:
            fh.write("\t".join((row[0], row[1], row[2], repr(row[3]))) + "\n")
    return out_dir


@pytest.fixture
def make_record():
    return write_record


@pytest.fixture
def sweep_tree(tmp_path):
    """results/runs-like tree: nano/small/large × r = 1, 4, 32 on SciFact and NFCorpus, plus a first-stage-only record."""
    root = tmp_path / "results"
    for ds in ("beir/scifact", "beir/nfcorpus"):
        for model in ("nano", "small", "large"):
            for ratio in (1, 4, 32):
                write_record(root / "runs" / ds.replace("/", "__") / f"bm25-{model}-r{ratio}", dataset=ds, model=model,
                             ratio=ratio, seed=stable_seed(ds, model, ratio))
        write_record(root / "runs" / ds.replace("/", "__") / "bm25", dataset=ds, model=None)
    return root
