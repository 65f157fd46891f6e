"""One evaluation run: dataset -> first stage -> (rerank, passage-major units) -> metrics -> result record(s).

A result record is a directory (kalm_eval.result) holding metrics.json beside the run files of every stage, the
per-pair scores and the per-query metric values, committed whole. One record per (dataset, first stage, reranker,
variant): a compression sweep in one run shares one encoder pass but writes one record per compression; a cascade
writes one record for its whole plan. The pipeline orchestrates; each reranker reports its own costs."""

from __future__ import annotations

import contextlib
import csv
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kalm_eval import __version__, metrics, provenance
from kalm_eval.checkpoints import check_available
from kalm_eval.config import RunConfig
from kalm_eval.errors import InvariantError
from kalm_eval.data import Dataset
from kalm_eval.data.loaders import load_dataset
from kalm_eval.parallel import Workers, from_environment
from kalm_eval.records import Candidate, RankedList, StageResult
from kalm_eval.rerank import family as reranker_family
from kalm_eval.rerank.base import Reranker, Variant
from kalm_eval.rerank.cascade import (cascade_head, cascade_label, cascade_score_seconds, evaluation_score_seconds,
                                      step_variant)
from kalm_eval.rerank.engine import (IncompleteUnits, RerankJob, UnitScores, compute_units, merge_units,
                                     missing_units, unit_directory)
from kalm_eval.rerank.latency import latency_chunk, measure_latency
from kalm_eval.rerank.settings import RerankContext
from kalm_eval.result import PER_QUERY_FILE, PER_QUERY_HEADER, ResultRecord, completed, default_directory
from kalm_eval.retrieval.first_stage import FirstStageRun, first_stage
from kalm_eval.run_status import record_progress
from kalm_eval.ranking import scores_below, trec_order
from kalm_eval.retrieval.runfile import write_trec
from kalm_eval.space import check_space, estimate, writing
from kalm_eval.storage import atomic_open, copy_atomic, signature_of

log = logging.getLogger(__name__)

# The written score of a reranked candidate is its margin, so the reranked order is ranking.trec_order of the margins
# (ties of identical passage texts included): the written run ranks exactly as trec_eval reads it.
RERANK_TIE_BREAK = "margin desc, then doc id desc (trec_eval's order of the written run)"
SCORES_HEADER = "query_id\tdoc_id\tfirst_stage_rank\tfirst_stage_score\tmargin\tp_yes"
LOG_FILE = "run.log"


@dataclass
class RunState:
    """What every record of one run shares: config, data, first stage, its metrics, the protocol base, timings."""

    cfg: RunConfig
    workers: Workers
    dataset: Dataset
    first_stage: FirstStageRun
    first_stage_result: StageResult
    protocol: dict[str, Any]
    timings: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)
    log_path: Path | None = None


def run(cfg: RunConfig) -> list[Path]:
    """Execute a run; returns the result directories (one per variant when reranking)."""
    check_available(cfg.hub_checkpoints())  # before any work: every checkpoint cached or downloadable
    workers = from_environment(cfg.worker, cfg.workers)
    if workers.is_main:
        check_space(estimate(cfg))  # warns when cache_dir or the output has less free space than the run writes
    # A write that fails (no space, read-only) anywhere below: one line naming the place (the finer-grained
    # writers name the file); what was committed stays, nothing partial is left.
    with writing(cfg.cache_dir, permission=False), run_log(cfg, workers) as log_path:
        return _run(cfg, workers, log_path)


@contextlib.contextmanager
def run_log(cfg: RunConfig, workers: Workers) -> Iterator[Path]:
    """Everything the kalm_eval loggers say during the run, also in a file; each record gets a copy (run.log)."""
    path = cfg.cache_dir / "logs" / f"{signature_of(cfg.key())[:24]}.rank{workers.rank}.log"
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = _RunLogHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger("kalm_eval")
    previous = root.level
    root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()


