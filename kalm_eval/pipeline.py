"""One evaluation run: dataset -> first stage -> (FBNL rerank at each ratio) -> metrics -> result record(s).

A result record is a directory holding metrics.json (written last: its presence means "done"), the run files of
every stage and per-query metric values. One record per (dataset, first stage, reranker, ratio): a compression
sweep in one run shares the encoder pass but writes one record per ratio, so reports and gates treat every
ratio alike."""

from __future__ import annotations

import csv
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kalm_eval import __version__, metrics, provenance
from kalm_eval.data import Dataset
from kalm_eval.data.loaders import load_dataset
from kalm_eval.records import Candidate, RankedList, StageResult
from kalm_eval.storage import atomic_open, read_json, signature_of, write_json_atomic
from kalm_eval.retrieval.first_stage import FirstStageRun, first_stage
from kalm_eval.retrieval.runfile import write_trec

log = logging.getLogger(__name__)

RERANK_TIE_BREAK = "margin desc, then first-stage rank"


@dataclass
class RunConfig:
    """The resolved Hydra config, split by stage (plain dicts from OmegaConf)."""

    benchmark: dict[str, Any]
    retriever: dict[str, Any]
    reranker: dict[str, Any]
    model: dict[str, Any]
    compression: list[int]
    cache_dir: Path
    output_dir: Path | None = None
    force: bool = False
    full_config: dict[str, Any] = field(default_factory=dict)

    @property
    def reranking(self) -> bool:
        return self.reranker.get("name", "none") != "none"


def run(cfg: RunConfig) -> list[Path]:
    """Execute a run; returns the result directories (one per ratio when reranking)."""
    started = time.perf_counter()
    dataset = load_dataset(cfg.benchmark, cfg.cache_dir)  # fails on missing data before any model is loaded
    log.info("%s: %d queries, %d docs", dataset.name, len(dataset.queries), len(dataset.corpus))
    fs_started = time.perf_counter()
    fs = first_stage(dataset, cfg.retriever, cfg.cache_dir, force=cfg.force)
    fs_seconds = time.perf_counter() - fs_started
    depth = int(cfg.retriever["depth"])
    base_protocol = {
        "harness_version": __version__,
        "dataset": dataset.identity(),
        "first_stage": {"signature": fs.manifest["signature"], "source": fs.manifest["source"], "depth": depth,
                        "tie_break": fs.manifest["tie_break"]},
        "metrics": metrics.definitions(depth, dataset.quirks),
    }
    fs_result = metrics.evaluate("first_stage", fs, dataset.qrels, dataset.quirks, depth)
    fs_timing = {"first_stage_s": fs_seconds, "first_stage_cached": fs.reused, "first_stage_build_s": fs.manifest.get("seconds")}

    if not cfg.reranking:
        protocol = {**base_protocol, "reranker": None}
        out = _output_dir(cfg, dataset, protocol, label=f"{cfg.retriever['name']}")
        if _done(out, protocol, cfg.force):
            return [out]
        _write_record(out, dataset, protocol, fs, [fs_result], {}, {**fs_timing, "total_s": time.perf_counter() - started},
                      {"queries": len(dataset.queries)}, cfg)
        return [out]
    return _rerank_runs(cfg, dataset, fs, fs_result, base_protocol, fs_timing, started)


