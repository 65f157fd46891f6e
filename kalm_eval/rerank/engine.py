"""Passage-major scoring in units whose identity does not depend on how many workers run them.

A RerankJob is the work of one run: every query's head at the rerank depth as (query, passage) pairs, in the
first-stage file's order, plus the unique candidate passages and the sha256 of each passage text. The unique texts
are hash-partitioned by digest into n = ceil(texts / chunk_passages) chunks; a unit is one chunk: its passages and
every pair that involves them. Worker `(c + o) % world` computes unit c, o a number read from the units directory's
key (so the one-unit datasets of a suite do not all fall to worker 0): the reranker encodes the chunk's passages once,
scores its pairs at every variant, and the unit is written atomically as `units/<c>.npz` (pair indices, margin and
P(yes) per variant, cost counters); then the chunk's states are dropped, so memory is bounded by the chunk, not the
dataset. An existing unit is never recomputed; a unit being computed has an `<c>.inflight` marker (host, pid).
A score that is not a finite number is refused before its unit is written (ScoreError naming query, doc, model and
variant); a cached unit holding one is damaged like an unreadable one (named, deleted, computed again).
The merge reads every unit back into per-variant arrays aligned with the job's pairs, so 1 worker, N torchrun ranks
or a job array resumed with another world size produce byte-identical run files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kalm_eval import failpoints
from kalm_eval.errors import InvariantError, ScoreError
from kalm_eval.parallel import Workers
from kalm_eval.progress import progress_bar
from kalm_eval.records import RankedList
from kalm_eval.rerank.base import Reranker, ScoringChunk, Variant
from kalm_eval.storage import atomic_open, read_json, sha256_text, signature_of, write_json_atomic

log = logging.getLogger(__name__)

UNIT_FORMAT = "kalm-eval/rerank-unit/v2"  # v2: pooled_vectors / stored_bytes per variant, not "@r" keys


@dataclass
class RerankJob:
    query_ids: list[str]
    queries: list[tuple[str, str | None]]  # (text, instruction) per query index
    doc_ids: list[str]  # unique candidate doc ids, first-seen order
    digests: list[str]  # sha256 of each doc's passage text
    pair_query: np.ndarray  # int32 per pair; pairs in first-stage order (query by query, rank order)
    pair_doc: np.ndarray  # int32 per pair, index into doc_ids
    query_offsets: np.ndarray  # pairs of query q are [query_offsets[q], query_offsets[q + 1])
    chunk_passages: int
    empty_passages: list[str] = field(default_factory=list)  # candidates whose passage has no text (scored as is)
    pair_score: np.ndarray | None = None  # float64 per pair: its first-stage score

    @classmethod
    def build(cls, rankings: Iterable[RankedList], *, depth: int, query_text: Callable[[str], str],
              instruction: str | None, passage_text: Callable[[str], str], chunk_passages: int) -> RerankJob:
        query_ids, doc_index, pair_query, pair_doc, pair_score, offsets = [], {}, [], [], [], [0]
        for ranking in rankings:
            q = len(query_ids)
            query_ids.append(ranking.query_id)
            for cand in ranking.candidates[:depth]:
                pair_query.append(q)
                pair_doc.append(doc_index.setdefault(cand.doc_id, len(doc_index)))
                pair_score.append(cand.score)
            offsets.append(len(pair_doc))
        doc_ids = list(doc_index)
        digests, empty = [], []
        for doc_id in doc_ids:  # one read per passage: its digest, and whether it has any text at all
            text = passage_text(doc_id)
            digests.append(sha256_text(text))
            if not text.strip():
                empty.append(doc_id)
        return cls(query_ids=query_ids, queries=[(query_text(qid), instruction) for qid in query_ids],
                   doc_ids=doc_ids, digests=digests, pair_query=np.asarray(pair_query, dtype=np.int32),
                   pair_doc=np.asarray(pair_doc, dtype=np.int32), query_offsets=np.asarray(offsets, dtype=np.int64),
                   chunk_passages=chunk_passages, empty_passages=empty,
                   pair_score=np.asarray(pair_score, dtype=np.float64))

    @property
    def pairs(self) -> int:
        return len(self.pair_doc)

    @property
    def unique_texts(self) -> int:
        return len(set(self.digests))

    @property
    def chunks(self) -> int:
        return max(1, math.ceil(self.unique_texts / self.chunk_passages))

    def fingerprint(self) -> str:
        """Everything the units' contents depend on, apart from the reranker: pairs, passage texts, queries.
        Hashed piece by piece (no JSON of a million pairs in memory)."""
        digest = hashlib.sha256(f"{UNIT_FORMAT}|chunk_passages={self.chunk_passages}|".encode())
        for part in (self.query_ids, [json.dumps(q, ensure_ascii=False) for q in self.queries], self.doc_ids,
                     self.digests):
            digest.update(len(part).to_bytes(8, "little"))
            for item in part:
                digest.update(item.encode("utf-8") + b"\0")
        digest.update(self.pair_query.astype("<i4").tobytes() + self.pair_doc.astype("<i4").tobytes())
        return digest.hexdigest()

    def chunk_of_docs(self) -> np.ndarray:
        n = self.chunks
        return np.array([int(d[:16], 16) % n for d in self.digests], dtype=np.int64)

    def unit_pairs(self) -> list[np.ndarray]:
        """Pair indices (ascending) of each chunk."""
        chunk_of_pair = self.chunk_of_docs()[self.pair_doc]
        order = np.argsort(chunk_of_pair, kind="stable")
        bounds = np.searchsorted(chunk_of_pair[order], np.arange(self.chunks + 1))
        return [order[bounds[c]:bounds[c + 1]] for c in range(self.chunks)]

    def scoring_chunk(self, pair_indices: np.ndarray, passage_text: Callable[[str], str]) -> ScoringChunk:
        """The chunk's passages (ordered by text digest, then doc id), its queries and its pairs, re-indexed."""
        docs = sorted(set(self.pair_doc[pair_indices].tolist()), key=lambda d: (self.digests[d], self.doc_ids[d]))
        local_doc = {d: i for i, d in enumerate(docs)}
        queries = sorted(set(self.pair_query[pair_indices].tolist()))
        local_query = {q: i for i, q in enumerate(queries)}
        return ScoringChunk(
            passages=[(self.doc_ids[d], passage_text(self.doc_ids[d])) for d in docs],
            queries=[self.queries[q] for q in queries],
            pairs=[(local_query[int(q)], local_doc[int(d)])
                   for q, d in zip(self.pair_query[pair_indices], self.pair_doc[pair_indices])],
            first_stage_scores=self.pair_score[pair_indices].tolist() if self.pair_score is not None else (),
        )

    def pair_name(self, pair: int) -> str:
        return f"query {self.query_ids[int(self.pair_query[pair])]!r}, doc {self.doc_ids[int(self.pair_doc[pair])]!r}"


