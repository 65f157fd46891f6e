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
whatever the shard size. LMEB scene queries score only their candidates, reading those rows by position."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kalm_eval.data import Dataset
from kalm_eval.errors import ConfigError, KalmEvalError, ScoreError
from kalm_eval.knobs import knob
from kalm_eval.parallel import Workers
from kalm_eval.progress import progress_bar
from kalm_eval.records import RankedList
from kalm_eval.retrieval.runfile import rank
from kalm_eval.storage import (atomic_open, canonical_json, named_writes, read_json, sha256_file, signature_of,
                               temp_sibling)

log = logging.getLogger(__name__)

FORMAT = 1  # of the shard / partial files; part of every cache key
STORE_DTYPES = ("auto", "float16", "bfloat16", "float32")
SEARCH_CHUNK = 16384  # corpus rows per float32 matmul
QUERY_BLOCK = 1024  # queries per matmul


@dataclass(frozen=True)
class DenseSettings:
    model: str  # HF id or local dir; "random:<dim>" = deterministic random vectors (benchmarks of the search path)
    revision: str | None = None
    max_seq_length: int | None = 256
    # How a query is presented to the encoder; KaLM-Embedding-V2.5 uses "Instruct: {instruction}\nQuery:{query}".
    query_template: str = "{query}"
    instruction: str = ""
    normalize: bool = True
    dtype: str = "float32"
    # Corpus embeddings on disk: "auto" = the model's dtype (lossless: bfloat16 shards for the paper's bfloat16
    # KaLM-Embedding, float32 for float32 models), or float16 / bfloat16 / float32 (float16 halves a float32
    # model's shards and moves scores by ~1e-4). Keyed.
    store_dtype: str = knob("auto", choices=STORE_DTYPES)
    # Logged, not keyed: they don't change the numbers.
    batch_size: int = knob(64, minimum=1, logged=True)
    device: str = knob("auto", logged=True)
    # passages per embedding shard (a unit of work): part of the shard cache key only, the search is exact whatever it is
    shard_docs: int = knob(65536, minimum=1, logged=True)

    def hub_source(self) -> tuple[str, str | None] | None:
        """(hub id, revision) when the encoder comes from the hub; None for a local folder or random vectors."""
        if self.model.startswith("random:") or Path(self.model).expanduser().is_dir():
            return None
        return self.model, self.revision


class ShardDamaged(KalmEvalError):
    """An embedding shard failed its checksum or shape check (it has been removed)."""


class UnitsPending(KalmEvalError):
    """This worker finished its share, but other workers' units are still missing (job arrays have no barrier):
    the worker that finds every unit present builds the run."""


class Encoder(Protocol):
    dim: int

    def identity(self) -> dict[str, Any]: ...

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...


class SentenceTransformerEncoder:
    def __init__(self, settings: DenseSettings, device: str):
        self.settings = settings
        self.device = device
        self._model = None

    @property
    def model(self):
        if self._model is None:
            import torch
            from sentence_transformers import SentenceTransformer

            s = self.settings
            revision = None if Path(s.model).is_dir() else s.revision  # a local dir has no revisions
            self._model = SentenceTransformer(s.model, revision=revision, device=self.device,
                                              model_kwargs={"dtype": getattr(torch, s.dtype)})
            if s.max_seq_length:
                self._model.max_seq_length = s.max_seq_length
        return self._model

    @property
    def dim(self) -> int:
        model = self.model
        getter = getattr(model, "get_embedding_dimension", None) or getattr(model, "get_sentence_embedding_dimension", None)
        if getter is not None and getter() is not None:
            return int(getter())
        return int(self._encode(["dimension probe"], progress=False).shape[1])

    def identity(self) -> dict[str, Any]:
        s = self.settings
        local = Path(s.model)
        weights = None
        if local.is_dir():
            files = sorted(local.glob("*.safetensors")) or sorted(local.glob("*.bin"))
            weights = {f.name: sha256_file(f) for f in files}
        return {"model": s.model if not local.is_dir() else str(local.resolve()),
                "revision": None if local.is_dir() else s.revision,
                "weights_sha256": weights}

    def _encode(self, texts: Sequence[str], progress: bool) -> np.ndarray:
        emb = self.model.encode(list(texts), batch_size=self.settings.batch_size, convert_to_tensor=True,
                                normalize_embeddings=self.settings.normalize, show_progress_bar=progress)
        return emb.float().cpu().numpy()

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, progress=False)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, progress=False)