def _rerank_runs(cfg, dataset: Dataset, fs: FirstStageRun, fs_result: StageResult, base_protocol, fs_timing, started) -> list[Path]:
    from kalm_eval.fbnl.rerank import build_reranker  # heavy imports only when reranking

    rr = cfg.reranker
    rerank_depth = int(rr["depth"])
    if rerank_depth > int(cfg.retriever["depth"]):
        raise ValueError(f"reranker.depth={rerank_depth} exceeds retriever.depth={cfg.retriever['depth']}")
    if rr.get("tail", "first_stage") not in ("first_stage", "drop"):
        raise ValueError(f"reranker.tail must be first_stage or drop, got {rr.get('tail')!r}")
    load_started = time.perf_counter()
    reranker = build_reranker(cfg.model, ratios=cfg.compression, cache_dir=cfg.cache_dir / "passages",
                              batch_size=int(rr.get("batch_size", 32)), encode_batch_size=int(rr.get("encode_batch_size", 16)))
    load_seconds = time.perf_counter() - load_started
    instruction = rr["instruction"]

    plans, all_outputs = [], []
    for ratio in cfg.compression:
        protocol = {**base_protocol, "reranker": {
            "model": reranker.identity(), "compression": ratio, "depth": rerank_depth, "instruction": instruction,
            "tail": rr.get("tail", "first_stage"), "tie_break": RERANK_TIE_BREAK, "score": "margin z_yes - z_no"}}
        out = _output_dir(cfg, dataset, protocol, label=f"{cfg.retriever['name']}-{cfg.model['name']}-r{ratio}",
                          ratio=ratio if len(cfg.compression) > 1 else None)
        all_outputs.append(out)
        if not _done(out, protocol, cfg.force):
            plans.append((ratio, protocol, out))
    if not plans:
        return all_outputs

    # Pass 1 over the streamed run: the unique passages of every query's head (deduplicated across queries).
    unique: dict[str, str] = {}
    for ranking in fs:
        for cand in ranking.candidates[:rerank_depth]:
            if cand.doc_id not in unique:
                unique[cand.doc_id] = dataset.passage(cand.doc_id)
    reranker.prepare(unique)  # encode once, pool at every ratio

    for ratio, protocol, out in plans:
        score_started = time.perf_counter()
        reranked, pair_rows = _rerank(fs, dataset, reranker, instruction, ratio, rerank_depth, rr.get("tail", "first_stage"))
        score_seconds = time.perf_counter() - score_started
        rr_result = metrics.evaluate("reranked", reranked, dataset.qrels, dataset.quirks, int(cfg.retriever["depth"]))
        rr_result.extra["recall_ceiling"] = fs_result.aggregate.get(f"R@{rerank_depth}")
        stats = reranker.stats()
        latency = _measure_latency(fs, dataset, reranker, instruction, ratio, rerank_depth,
                                   batches=int(rr.get("latency_batches", 10)), warmup=int(rr.get("latency_warmup", 2)),
                                   batch_size=int(rr.get("batch_size", 32)))
        # encode_s is the offline cost (shared by every ratio of this run), score_s the online cost of this ratio.
        timings = {**fs_timing, "model_load_s": load_seconds, "encode_s": stats.get("encode_seconds"),
                   "score_s": score_seconds, "latency": latency, "total_s": time.perf_counter() - started}
        # The scorer's own counters are cumulative over the ratios of this run: keep this ratio's share only.
        scorer_totals = ("pairs", "prompt_tokens", "score_batches", "score_seconds")
        this_ratio = stats.get("score_by_ratio", {}).get(ratio, {})
        counts = {**{k: v for k, v in stats.items() if k not in scorer_totals},
                  **{k: this_ratio[k] for k in ("prompt_tokens", "batches") if k in this_ratio},
                  "queries": len(dataset.queries), "pairs": len(pair_rows), "unique_passages": len(unique),
                  "ratios_sharing_encode": cfg.compression}
        _write_record(out, dataset, protocol, fs, [fs_result, rr_result], {"reranked": reranked}, timings, counts, cfg,
                      pair_rows=pair_rows)
    return all_outputs


def _rerank(fs: FirstStageRun, dataset: Dataset, reranker, instruction: str, ratio: int, depth: int, tail: str):
    """Pass 2: score each query's head, order by margin (ties: first-stage rank), then append the tail."""
    reranked: list[RankedList] = []
    pair_rows: list[tuple] = []
    for ranking, scores in _scored_heads(fs, dataset, reranker, instruction, ratio, depth):
        head = ranking.candidates[:depth]
        order = sorted(range(len(head)), key=lambda i: (-scores[i].margin, i))
        new_head = [Candidate(head[i].doc_id, float(scores[i].margin)) for i in order]
        for i, cand in enumerate(head):
            pair_rows.append((ranking.query_id, cand.doc_id, i + 1, cand.score, scores[i].margin, scores[i].p_yes))
        tail_cands: list[Candidate] = []
        if tail == "first_stage" and len(ranking.candidates) > depth:
            # Tail keeps first-stage order; its written scores continue strictly below the head's lowest margin.
            floor = min((c.score for c in new_head), default=0.0)
            tail_cands = [Candidate(c.doc_id, floor - 1.0 - i) for i, c in enumerate(ranking.candidates[depth:])]
        reranked.append(RankedList(ranking.query_id, tuple(new_head + tail_cands)))
    return reranked, pair_rows


def _scored_heads(fs: FirstStageRun, dataset: Dataset, reranker, instruction: str, ratio: int, depth: int,
                  queries_per_chunk: int = 16) -> Iterator[tuple[RankedList, list]]:
    """Stream the run in chunks of queries so the scorer can batch pairs across queries (length-sorted)."""
    from kalm_eval.fbnl.rerank import ScoreRequest

    chunk: list[RankedList] = []

    def flush():
        requests = [ScoreRequest(dataset.queries[r.query_id].text, instruction, [c.doc_id for c in r.candidates[:depth]])
                    for r in chunk]
        yield from zip(chunk, reranker.score_many(requests, ratio))
        chunk.clear()

    for ranking in fs:
        chunk.append(ranking)
        if len(chunk) == queries_per_chunk:
            yield from flush()
    if chunk:
        yield from flush()