class _RunLogHandler(logging.FileHandler):
    """The run's log file. A full disk must not print a logging traceback per message: the first failed write
    closes the file quietly (the console still shows everything; the failure that matters is raised where the
    run writes its own files)."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        self.close()
        self.emit = lambda record: None  # type: ignore[method-assign]


def _run(cfg: RunConfig, workers: Workers, log_path: Path) -> list[Path]:
    started = time.perf_counter()
    dataset = load_dataset(cfg.benchmark, cfg.cache_dir)  # fails on missing data before any model is loaded
    data_load_s = time.perf_counter() - started  # reading queries and qrels, opening (or building) the corpus index
    log.info("%s%s: %d queries, %d docs", workers.label(), dataset.name, len(dataset.queries), len(dataset.corpus))
    fs_started = time.perf_counter()
    fs = first_stage(dataset, cfg.retriever, cfg.cache_dir, force=cfg.force, workers=workers, progress=cfg.progress)
    fs_seconds = time.perf_counter() - fs_started
    depth = cfg.retriever.depth
    state = RunState(
        cfg=cfg, workers=workers, dataset=dataset, first_stage=fs,
        first_stage_result=metrics.evaluate("first_stage", fs, dataset.qrels, dataset.quirks, depth),
        protocol={"harness_version": __version__, "dataset": dataset.identity(),
                  "first_stage": {"signature": fs.signature, "source": fs.manifest["source"], "depth": depth,
                                  "tie_break": fs.manifest["tie_break"]},
                  "metrics": metrics.definitions(depth, dataset.quirks)},
        timings={"data_load_s": data_load_s, "first_stage_s": fs_seconds, "first_stage_cached": fs.reused,
                 "first_stage_build_s": fs.manifest.get("seconds")},
        started=started,
        log_path=log_path,
    )
    if workers.is_main:
        record_progress(cfg.cache_dir, cfg.key(), dataset=dataset.name,
                        first_stage={"path": str(fs.path), "signature": fs.signature})
    if not cfg.reranking:
        return _first_stage_only(state)
    return Reranking(state).run()


def _first_stage_only(state: RunState) -> list[Path]:
    protocol = {**state.protocol, "reranker": None}
    signature = signature_of(protocol)
    out = _output_dir(state, protocol, label=state.cfg.retriever.name, variant=None)
    if not state.workers.is_main:
        return []
    record_progress(state.cfg.cache_dir, state.cfg.key(), records=[{"path": str(out), "signature": signature}])
    if _done(out, signature, state.cfg.force):
        return [out]
    _commit(state, out, protocol, [state.first_stage_result], runs={},
            timings={**state.timings, "total_s": time.perf_counter() - state.started},
            counts={"queries": len(state.dataset.queries)})
    return [out]


@dataclass(frozen=True)
class RecordPlan:
    """One result record to write: a single variant, or a cascade over several."""

    label: str
    protocol: dict[str, Any]
    out: Path
    variant: Variant | None = None  # None = the cascade


class Reranking:
    def __init__(self, state: RunState):
        self.state = state
        self.cfg = state.cfg
        self.settings = state.cfg.reranker
        self.dataset = state.dataset

    def run(self) -> list[Path]:
        load_started = time.perf_counter()
        context = RerankContext(cache_dir=self.cfg.cache_dir, cache=self.cfg.cache,
                                local_rank=self.state.workers.local_rank)
        reranker = reranker_family(self.settings.name).build(self.cfg.model, self.settings, context)
        self.state.timings["model_load_s"] = time.perf_counter() - load_started
        plans = self._plans(reranker)
        workers = self.state.workers
        if workers.is_main:
            record_progress(self.cfg.cache_dir, self.cfg.key(),
                            records=[{"path": str(p.out), "signature": signature_of(p.protocol)} for p in plans])
        pending = [p for p in plans if not _done(p.out, signature_of(p.protocol), self.cfg.force)]
        if not pending:
            return [p.out for p in plans]
        job_started = time.perf_counter()
        job = RerankJob.build(self.state.first_stage, depth=self.settings.depth, query_text=self._query_text,
                              instruction=self.settings.instruction, passage_text=self.dataset.passage,
                              chunk_passages=self.settings.chunk_passages)
        self.state.timings["job_build_s"] = time.perf_counter() - job_started
        if job.empty_passages:
            log.warning("%s: %d candidate passage(s) have no text (%s...); they are scored as empty documents",
                        self.dataset.name, len(job.empty_passages), job.empty_passages[:5])
        variants = reranker.variants()
        units = unit_directory(self.cfg.cache_dir, self.dataset.name, reranker, variants, job)
        if workers.is_main:
            record_progress(self.cfg.cache_dir, self.cfg.key(), rerank={"units_dir": str(units.path), "units": job.chunks})
        computed = compute_units(job, reranker, units, workers, self.dataset.passage, show_progress=self.cfg.progress)
        log.info("%s%d unit(s) computed here, %d in all (%s)", workers.label(), computed, job.chunks, units.path)
        workers.barrier()
        if not workers.is_main and workers.distributed:
            return []  # rank 0 merges and writes the records
        missing = missing_units(job, units)
        if missing:
            if workers.world > 1:  # a job-array worker: the one that completes the last unit merges
                log.info("%s%d unit(s) still missing; the worker that completes them writes the records",
                         workers.label(), len(missing))
                return []
            raise IncompleteUnits(units.path, missing)
        merge_started = time.perf_counter()
        try:
            scores = merge_units(job, variants, units)
        except IncompleteUnits as damaged:  # named and deleted by the merge: compute them again, here, once
            log.warning("%srecomputing %d damaged rerank unit(s): %s", workers.label(), len(damaged.missing),
                        damaged.missing[:10])
            computed += compute_units(job, reranker, units, Workers(), self.dataset.passage,
                                      show_progress=self.cfg.progress)
            scores = merge_units(job, variants, units)
        self.state.timings["merge_s"] = time.perf_counter() - merge_started  # a recomputed damaged unit included
        self.state.timings["units"] = {"total": job.chunks, "computed_here": computed}
        for plan in pending:
            self._write(plan, reranker, job, scores)
        return [p.out for p in plans]

    def _query_text(self, query_id: str) -> str:
        return self.dataset.queries[query_id].text

    # ---- what to write ----------------------------------------------------------------------------------------
    def _plans(self, reranker: Reranker) -> list[RecordPlan]:
        base = {"name": self.settings.name, "model": reranker.identity().as_dict(), "depth": self.settings.depth,
                "instruction": self.settings.instruction, "tail": self.settings.tail, "tie_break": RERANK_TIE_BREAK,
                "score": "margin"}
        model_label = f"{self.cfg.retriever.name}-{self.cfg.model.name}"
        if self.settings.cascade is not None:
            steps = [{"depth": s.depth, "compression": s.compression} for s in self.settings.cascade]
            protocol = {**self.state.protocol, "reranker": {**base, "compression": None, "cascade": steps}}
            label = cascade_label(self.settings.cascade)
            return [RecordPlan(f"{model_label}-{label}", protocol, _output_dir(self.state, protocol,
                               label=f"{model_label}-{label}", variant=None))]
        variants = reranker.variants()
        plans = []
        for variant in variants:
            protocol = {**self.state.protocol, "reranker": {**base, **variant.protocol}}
            label = f"{model_label}-{variant.label}" if variant.label else model_label
            out = _output_dir(self.state, protocol, label=label, variant=variant.label if len(variants) > 1 else None)
            plans.append(RecordPlan(label, protocol, out, variant))
        return plans

    # ---- writing ----------------------------------------------------------------------------------------------
    def _write(self, plan: RecordPlan, reranker: Reranker, job: RerankJob, scores: UnitScores) -> None:
        if plan.variant is None:
            self._write_cascade(plan, reranker, job, scores)
            return
        label = plan.variant.label
        margin, p_yes = scores.margin[label], scores.p_yes[label]
        metrics_started = time.perf_counter()
        result = metrics.evaluate("reranked", self._reranked(job, margin), self.dataset.qrels, self.dataset.quirks,
                                  self.cfg.retriever.depth)
        result.extra["recall_ceiling"] = self.state.first_stage_result.aggregate.get(f"R@{self.settings.depth}")
        query_ids, doc_ids = np.asarray(job.query_ids)[job.pair_query], np.asarray(job.doc_ids)[job.pair_doc]
        result.extra.update(metrics.roc_auc(query_ids, doc_ids, margin.astype(np.float64), self.dataset.qrels,
                                            self.dataset.quirks))
        metrics_s = time.perf_counter() - metrics_started
        latency_started = time.perf_counter()
        latency = self._latency(reranker, plan.variant, self.settings.depth, scores)
        latency_probe_s = time.perf_counter() - latency_started
        timings = {**self.state.timings, "metrics_s": metrics_s, "latency_probe_s": latency_probe_s,
                   "encode_s": scores.counters.get("encode_seconds"),
                   "score_s": scores.variant_counters.get(label, {}).get("score_seconds"), "latency": latency,
                   "online_ms_per_query": self.settings.depth * latency["ms_per_pair_p50"] if latency else None}
        timings["total_s"] = time.perf_counter() - self.state.started
        counts = self._counts(job, scores, plan.variant)
        _commit(self.state, plan.out, plan.protocol, [self.state.first_stage_result, result],
                {"reranked": lambda: self._reranked(job, margin)}, timings, counts,
                pair_rows=lambda: self._score_rows(job, margin, p_yes))

    def _heads(self, job: RerankJob) -> Iterator[tuple[RankedList, range]]:
        """Each query's first-stage ranking, streamed, with the span of its head's pairs in the job; checked: the
        job's pairs of that span are exactly this query's first-stage top-k, in order (InvariantError otherwise)."""
        queries = 0
        for q, ranking in enumerate(self.state.first_stage):
            span = range(int(job.query_offsets[q]), int(job.query_offsets[q + 1])) if q < len(job.query_ids) else None
            if span is None or job.query_ids[q] != ranking.query_id or \
                    [job.doc_ids[d] for d in job.pair_doc[span.start:span.stop]] != \
                    [c.doc_id for c in ranking.candidates[: self.settings.depth]]:
                raise InvariantError(f"{self.state.first_stage.path}: query {ranking.query_id!r} (#{q + 1}): the "
                                     "scored pairs are not its first-stage top-"
                                     f"{self.settings.depth} (the run changed under the rerank job?); nothing written")
            queries += 1
            yield ranking, span
        if queries != len(job.query_ids):
            raise InvariantError(f"{self.state.first_stage.path}: {queries} queries, but the rerank job scored "
                                 f"{len(job.query_ids)}; nothing written")

    def _reranked(self, job: RerankJob, margin: np.ndarray) -> Iterator[RankedList]:
        """Each query's head in trec_order of its margins, then the first-stage tail; streamed, each query checked
        to hold exactly its own first-stage candidates."""
        for ranking, span in self._heads(job):
            head = ranking.candidates[: len(span)]
            new_head = trec_order(Candidate(cand.doc_id, float(margin[i])) for cand, i in zip(head, span))
            yield checked_candidates(ranking, RankedList(
                ranking.query_id, tuple(new_head + self._tail(ranking, new_head, len(head)))), len(head),
                self.settings.tail)

    def _score_rows(self, job: RerankJob, margin: np.ndarray, p_yes: np.ndarray) -> Iterator[tuple]:
        for ranking, span in self._heads(job):
            for rank, (cand, i) in enumerate(zip(ranking.candidates, span), start=1):
                yield ranking.query_id, cand.doc_id, rank, cand.score, float(margin[i]), float(p_yes[i])

    def _tail(self, ranking: RankedList, above: list[Candidate], depth: int) -> list[Candidate]:
        """First-stage order below the reranked part; written scores continue strictly below its lowest one."""
        if self.settings.tail != "first_stage" or len(ranking.candidates) <= depth:
            return []
        floor = min((c.score for c in above), default=0.0)
        tail = ranking.candidates[depth:]
        return [Candidate(c.doc_id, score) for c, score in zip(tail, scores_below(floor, len(tail)))]

    def _write_cascade(self, plan: RecordPlan, reranker: Reranker, job: RerankJob, scores: UnitScores) -> None:
        steps = self.settings.cascade
        stage_results, online, step_timings = [], 0.0, []
        for k in range(1, len(steps) + 1):
            name = "reranked" if k == len(steps) else f"cascade_{k}"
            rankings = (ranking for ranking, _ in self._cascade(job, scores, steps[:k]))
            stage_results.append(metrics.evaluate(name, rankings, self.dataset.qrels, self.dataset.quirks,
                                                  self.cfg.retriever.depth))
            latency = self._latency(reranker, step_variant(steps[k - 1]), steps[k - 1].depth, scores)
            p50 = latency["ms_per_pair_p50"] if latency else None
            online = online + steps[k - 1].depth * p50 if p50 is not None and online is not None else None
            step_timings.append({"step": k, "depth": steps[k - 1].depth, "compression": steps[k - 1].compression,
                                 "ms_per_pair_p50": p50, "latency": latency})
        stage_results[-1].extra["recall_ceiling"] = self.state.first_stage_result.aggregate.get(f"R@{self.settings.depth}")
        timings = {**self.state.timings, "encode_s": scores.counters.get("encode_seconds"),
                   "score_s": cascade_score_seconds(job.query_offsets, steps, scores.variant_counters),
                   "evaluation_score_s": evaluation_score_seconds(steps, scores.variant_counters),
                   "latency": step_timings[-1]["latency"], "cascade": step_timings, "online_ms_per_query": online}
        timings["total_s"] = time.perf_counter() - self.state.started
        counts = self._counts(job, scores, step_variant(steps[0]))
        _commit(self.state, plan.out, plan.protocol, [self.state.first_stage_result, *stage_results],
                {"reranked": lambda: (ranking for ranking, _ in self._cascade(job, scores, steps))}, timings, counts,
                pair_rows=lambda: (row for _, rows in self._cascade(job, scores, steps) for row in rows))

    def _cascade(self, job: RerankJob, scores: UnitScores, steps) -> Iterator[tuple[RankedList, list[tuple]]]:
        """Each query's head after the cascade's steps (rerank/cascade.py), then the first-stage tail; score rows:
        each pair's deepest step. Streamed, each query checked to hold exactly its own first-stage candidates."""
        for ranking, span in self._heads(job):
            head = ranking.candidates[: len(span)]
            result = cascade_head([c.doc_id for c in head], steps, lambda variant, i: (
                float(scores.margin[variant.label][span[i]]), float(scores.p_yes[variant.label][span[i]])))
            scored = result.scored_by_last_step(len(steps))
            cands = [Candidate(head[i].doc_id, result.deepest[i][1]) for i in result.order[:scored]]
            below = result.order[scored:]
            cands += [Candidate(head[i].doc_id, score)
                      for i, score in zip(below, scores_below(min((c.score for c in cands), default=0.0), len(below)))]
            rows = [(ranking.query_id, cand.doc_id, i + 1, cand.score, result.deepest[i][1], result.deepest[i][2])
                    for i, cand in enumerate(head)]
            reranked = RankedList(ranking.query_id, tuple(cands + self._tail(ranking, cands, len(head))))
            yield checked_candidates(ranking, reranked, len(head), self.settings.tail), rows

    # ---- costs ------------------------------------------------------------------------------------------------
    def _latency(self, reranker: Reranker, variant: Variant, depth: int, scores: UnitScores) -> dict[str, Any] | None:
        s = self.settings
        if s.latency_batches <= 0 or not self.state.workers.is_main:
            return None
        per_batch = min(depth, s.batch_size)
        chunk = latency_chunk(self.state.first_stage, pairs_per_batch=per_batch, count=s.latency_warmup + s.latency_batches,
                              query_text=self._query_text, instruction=s.instruction, passage_text=self.dataset.passage)
        latency = measure_latency(reranker, chunk, variant, pairs_per_batch=per_batch, warmup=s.latency_warmup) \
            if chunk else None
        if latency is not None:
            encoded = scores.counters.get("passages_encoded") or 0
            latency["encode_ms_per_passage"] = 1000.0 * scores.counters["encode_seconds"] / encoded if encoded else None
            latency["torch_threads"] = provenance.device_description().get("torch_threads")
        return latency

    def _counts(self, job: RerankJob, scores: UnitScores, variant: Variant) -> dict[str, Any]:
        counters = scores.counters
        texts = job.unique_texts
        counts: dict[str, Any] = {"queries": len(self.dataset.queries), "pairs": job.pairs,
                                  "unique_passages": len(job.doc_ids), "unique_passage_texts": texts,
                                  "units": job.chunks, "candidate_passages_without_text": len(job.empty_passages)}
        if job.empty_passages:
            counts["candidate_passage_ids_without_text"] = job.empty_passages[:20]
        for key in ("passages_encoded", "cache_hits", "tokens_encoded", "cache_bytes_written"):
            if key in counters:
                counts[key] = int(counters[key])
        per_state = ("score_seconds", "pooled_vectors", "stored_bytes")
        counts.update({k: v for k, v in scores.variant_counters.get(variant.label, {}).items() if k not in per_state})
        # every r's states come from the one encoder pass, so every r's size is reported with each record
        states = {v.compression: scores.variant_counters.get(v.label, {})
                  for v in map(Variant, self.settings.compressions_scored)}
        if any("pooled_vectors" in c for c in states.values()):
            counts["pooled_vectors_per_passage"] = {str(r): c["pooled_vectors"] / texts for r, c in states.items()}
            counts["stored_bytes_per_passage"] = {str(r): c["stored_bytes"] / texts for r, c in states.items()}
            counts["compression_sharing_encode"] = list(self.settings.compressions_scored)
        return counts


