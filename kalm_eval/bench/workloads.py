"""The cost benchmark's workloads: (query, passage) pairs sliced from a first-stage run as an engine unit takes them.

A first-stage run is plain data (format "kalm-eval/cost-workload/v1": queries, passages, the top-k per query, depth,
instruction): SciFact BM25 top-100 from kalm-eval's own first stage (`scifact_run`), a synthetic SciFact-like run
(`synthetic_run`: log-normal passages around 280 tokens, claims around 20 tokens, each passage a candidate of ~6
queries), or a file `write_workload` wrote (a GPU machine without the data). `run_workload` takes the passage-major
slice the benchmark times; `spread_subset` picks a small quantile-spread subset for the big models."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kalm_eval.rerank.base import ScoringChunk

SYNTH_WORDS = (
    "protein expression cell cells gene genes patients treatment increased decreased risk study results disease "
    "mice human tumor cancer immune response signaling pathway receptor activity levels clinical trial dose "
    "association significant reduced induced compared control group analysis evidence blood brain heart virus "
    "infection therapy mutation regulation binding function role effect effects model data sample population"
).split()
SCIFACT_INSTRUCTION = "Given a scientific claim, retrieve documents that support or refute the claim"


@dataclass
class Workload:
    queries: list[str]
    passages: list[str]  # unique passage texts
    pairs: list[tuple[int, int]]  # (query index, passage index)
    instruction: str
    description: str
    source: str
    dataset_sharing: float | None = None  # pairs / unique passages over the whole run the pairs come from
    full: dict[str, Any] | None = None  # the whole first-stage run (queries, passages, run, depth): rerank mode, export

    def chunk(self, rows: Sequence[int] | None = None) -> ScoringChunk:
        rows = range(len(self.pairs)) if rows is None else rows
        pairs = [self.pairs[i] for i in rows]
        docs = sorted({p for _, p in pairs})
        queries = sorted({q for q, _ in pairs})
        local_d, local_q = {d: i for i, d in enumerate(docs)}, {q: i for i, q in enumerate(queries)}
        return ScoringChunk(passages=[(f"d{d}", self.passages[d]) for d in docs],
                            queries=[(self.queries[q], self.instruction) for q in queries],
                            pairs=[(local_q[q], local_d[p]) for q, p in pairs])

    def triples(self, rows: Sequence[int]) -> list[tuple[str, str, str]]:
        return [(self.queries[self.pairs[i][0]], self.instruction, self.passages[self.pairs[i][1]]) for i in rows]


def scifact_run(data_dir: Path, cache_dir: Path) -> dict[str, Any]:
    """SciFact BM25 top-100 with kalm-eval's own first stage, as plain data (exportable with --export-workload)."""
    from hydra import compose, initialize_config_module

    from kalm_eval.config import CONFIG_MODULE, RunConfig
    from kalm_eval.data.loaders import load_dataset
    from kalm_eval.retrieval.first_stage import first_stage

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "benchmark=beir/scifact", f"data_dir={data_dir}", "retriever=bm25", "reranker=kalm", "model=tiny",
            f"cache_dir={cache_dir}", "progress=false"])
    run_cfg = RunConfig.from_hydra(cfg)
    dataset = load_dataset(run_cfg.benchmark, run_cfg.cache_dir)
    run = first_stage(dataset, run_cfg.retriever, run_cfg.cache_dir)
    depth = run_cfg.reranker.depth
    ranking = {r.query_id: [c.doc_id for c in r.candidates[:depth]] for r in run}
    docs = sorted({d for ids in ranking.values() for d in ids})
    return {"format": "kalm-eval/cost-workload/v1", "name": "scifact-bm25-top100", "depth": depth,
            "instruction": run_cfg.reranker.instruction or SCIFACT_INSTRUCTION,
            "queries": {q: dataset.queries[q].text for q in ranking}, "passages": {d: dataset.passage(d) for d in docs},
            "run": ranking}


def read_workload(path: Path) -> dict[str, Any]:
    with gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_workload(full: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") if path.suffix == ".gz" else open(path, "w", encoding="utf-8") as fh:
        json.dump(full, fh)


def run_workload(full: dict[str, Any], min_pairs: int, min_passages: int) -> Workload:
    """A passage-major slice of a first-stage run (like one engine unit): passages in text-digest order, each with
    every pair of the run that involves it, until >= min_pairs pairs over >= min_passages passages."""
    depth, instruction = full["depth"], full["instruction"]
    by_doc: dict[str, list[str]] = {}
    query_ids: list[str] = list(full["run"])
    total = 0
    for qid, ids in full["run"].items():
        for doc_id in ids[:depth]:
            by_doc.setdefault(doc_id, []).append(qid)
            total += 1
    passage = full["passages"].__getitem__
    digest = {d: hashlib.sha256(passage(d).encode()).hexdigest() for d in by_doc}
    chosen, count = [], 0
    for doc_id in sorted(by_doc, key=lambda d: (digest[d], d)):
        chosen.append(doc_id)
        count += len(by_doc[doc_id])
        if count >= min_pairs and len(chosen) >= min_passages:
            break
    queries = sorted({q for d in chosen for q in by_doc[d]}, key=query_ids.index)
    q_index = {q: i for i, q in enumerate(queries)}
    pairs = [(q_index[q], i) for i, d in enumerate(chosen) for q in by_doc[d]]
    pairs.sort()
    return Workload(queries=[full["queries"][q] for q in queries], passages=[passage(d) for d in chosen],
                    pairs=pairs, instruction=instruction, source=full["name"], full=full,
                    dataset_sharing=total / len(by_doc),
                    description=f"{full['name']} (kalm-eval first stage, {len(query_ids)} queries, "
                                f"{total} pairs over {len(by_doc)} passages): passage-major slice of {len(chosen)} "
                                f"passages with all their {len(pairs)} pairs ({len(queries)} queries)")


def synthetic_run(tokenizer, seed: int = 0, queries: int = 60, depth: int = 100, share: int = 6) -> dict[str, Any]:
    """A SciFact-like first-stage run: log-normal passage lengths around 280 tokens (40..1000), claims around 20
    tokens, each query's top-`depth` drawn from a pool sized so that each passage is a candidate of ~`share` queries."""
    rng = random.Random(seed)

    def text(tokens: int) -> str:
        words = [rng.choice(SYNTH_WORDS) for _ in range(tokens)]
        return tokenizer.decode(tokenizer(" ".join(words), add_special_tokens=False)["input_ids"][:tokens])

    pool = max(depth, queries * depth // share)
    passages = {f"p{i}": text(min(1000, max(40, int(rng.lognormvariate(math.log(280), 0.45))))) for i in range(pool)}
    ids = list(passages)
    return {"format": "kalm-eval/cost-workload/v1", "name": "synthetic-scifact-like", "depth": depth,
            "instruction": SCIFACT_INSTRUCTION,
            "queries": {f"q{i}": text(max(6, int(rng.gauss(20, 6)))) for i in range(queries)},
            "passages": passages, "run": {f"q{i}": rng.sample(ids, depth) for i in range(queries)}}


def spread_subset(lengths: Sequence[int], k: int) -> list[int]:
    """k pair indices at evenly spaced quantiles of `lengths` (a small subset with the same length spread)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    if k >= len(order):
        return sorted(order)
    return sorted({order[min(len(order) - 1, int((j + 0.5) * len(order) / k))] for j in range(k)})