def _measure_latency(fs: FirstStageRun, dataset: Dataset, reranker, instruction: str, ratio: int, depth: int, *,
                     batches: int, warmup: int, batch_size: int) -> dict[str, Any] | None:
    """Online cost measured apart from the evaluation pass: `warmup` untimed batches, then `batches` timed ones of
    `batch_size` real (query, candidate) pairs each (one query's head per batch), scored from cached pooled states."""
    import statistics

    from kalm_eval.fbnl.rerank import ScoreRequest

    if batches <= 0:
        return None
    requests = []
    for ranking in fs:
        doc_ids = [c.doc_id for c in ranking.candidates[: min(depth, batch_size)]]
        if len(doc_ids) == min(depth, batch_size):
            requests.append(ScoreRequest(dataset.queries[ranking.query_id].text, instruction, doc_ids))
        if len(requests) == warmup + batches:
            break
    if len(requests) <= warmup:
        return None
    for request in requests[:warmup]:
        reranker.score_many([request], ratio)
    per_pair_ms = []
    pairs = seconds = 0.0
    for request in requests[warmup:]:
        tick = time.perf_counter()
        reranker.score_many([request], ratio)  # returns Python floats: the device work has finished
        elapsed = time.perf_counter() - tick
        per_pair_ms.append(1000.0 * elapsed / len(request.doc_ids))
        pairs += len(request.doc_ids)
        seconds += elapsed
    quantiles = statistics.quantiles(per_pair_ms, n=20, method="inclusive") if len(per_pair_ms) > 1 else per_pair_ms * 19
    stats = reranker.stats()
    encoded = stats.get("passages_encoded") or 0
    loaded = reranker.loaded
    machine = provenance.device_description()
    return {
        "ms_per_pair_p50": statistics.median(per_pair_ms),
        "ms_per_pair_p95": quantiles[18],
        "pairs_per_s": pairs / seconds if seconds else None,
        "timed_batches": len(per_pair_ms),
        "pairs_per_batch": len(requests[warmup].doc_ids),
        "warmup_batches": warmup,
        # Offline cost of this run's encoder pass (None when every passage came from the cache).
        "encode_ms_per_passage": 1000.0 * stats["encode_seconds"] / encoded if encoded else None,
        "device": str(loaded.device) + (f" ({machine.get('cuda_device')})" if loaded.device.type == "cuda" else ""),
        "dtype": str(loaded.dtype).replace("torch.", ""),
        "torch_threads": machine.get("torch_threads"),
    }


def _output_dir(cfg: RunConfig, dataset: Dataset, protocol: dict | None, *, label: str, ratio: int | None = None) -> Path:
    if cfg.output_dir is not None:
        return Path(cfg.output_dir) / f"r{ratio}" if ratio is not None else Path(cfg.output_dir)
    signature = signature_of(protocol)
    return Path("results/runs") / dataset.name.replace("/", "__") / f"{label}-{signature[:10]}"


def _done(out: Path, protocol: dict, force: bool) -> bool:
    record = out / "metrics.json"
    if force or not record.exists():
        return False
    existing = read_json(record)
    if existing.get("signature") == signature_of(protocol):
        log.info("already done (same signature): %s — pass force=true to recompute", out)
        return True
    log.warning("%s holds a result with another signature; overwriting", out)
    return False


def _write_record(out: Path, dataset: Dataset, protocol: dict, fs: FirstStageRun, stages: list[StageResult],
                  runs: dict[str, list[RankedList]], timings: dict, counts: dict, cfg: RunConfig, pair_rows=None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(fs.path, out / ".run.first_stage.trec.gz.tmp")
    os.replace(out / ".run.first_stage.trec.gz.tmp", out / "run.first_stage.trec.gz")
    for name, rankings in runs.items():
        write_trec(out / f"run.{name}.trec.gz", rankings, tag=name)
    if pair_rows is not None:
        with atomic_open(out / "scores.reranked.tsv.gz") as fh:
            fh.write("query_id\tdoc_id\tfirst_stage_rank\tfirst_stage_score\tmargin\tp_yes\n")
            for row in pair_rows:
                fh.write("\t".join(str(v) for v in row) + "\n")
    with atomic_open(out / "per_query.tsv") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(["stage", "measure", "query_id", "value"])
        for stage in stages:
            for measure, values in stage.per_query.items():
                for qid, value in values.items():
                    writer.writerow([stage.name, measure, qid, repr(value)])
    record = {
        "dataset": dataset.name,
        "split": dataset.split,
        "signature": signature_of(protocol),
        "stages": {s.name: {**s.aggregate, **{k: v for k, v in s.extra.items()}} for s in stages},
        "protocol": protocol,
        "timings": timings,
        "counts": {**counts, **{f"data_{k}": v for k, v in dataset.stats.items()}},
        "provenance": {**provenance.collect(), "config": cfg.full_config,
                       "logged_knobs": {k: cfg.reranker.get(k) for k in ("batch_size", "encode_batch_size") if k in cfg.reranker}},
        "files": {"first_stage_run": "run.first_stage.trec.gz", "per_query": "per_query.tsv",
                  **{f"{n}_run": f"run.{n}.trec.gz" for n in runs}},
    }
    write_json_atomic(out / "metrics.json", record)
    log.info("%s  %s", out, "  ".join(f"{s.name} nDCG@10={s.aggregate['nDCG@10']:.5f}" for s in stages))