def checked_candidates(first_stage: RankedList, reranked: RankedList, head: int, tail: str) -> RankedList:
    """`reranked`, checked to hold exactly the query's own first-stage candidates (all of them with the first-stage
    tail, its top `head` with tail=drop), each once: InvariantError naming the query otherwise, before any metric."""
    expected = sorted(c.doc_id for c in first_stage.candidates[: head if tail == "drop" else None])
    if reranked.query_id != first_stage.query_id or sorted(c.doc_id for c in reranked.candidates) != expected:
        raise InvariantError(f"reranked query {reranked.query_id!r} does not hold exactly the first-stage candidates "
                             f"of query {first_stage.query_id!r} (a bug); nothing written")
    return reranked


# ---- records ----------------------------------------------------------------------------------------------------

def _output_dir(state: RunState, protocol: dict[str, Any], *, label: str, variant: str | None) -> Path:
    cfg = state.cfg
    if cfg.output_dir is not None:
        return cfg.output_dir / variant if variant else cfg.output_dir
    return default_directory(cfg.results_dir, state.dataset.name, label, signature_of(protocol))


def _done(out: Path, signature: str, force: bool) -> bool:
    if force:
        return False
    if completed(out, signature) is not None:
        log.info("already done (same signature): %s — pass force=true to recompute", out)
        return True
    return False