@dataclass
class UnitScores:
    """Every unit merged: per variant, margin and P(yes) per pair of the job, plus summed cost counters."""

    margin: dict[str, np.ndarray]
    p_yes: dict[str, np.ndarray]
    counters: dict[str, float] = field(default_factory=dict)
    variant_counters: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class UnitDirectory:
    """`<cache>/rerank_units/<dataset>/<key>/`: one run's units, `job.json` describing them."""

    path: Path

    def unit(self, c: int) -> Path:
        return self.path / f"{c:06d}.npz"

    def marker(self, c: int) -> Path:
        return self.path / f"{c:06d}.inflight"

    def done(self, c: int) -> bool:
        return self.unit(c).exists()

    def worker_offset(self) -> int:
        """A stable number per run (the directory is named by the hex signature of its key), added to the unit
        index before `Workers.mine`: every worker of a run reads the same one."""
        try:
            return int(self.path.name[:8], 16)
        except ValueError:
            return 0

    def status(self, total: int) -> dict[str, Any]:
        done = sum(1 for c in range(total) if self.done(c))
        markers = [p for p in self.path.glob("*.inflight") if not self.unit(int(p.stem)).exists()]
        live = [p for p in markers if _alive(p)]
        return {"units": total, "done": done, "in_flight": len(live), "interrupted": len(markers) - len(live),
                "missing": total - done}