class RandomEncoder:
    """Deterministic random unit vectors keyed by the text: the shard/search path at any scale without a model."""

    def __init__(self, dim: int, seed: int = 0, normalize: bool = True):
        if dim < 1:
            raise ConfigError(f"retriever.model=random:<dim> needs dim >= 1, got {dim}")
        self.dim = dim
        self.seed = seed
        self.normalize = normalize

    def identity(self) -> dict[str, Any]:
        return {"model": f"random:{self.dim}", "seed": self.seed, "note": "random vectors, for benchmarks only"}

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        """Uniform(-1, 1) components from a vectorised splitmix64 of (blake2b(text), component index): ~1 us a text."""
        key = self.seed.to_bytes(8, "little")
        seeds = np.fromiter((int.from_bytes(hashlib.blake2b(t.encode("utf-8"), digest_size=8, key=key).digest(), "little")
                             for t in texts), dtype=np.uint64, count=len(texts))
        z = seeds[:, None] + np.arange(1, self.dim + 1, dtype=np.uint64)[None, :] * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
        out = ((z >> np.uint64(40)).astype(np.float32) / np.float32(1 << 23) - np.float32(1.0)).reshape(len(texts), self.dim)
        if self.normalize and len(out):
            out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts)


def resolve_store_dtype(settings: DenseSettings) -> str:
    if settings.store_dtype != "auto":
        return settings.store_dtype
    return settings.dtype if settings.dtype in ("float16", "bfloat16") else "float32"


