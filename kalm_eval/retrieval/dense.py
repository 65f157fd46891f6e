"""Dense first stage: any sentence-transformers model, exact inner-product (cosine) search, out of core.

Corpus embeddings live on disk in shards: unit u = the passages at file positions [u*S, (u+1)*S) (S = shard_docs),
stored as `<cache>/dense/<key>/shard-<u>.npy` (float16 by default) with a JSON sidecar carrying the unit's range,
shape and sha256. The key is the encoder identity + max_seq_length + normalize + model dtype + storage dtype +
corpus sha256 + joiner + S. A unit is computed only if absent, so a run killed mid-encoding resumes from the
finished shards, and workers (kalm_eval.parallel.Workers) share units whatever their number.

Search is shard by shard too: for every query block, the shard is multiplied in float32 chunks and an exact top-k
*with ties* is kept (every passage scoring at least the k-th best score), written per shard as a small "partial"
(`search/<query key>/part-<u>.npz`); the merge folds the partials into a running top-k with the same rule. Keeping
the ties makes the result equal to a brute-force ranking under the run file's rule (score desc, then doc id desc),
whatever the shard size. LMEB scene queries score only their candidates, reading those rows by position.

This module is the retriever (settings, encode shards, search, merge); the encoders are in dense_encoders.py, the
shards on disk in dense_shards.py, the running top-k in topk.py."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kalm_eval.data import Dataset
from kalm_eval.errors import ConfigError, KalmEvalError, ScoreError
from kalm_eval.parallel import Workers
from kalm_eval.progress import progress_bar
from kalm_eval.records import RankedList
from kalm_eval.retrieval.dense_encoders import Encoder, make_encoder
from kalm_eval.retrieval.dense_settings import STORE_DTYPES, DenseSettings
from kalm_eval.retrieval.dense_shards import (ShardDamaged, ShardStore, link_once, part_name, partial_ok,
                                              resolve_store_dtype, save_npz_once, write_once, written)
from kalm_eval.retrieval.runfile import rank
from kalm_eval.retrieval.topk import TopK
from kalm_eval.storage import canonical_json, signature_of

log = logging.getLogger(__name__)

FORMAT = 1  # of the shard / partial files; part of every cache key
SEARCH_CHUNK = 16384  # corpus rows per float32 matmul
QUERY_BLOCK = 1024  # queries per matmul


class UnitsPending(KalmEvalError):
    """This worker finished its share, but other workers' units are still missing (job arrays have no barrier):
    the worker that finds every unit present builds the run."""


class DenseRetriever:
    """`cache_dir` holds the embedding shards (default: the corpus DocStore's cache). `workers` shares shard units:
    under torchrun every rank calls `prepare` (its share of encoding + search, then a barrier) and rank 0 alone
    `retrieve`s; job-array workers each call `retrieve`. `progress` turns the bars on or off. `encoder` replaces the
    model (tests, benchmarks)."""

    def __init__(self, settings: DenseSettings, cache_dir: Path | None = None, workers: Workers | None = None,
                 progress: bool = True, encoder: Encoder | None = None):
        if settings.store_dtype not in STORE_DTYPES:
            raise ConfigError(f"retriever.store_dtype={settings.store_dtype!r}: expected one of {STORE_DTYPES}")
        if settings.shard_docs < 1:
            raise ConfigError(f"retriever.shard_docs={settings.shard_docs}: must be >= 1")
        self.settings = settings
        self.store_dtype = resolve_store_dtype(settings)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.workers = workers or Workers()
        self._encoder = encoder
        self.progress = progress
        self._prepared: tuple[tuple[int, int], _SearchPlan] | None = None
        self.encoded_units: list[int] = []  # units this instance encoded in its last retrieve() (resume checks)

    @property
    def device(self) -> str:
        import torch

        if self.settings.device != "auto":
            return self.settings.device
        return f"cuda:{self.workers.local_rank}" if torch.cuda.is_available() else "cpu"

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = make_encoder(self.settings, self.device)
        return self._encoder

    def identity(self) -> dict:
        s = self.settings
        return {
            "kind": "dense",
            **self.encoder.identity(),
            "max_seq_length": s.max_seq_length,
            "query_template": s.query_template,
            "instruction": s.instruction,
            "normalize": s.normalize,
            "dtype": s.dtype,
            "store_dtype": self.store_dtype,
            "similarity": "cosine, exact",
        }

    # -- corpus shards -------------------------------------------------------------------------------------------

    def corpus_key(self, dataset: Dataset) -> dict[str, Any]:
        s = self.settings
        return {"format": FORMAT, "encoder": self.encoder.identity(), "max_seq_length": s.max_seq_length,
                "normalize": s.normalize, "dtype": s.dtype, "store_dtype": self.store_dtype,
                "corpus_sha256": dataset.corpus.sha256, "docs": len(dataset.corpus), "joiner": dataset.joiner,
                "shard_docs": s.shard_docs}

    def shard_store(self, dataset: Dataset) -> ShardStore:
        key = self.corpus_key(dataset)
        root = (self.cache_dir or dataset.corpus.cache_dir) / "dense" / signature_of(key)[:16]
        return ShardStore(root, key, len(dataset.corpus), self.settings.shard_docs, self.store_dtype)

    def _passage_bar(self, store: ShardStore, units: list[int]):
        return progress_bar(total=sum(store.bounds(u)[1] - store.bounds(u)[0] for u in units),
                            desc=f"{self.workers.label()}dense: encode passages", unit="passage",
                            enabled=self.progress)

    def _encode_unit(self, dataset: Dataset, store: ShardStore, unit: int, bar=None) -> None:
        started = time.perf_counter()
        start, stop = store.bounds(unit)
        parts = []
        for _ids, docs in dataset.corpus.iter_batches(max(self.settings.batch_size, 8192), start, stop):
            parts.append(store.to_storage(self.encoder.encode_passages([d.passage(dataset.joiner) for d in docs]),
                                          ids=[d.id for d in docs]))
            if bar is not None:
                bar.update(len(docs))
        store.save(unit, np.concatenate(parts), first_id=dataset.corpus.id_at(start),
                   last_id=dataset.corpus.id_at(stop - 1))
        self.encoded_units.append(unit)
        log.info("%sdense: encoded shard %d/%d (%d passages) in %.1f s", self.workers.label(), unit + 1, store.units,
                 stop - start, time.perf_counter() - started)

    def _verified_shard(self, dataset: Dataset, store: ShardStore, unit: int) -> np.ndarray:
        """The shard of `unit`, sha256-checked; a damaged one is discarded and encoded again."""
        for attempt in range(2):
            if not store.has(unit):
                self._encode_unit(dataset, store, unit)
            try:
                return store.load(unit, verify=True)
            except ShardDamaged:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    # -- search --------------------------------------------------------------------------------------------------

    def prepare(self, dataset: Dataset, depth: int) -> None:
        """This worker's share of the units (encode missing shards, search them), then a barrier (torchrun): every
        rank calls it; `retrieve` afterwards reuses it instead of sharing again."""
        self._prepared = ((id(dataset), depth), self._run_units(dataset, depth))

    def retrieve(self, dataset: Dataset, depth: int) -> Iterator[RankedList]:
        import torch

        prepared, self._prepared = self._prepared, None
        plan = prepared[1] if prepared is not None and prepared[0] == (id(dataset), depth) \
            else self._run_units(dataset, depth)
        store, search, queries, free_rows, query_emb, k = (plan.store, plan.search, plan.queries, plan.free_rows,
                                                           plan.query_emb, plan.k)
        corpus = dataset.corpus
        n_free = len(free_rows)
        units = list(range(store.units))

        def unit_done(unit: int) -> bool:
            return store.has(unit) and (not n_free or partial_ok(search / part_name(unit), n_free))

        missing = [u for u in units if not unit_done(u)]
        if missing:
            raise UnitsPending(f"{self.workers.label()}dense: {len(missing)} of {store.units} units under {store.root} "
                               "are still missing (other workers' share); the worker that finds them all builds the run")
        merged = self._merge(store, search, n_free, k) if n_free else []
        device = torch.device(self.device)
        free_index = {row: j for j, row in enumerate(free_rows.tolist())}
        for i, query in enumerate(queries):
            allowed = dataset.candidates_for(query.id)
            if allowed is None:
                scores, positions = merged[free_index[i]]
                scored = zip(corpus.ids_at(positions), scores.tolist())
            elif not allowed:
                scored = iter(())
            else:  # LMEB scene: only this query's candidates, scored against their stored embeddings
                rows = torch.from_numpy(store.rows(corpus.positions(allowed))).to(device)
                scored = zip(allowed, (rows @ torch.from_numpy(query_emb[i]).to(device)).cpu().tolist())
            yield rank(query.id, scored, depth, ignore_identical_ids=dataset.quirks.ignore_identical_ids,
                       source="dense similarity (a zero or overflowing embedding?)")

    def _run_units(self, dataset: Dataset, depth: int) -> _SearchPlan:
        """Encode and search this worker's share of the shards (each skipped if already on disk), then a barrier."""
        s = self.settings
        corpus = dataset.corpus
        store = self.shard_store(dataset)
        store.write_key()
        queries = list(dataset.queries.values())
        texts = [s.query_template.format(query=q.text, instruction=s.instruction) for q in queries]
        free_rows = np.asarray([i for i, q in enumerate(queries) if dataset.candidates_for(q.id) is None], np.int64)
        n_free = len(free_rows)
        k = min(depth + int(dataset.quirks.ignore_identical_ids), len(corpus))
        search = self._search_dir(store, [(q.id, t) for q, t in zip(queries, texts)], free_rows.tolist(), k)
        query_emb = self._query_embeddings(search, texts, [q.id for q in queries])
        free_emb = np.ascontiguousarray(query_emb[free_rows])
        mine = self.workers.share(list(range(store.units)))
        self.encoded_units = []
        encode_bar = self._passage_bar(store, [u for u in mine if not store.has(u)])
        search_bar = progress_bar(total=len(mine), desc=f"{self.workers.label()}dense: search shards", unit="shard",
                                  enabled=self.progress)
        try:
            for unit in mine:
                if not store.has(unit):
                    self._encode_unit(dataset, store, unit, encode_bar)
                if n_free and not partial_ok(search / part_name(unit), n_free):
                    self._search_unit(self._verified_shard(dataset, store, unit), store, unit, free_emb, k,
                                      search / part_name(unit))
                search_bar.update(1)
        finally:
            encode_bar.close()
            search_bar.close()
        self.workers.barrier()
        return _SearchPlan(store, search, queries, free_rows, query_emb, k)

    def _search_dir(self, store: ShardStore, queries: list[tuple[str, str]], free_rows: list[int], k: int) -> Path:
        """Where this query set's embeddings and per-shard partial top-k live (keyed by everything they hold)."""
        key = {"format": FORMAT, "corpus_key": signature_of(store.key), "k": k,
               "queries": hashlib.sha256(canonical_json([queries, free_rows]).encode("utf-8")).hexdigest()}
        path = store.root / "search" / signature_of(key)[:16]
        path.mkdir(parents=True, exist_ok=True)
        write_once(path / "key.json", (json.dumps(key, indent=2) + "\n").encode("utf-8"))
        return path

    def _query_embeddings(self, search: Path, texts: list[str], ids: list[str]) -> np.ndarray:
        """Query embeddings, computed once per query set: every worker (and a resumed run) scores with the same ones."""
        path = search / "queries.npy"
        if not path.exists():
            emb = np.ascontiguousarray(self.encoder.encode_queries(texts), dtype=np.float32)
            bad = np.flatnonzero(~np.isfinite(emb).all(axis=1)) if emb.ndim == 2 else []
            if len(bad):
                raise ScoreError(f"dense: the encoder's embedding of query {ids[int(bad[0])]!r} is not "
                                 f"finite ({len(bad)} of {len(texts)} queries; a zero vector normalised?)")
            link_once(written(path, lambda fh: np.save(fh, emb, allow_pickle=False)), path)
        try:
            emb = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            path.unlink(missing_ok=True)
            raise KalmEvalError(f"{path}: unreadable query embeddings ({err}); removed, run again") from None
        if emb.ndim != 2 or emb.shape[0] != len(texts) or not np.isfinite(emb).all():
            path.unlink(missing_ok=True)
            raise KalmEvalError(f"{path}: query embeddings of shape {emb.shape} do not match {len(texts)} queries; "
                                "removed, run again")
        return emb

    def _search_unit(self, shard: np.ndarray, store: ShardStore, unit: int, queries: np.ndarray, k: int,
                     out: Path) -> None:
        """Exact top-k with ties of every query against one shard, in float32 chunks; saved as the unit's partial."""
        import torch

        device = torch.device(self.device)
        start, _ = store.bounds(unit)
        counts, positions, scores = [], [], []
        for q0 in range(0, len(queries), QUERY_BLOCK):
            block = torch.from_numpy(queries[q0:q0 + QUERY_BLOCK]).to(device)
            best = TopK(len(block), k, device)
            for c0 in range(0, len(shard), SEARCH_CHUNK):
                chunk = store.to_float32(shard[c0:c0 + SEARCH_CHUNK]).to(device)
                best.add_scores(block @ chunk.T, start + c0)
            for row_scores, row_positions in best.rows():
                counts.append(len(row_positions))
                positions.append(row_positions)
                scores.append(row_scores)
        out.unlink(missing_ok=True)  # a damaged partial (it failed partial_ok)
        save_npz_once(out, counts=np.asarray(counts, np.int64),
                       positions=np.concatenate(positions) if positions else np.zeros(0, np.int64),
                       scores=np.concatenate(scores) if scores else np.zeros(0, np.float32))

    def _merge(self, store: ShardStore, search: Path, n_queries: int, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Fold every shard's partial top-k into one running top-k per query (ties kept)."""
        import torch

        device = torch.device("cpu")  # k-sized rows: no need for an accelerator
        best = TopK(n_queries, k, device)
        for unit in range(store.units):
            with np.load(search / part_name(unit), allow_pickle=False) as part:
                counts, positions, scores = part["counts"], part["positions"], part["scores"]
            width = max(int(counts.max(initial=0)), 1)
            vals = torch.full((n_queries, width), float("-inf"))
            pos = torch.full((n_queries, width), -1, dtype=torch.int64)
            rows = torch.repeat_interleave(torch.arange(n_queries), torch.from_numpy(counts))
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if n_queries else np.zeros(0, np.int64)
            cols = torch.arange(len(positions)) - torch.from_numpy(np.repeat(starts, counts))
            vals[rows, cols] = torch.from_numpy(scores)
            pos[rows, cols] = torch.from_numpy(positions)
            best.merge(vals, pos)
        return list(best.rows())


@dataclass(frozen=True)
class _SearchPlan:
    """What `_run_units` leaves for the merge: the shard store, the partials' folder and the query side."""

    store: ShardStore
    search: Path
    queries: list
    free_rows: np.ndarray
    query_emb: np.ndarray
    k: int