def unit_directory(cache_dir: Path, dataset: str, reranker: Reranker, variants: list[Variant], job: RerankJob
                   ) -> UnitDirectory:
    key = {"reranker": reranker.identity().as_dict(), "variants": [v.protocol for v in variants],
           "job": job.fingerprint()}
    if getattr(reranker, "reads_first_stage_scores", False):  # the control family: its units follow the scores too
        key["first_stage_scores"] = hashlib.sha256(np.asarray(job.pair_score, "<f8").tobytes()).hexdigest()
    path = cache_dir / "rerank_units" / dataset.replace("/", "__") / signature_of(key)[:24]
    path.mkdir(parents=True, exist_ok=True)
    if not (path / "job.json").exists():
        write_json_atomic(path / "job.json", {"format": UNIT_FORMAT, "dataset": dataset, "units": job.chunks,
                                              "pairs": job.pairs, "passages": job.unique_texts,
                                              "variants": [v.label for v in variants], "key": key})
    return UnitDirectory(path)


def compute_units(job: RerankJob, reranker: Reranker, units: UnitDirectory, workers: Workers,
                  passage_text: Callable[[str], str], show_progress: bool = False) -> int:
    """Compute this worker's missing units; returns how many it computed. Progress: units, passages encoded and
    pairs scored (a reranker that reports finer steps calls `on_progress(kind, n)`)."""
    pairs_of = job.unit_pairs()
    offset = units.worker_offset()
    mine = [c for c in range(job.chunks) if workers.mine(c + offset) and not units.done(c)]
    label = workers.label()
    digests = np.array(job.digests)
    bars = {"unit": progress_bar(total=len(mine), desc=f"{label}rerank units", unit="unit", enabled=show_progress),
            "encode": progress_bar(total=sum(len(set(digests[job.pair_doc[pairs_of[c]]])) for c in mine),
                                   desc=f"{label}encode passages", unit="passage", enabled=show_progress),
            "score": progress_bar(total=sum(len(pairs_of[c]) for c in mine) * len(reranker.variants()),
                                  desc=f"{label}score pairs", unit="pair", enabled=show_progress)}
    reranker.on_progress = lambda kind, n: bars[kind].update(n)
    try:
        return _compute(job, reranker, units, mine, pairs_of, passage_text, bars["unit"])
    finally:
        reranker.on_progress = None
        for bar in bars.values():
            bar.close()


def _compute(job: RerankJob, reranker: Reranker, units: UnitDirectory, mine: list[int], pairs_of: list[np.ndarray],
             passage_text: Callable[[str], str], unit_bar) -> int:
    computed = 0
    for c in mine:
        if units.done(c):  # another attempt finished it meanwhile
            continue
        write_json_atomic(units.marker(c), {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()})
        chunk = job.scoring_chunk(pairs_of[c], passage_text)
        result = reranker.score_chunk(chunk)
        failpoints.reach("unit.scored")
        arrays = {"pair_index": pairs_of[c].astype(np.int64), "format": np.array(UNIT_FORMAT),
                  "counters": np.array(json.dumps(result.counters)),
                  "variant_counters": np.array(json.dumps(result.variant_counters))}
        dtype = getattr(reranker, "score_dtype", np.float32)  # float32; the first_stage control keeps float64
        for label, scores in result.scores.items():
            arrays[f"margin/{label}"] = np.array([s.margin for s in scores], dtype=dtype)
            arrays[f"p_yes/{label}"] = np.array([s.p_yes for s in scores], dtype=dtype)
        check_unit_scores(job, pairs_of[c], arrays, reranker, c)
        with atomic_open(units.unit(c), "wb", compress=False) as handle:
            np.savez(handle, **arrays)
            failpoints.reach("unit.write")
        failpoints.reach("unit.done")
        units.marker(c).unlink(missing_ok=True)
        unit_bar.update(1)
        computed += 1
    return computed


def missing_units(job: RerankJob, units: UnitDirectory) -> list[int]:
    return [c for c in range(job.chunks) if not units.done(c)]