def _commit(state: RunState, out: Path, protocol: dict[str, Any], stages: list[StageResult],
            runs: dict[str, Callable[[], Iterable[RankedList]]], timings: dict[str, Any], counts: dict[str, Any],
            pair_rows: Callable[[], Iterable[tuple]] | None = None) -> None:
    """Write the record and its files; run files and score rows come from factories that stream them."""
    dataset = state.dataset
    writers = {"run.first_stage.trec.gz": lambda path: copy_atomic(state.first_stage.path, path)}
    for name, rankings in runs.items():
        writers[f"run.{name}.trec.gz"] = lambda path, rankings=rankings, name=name: write_trec(path, rankings(), tag=name)
    if pair_rows is not None:
        writers["scores.reranked.tsv.gz"] = lambda path: _write_scores(path, pair_rows())
    writers[PER_QUERY_FILE] = lambda path: _write_per_query(path, stages)
    files = {"first_stage_run": "run.first_stage.trec.gz", "per_query": PER_QUERY_FILE,
             **{f"{n}_run": f"run.{n}.trec.gz" for n in runs}}
    if state.log_path is not None and state.log_path.exists():
        writers[LOG_FILE] = lambda path: copy_atomic(state.log_path, path)
        files["log"] = LOG_FILE
    if pair_rows is not None:
        files["scores"] = "scores.reranked.tsv.gz"
    record = ResultRecord(
        dataset=dataset.name, split=dataset.split, signature=signature_of(protocol),
        stages={s.name: {**s.aggregate, **s.extra} for s in stages}, protocol=protocol, timings=timings,
        counts={**counts, **{f"data_{k}": v for k, v in dataset.stats.items()}},
        provenance={**provenance.collect(), "config": state.cfg.full_config, "logged_knobs": state.cfg.logged_knobs()},
        files=files)
    record.commit(out, writers)
    log.info("%s  %s", out, "  ".join(f"{s.name} nDCG@10={s.aggregate['nDCG@10']:.5f}" for s in stages))


def _write_scores(path: Path, rows: Iterable[tuple]) -> None:
    with atomic_open(path) as fh:
        fh.write(SCORES_HEADER + "\n")
        for row in rows:
            fh.write("\t".join(str(v) for v in row) + "\n")


def _write_per_query(path: Path, stages: list[StageResult]) -> None:
    with atomic_open(path) as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(PER_QUERY_HEADER)
        for stage in stages:
            for measure, values in stage.per_query.items():
                for qid, value in values.items():
                    writer.writerow([stage.name, measure, qid, repr(value)])