def make_encoder(settings: DenseSettings, device: str) -> Encoder:
    if settings.model.startswith("random:"):
        try:
            dim = int(settings.model.split(":", 1)[1])
        except ValueError:
            raise ConfigError(f"retriever.model={settings.model!r}: expected random:<dim>") from None
        return RandomEncoder(dim, normalize=settings.normalize)
    return SentenceTransformerEncoder(settings, device)


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
            return store.has(unit) and (not n_free or _partial_ok(search / _part_name(unit), n_free))

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
                if n_free and not _partial_ok(search / _part_name(unit), n_free):
                    self._search_unit(self._verified_shard(dataset, store, unit), store, unit, free_emb, k,
                                      search / _part_name(unit))
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
        _write_once(path / "key.json", (json.dumps(key, indent=2) + "\n").encode("utf-8"))
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
            _link_once(_written(path, lambda fh: np.save(fh, emb, allow_pickle=False)), path)
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
        out.unlink(missing_ok=True)  # a damaged partial (it failed _partial_ok)
        _save_npz_once(out, counts=np.asarray(counts, np.int64),
                       positions=np.concatenate(positions) if positions else np.zeros(0, np.int64),
                       scores=np.concatenate(scores) if scores else np.zeros(0, np.float32))

    def _merge(self, store: ShardStore, search: Path, n_queries: int, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Fold every shard's partial top-k into one running top-k per query (ties kept)."""
        import torch

        device = torch.device("cpu")  # k-sized rows: no need for an accelerator
        best = TopK(n_queries, k, device)
        for unit in range(store.units):
            with np.load(search / _part_name(unit), allow_pickle=False) as part:
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


class TopK:
    """A running exact top-k per query that keeps ties: after any sequence of adds, each row holds every candidate
    whose score is >= the row's k-th best score so far (padded with -inf / position -1)."""

    def __init__(self, n_rows: int, k: int, device):
        import torch

        self.k = k
        self.values = torch.full((n_rows, 0), float("-inf"), device=device)
        self.positions = torch.full((n_rows, 0), -1, dtype=torch.int64, device=device)

    def add_scores(self, scores, offset: int) -> None:
        """Add a block of scores (rows x columns) for corpus positions offset .. offset+columns-1."""
        import torch

        width = min(self.k, scores.shape[1])
        top = torch.topk(scores, width, dim=1)
        if width == scores.shape[1]:
            values, columns = top.values, top.indices
        else:
            kth = top.values[:, -1:]
            tied = int((scores >= kth).sum(dim=1).max())
            if tied > width:  # some row has ties at its k-th score that topk cut: take them all
                top = torch.topk(scores, tied, dim=1)
            values, columns = top.values, top.indices
        self.merge(values, columns + offset)

    def merge(self, values, positions) -> None:
        import torch

        values = torch.cat([self.values, values], dim=1)
        positions = torch.cat([self.positions, positions], dim=1)
        values = torch.where(positions >= 0, values, torch.full_like(values, float("-inf")))
        if values.shape[1] > self.k:
            kth = torch.topk(values, self.k, dim=1).values[:, -1:]
            keep = (values >= kth) & (positions >= 0)
            width = int(keep.sum(dim=1).max())
            order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, :width]
            values = torch.gather(values, 1, order)
            positions = torch.gather(positions, 1, order)
            dropped = ~torch.gather(keep, 1, order)
            values = values.masked_fill(dropped, float("-inf"))
            positions = positions.masked_fill(dropped, -1)
        self.values, self.positions = values, positions

    def rows(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(scores, positions) of each row's kept candidates."""
        values = self.values.cpu().numpy()
        positions = self.positions.cpu().numpy()
        for row_values, row_positions in zip(values, positions):
            keep = row_positions >= 0
            yield row_values[keep].astype(np.float32), row_positions[keep].astype(np.int64)


class ShardStore:
    """Embedding shards of one corpus under one key: shard-<u>.npy + shard-<u>.json (range, shape, sha256)."""

    def __init__(self, root: Path, key: dict[str, Any], docs: int, shard_docs: int, store_dtype: str):
        self.root = root
        self.key = key
        self.docs = docs
        self.shard_docs = shard_docs
        self.store_dtype = store_dtype
        self.units = (docs + shard_docs - 1) // shard_docs
        self._verified: set[int] = set()

    def bounds(self, unit: int) -> tuple[int, int]:
        return unit * self.shard_docs, min(self.docs, (unit + 1) * self.shard_docs)

    def path(self, unit: int) -> Path:
        return self.root / f"shard-{unit:06d}.npy"

    def write_key(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        _write_once(self.root / "key.json", (json.dumps(self.key, indent=2, default=str) + "\n").encode("utf-8"))

    # storage dtype <-> float32
    def to_storage(self, emb: np.ndarray, ids: Sequence[str] | None = None) -> np.ndarray:
        """float32 embeddings in the storage dtype; ScoreError naming the first passage whose vector is not finite
        (a zero vector normalised gives NaN) or overflows the storage dtype (float16 above 65504)."""
        emb = np.asarray(emb, dtype=np.float32)
        self._check_finite(emb, ids, "is not finite (a zero vector normalised?)")
        if self.store_dtype == "bfloat16":
            import torch

            return torch.from_numpy(np.ascontiguousarray(emb)).to(torch.bfloat16).view(torch.int16).numpy()
        with np.errstate(over="ignore"):  # checked right below, naming the passage
            stored = emb.astype(self.store_dtype)
        self._check_finite(stored, ids, f"overflows {self.store_dtype} storage (retriever.store_dtype=float32)")
        return stored

    def _check_finite(self, emb: np.ndarray, ids: Sequence[str] | None, what: str) -> None:
        finite = np.isfinite(emb).all(axis=1) if emb.ndim == 2 else np.isfinite(emb).all(keepdims=True)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            name = repr(ids[int(bad[0])]) if ids is not None and emb.ndim == 2 else "?"
            raise ScoreError(f"{self.root}: the encoder's embedding of passage {name} {what}; {len(bad)} of "
                             f"{len(finite)} in this batch")

    def to_float32(self, stored: np.ndarray):
        import torch

        array = np.array(stored, copy=True)  # a private copy: mmap'd pages are read-only
        if self.store_dtype == "bfloat16":
            return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16).float()
        return torch.from_numpy(array).float()

    def _npy_dtype(self) -> np.dtype:
        return np.dtype(np.int16 if self.store_dtype == "bfloat16" else self.store_dtype)

    def save(self, unit: int, embeddings: np.ndarray, *, first_id: str, last_id: str) -> None:
        start, stop = self.bounds(unit)
        if embeddings.shape[0] != stop - start or embeddings.dtype != self._npy_dtype():
            raise KalmEvalError(f"{self.path(unit)}: {embeddings.shape} {embeddings.dtype} for {stop - start} passages")
        with atomic_open(self.path(unit), "wb", compress=False) as fh:
            np.save(fh, embeddings, allow_pickle=False)
        self._write_sidecar(unit, embeddings.shape, first_id, last_id)

    def _write_sidecar(self, unit: int, shape, first_id: str, last_id: str) -> None:
        start, stop = self.bounds(unit)
        path = self.path(unit)
        sidecar = {"key": signature_of(self.key), "unit": unit, "start": start, "stop": stop, "shape": list(shape),
                   "store_dtype": self.store_dtype, "bytes": path.stat().st_size, "sha256": sha256_file(path),
                   "first_id": first_id, "last_id": last_id}
        with atomic_open(path.with_suffix(".json")) as fh:
            fh.write(json.dumps(sidecar, indent=2) + "\n")

    def has(self, unit: int) -> bool:
        """The shard is complete: its sidecar matches the key, range and file size (a kill -9 between the shard
        and its sidecar leaves a complete .npy without one, which counts as absent and is recomputed)."""
        path = self.path(unit)
        try:
            meta = read_json(path.with_suffix(".json"))
            start, stop = self.bounds(unit)
            return (meta.get("key") == signature_of(self.key) and meta.get("start") == start
                    and meta.get("stop") == stop and meta.get("bytes") == path.stat().st_size
                    and meta.get("store_dtype") == self.store_dtype)
        except (OSError, ValueError, AttributeError):
            return False

    def load(self, unit: int, *, verify: bool = False) -> np.ndarray:
        """The shard memory-mapped; `verify` checks its sha256 (once per process)."""
        path = self.path(unit)
        meta = read_json(path.with_suffix(".json"))
        if verify and unit not in self._verified:
            if sha256_file(path) != meta["sha256"]:
                self.discard(unit, "does not match its sha256")
                raise ShardDamaged(f"{path}: embedding shard damaged (sha256 mismatch); removed, run again to "
                                    "recompute it")
            self._verified.add(unit)
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        start, stop = self.bounds(unit)
        if array.shape[0] != stop - start or list(array.shape) != meta["shape"] or array.dtype != self._npy_dtype():
            self.discard(unit, f"has shape {array.shape} {array.dtype}")
            raise ShardDamaged(f"{path}: embedding shard has the wrong shape; removed, run again to recompute it")
        return array

    def discard(self, unit: int, reason: str) -> None:
        log.warning("embedding shard %s %s; removing it", self.path(unit), reason)
        self.path(unit).with_suffix(".json").unlink(missing_ok=True)
        self.path(unit).unlink(missing_ok=True)

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """float32 embeddings of arbitrary corpus positions (read by position from the memory-mapped shards)."""
        positions = np.asarray(positions, dtype=np.int64)
        out = np.zeros((len(positions), 0), np.float32)
        if not len(positions):
            return out
        units = positions // self.shard_docs
        parts: dict[int, np.ndarray] = {}
        for unit in np.unique(units).tolist():
            shard = self.load(int(unit))
            local = positions[units == unit] - unit * self.shard_docs
            parts[unit] = self.to_float32(shard[local]).numpy()
        dim = next(iter(parts.values())).shape[1]
        out = np.empty((len(positions), dim), np.float32)
        for unit, values in parts.items():
            out[units == unit] = values
        return out


# ---------------------------------------------------------------------------------------------------------------
# Files written once: the first writer wins (hard link onto the final name), so every worker and every resumed
# run reads the same bytes even when two computed the same unit.


def _link_once(tmp: Path, target: Path) -> None:
    try:
        os.link(tmp, target)
    except FileExistsError:
        pass
    except OSError:  # a filesystem without hard links: last writer wins, still atomic
        os.replace(tmp, target)
        return
    tmp.unlink(missing_ok=True)


def _write_once(target: Path, payload: bytes) -> None:
    if target.exists():
        return
    _link_once(_written(target, lambda fh: fh.write(payload)), target)


def _part_name(unit: int) -> str:
    return f"part-{unit:06d}.npz"


def _save_npz_once(target: Path, **arrays: np.ndarray) -> None:
    _link_once(_written(target, lambda fh: np.savez(fh, **arrays)), target)


def _written(target: Path, write) -> Path:
    """A temp sibling of `target` holding what `write(file)` wrote; on a failed write (no space ...) it is removed
    and the error names `target` (kalm_eval.storage.named_writes)."""
    tmp = temp_sibling(target)
    try:
        with named_writes(target), open(tmp, "wb") as fh:
            write(fh)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _partial_ok(path: Path, n_queries: int) -> bool:
    try:
        with np.load(path, allow_pickle=False) as part:
            counts = part["counts"]
            return (counts.shape == (n_queries,) and int(counts.sum()) == part["positions"].shape[0]
                    == part["scores"].shape[0])
    except (OSError, ValueError, KeyError, EOFError):
        return False
    except Exception:  # zipfile.BadZipFile and friends: a damaged partial is simply recomputed
        return False