def merge_units(job: RerankJob, variants: list[Variant], units: UnitDirectory) -> UnitScores:
    """Read every unit back; a unit that is unreadable or describes other pairs is deleted and reported missing."""
    pairs_of = job.unit_pairs()
    labels = [v.label for v in variants]
    merged = UnitScores(margin={label: np.full(job.pairs, np.nan, np.float64) for label in labels},
                        p_yes={label: np.full(job.pairs, np.nan, np.float64) for label in labels})
    bad = []
    for c in range(job.chunks):
        try:
            with np.load(units.unit(c)) as data:
                if str(data["format"]) != UNIT_FORMAT or not np.array_equal(data["pair_index"], pairs_of[c]):
                    raise ValueError("it describes other pairs")
                for label in labels:
                    margin, p_yes = data[f"margin/{label}"], data[f"p_yes/{label}"]
                    if not (np.isfinite(margin).all() and np.isfinite(p_yes).all()):
                        raise ValueError(f"it holds non-finite scores (variant {label!r})")
                    merged.margin[label][pairs_of[c]] = margin
                    merged.p_yes[label][pairs_of[c]] = p_yes
                _add(merged.counters, json.loads(str(data["counters"])))
                for label, counters in json.loads(str(data["variant_counters"])).items():
                    _add(merged.variant_counters.setdefault(label, {}), counters)
            failpoints.reach("merge")
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            log.warning("rerank unit %s is unusable (%s); deleting it", units.unit(c), err)
            units.unit(c).unlink(missing_ok=True)
            bad.append(c)
    if bad:
        raise IncompleteUnits(units.path, bad)
    return merged


def check_unit_scores(job: RerankJob, pairs: np.ndarray, arrays: dict[str, np.ndarray], reranker: Reranker,
                      unit: int) -> None:
    """Before a unit is written: one score per pair for every variant, each a finite number. A NaN or an infinity
    (a bf16 overflow on a GPU, a broken checkpoint) cannot be ranked: ScoreError naming the first such pair, the
    model and the variant, so neither the unit nor any result is written with it."""
    for key, values in arrays.items():
        if not key.startswith(("margin/", "p_yes/")):
            continue
        kind, label = key.split("/", 1)
        if len(values) != len(pairs):
            raise InvariantError(f"reranker {reranker.name!r} returned {len(values)} {kind} values for the "
                                 f"{len(pairs)} pairs of unit {unit} (variant {label!r}): a bug of the reranker")
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            what = "margin" if kind == "margin" else "P(yes)"
            raise ScoreError(f"{job.pair_name(int(pairs[bad[0]]))}: {what} {float(values[bad[0]])!r} is not a finite "
                             f"number (model {model_name(reranker)}, variant {label or 'single'!r}; {len(bad)} of "
                             f"{len(pairs)} pairs of unit {unit}); neither the unit nor any result was written. "
                             "An overflow in bfloat16 shows "
                             "as inf or nan: try model.dtype=float32")


def model_name(reranker: Reranker) -> str:
    """`family checkpoint@revision`, from the checkpoint block of the reranker's identity."""
    checkpoint_block = reranker.identity().checkpoint
    checkpoint, revision = checkpoint_block.get("checkpoint"), checkpoint_block.get("revision")
    name = f"{reranker.name} {checkpoint}" if checkpoint else reranker.name
    return f"{name}@{revision}" if revision else name


class IncompleteUnits(RuntimeError):
    def __init__(self, path: Path, missing: list[int]):
        super().__init__(f"{path}: {len(missing)} unit(s) missing or damaged ({missing[:10]}); rerun to compute them")
        self.missing = missing


def _add(total: dict[str, float], counters: dict[str, float]) -> None:
    for key, value in counters.items():
        total[key] = total.get(key, 0) + value


def _alive(marker: Path) -> bool:
    """An in-flight marker of a process that still runs (same host: check the pid; other hosts: trust it)."""
    try:
        info = read_json(marker)
    except (OSError, ValueError):
        return False
    if info.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(info["pid"]), 0)
    except (OSError, KeyError, ValueError):
        return False
    try:  # a killed process whose parent died first can linger as a zombie: not alive
        return Path(f"/proc/{int(info['pid'])}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
