"""A bm25s index built out of core, saved in bm25s' own format and reused memory-mapped.

bm25s' `BM25.index()` wants every document's tokens as Python lists and builds the sparse matrix from
`collections.Counter`s and three nnz-sized arrays plus an argsort: ~14.5 GiB for 5M passages. Here the corpus is
tokenised in batches with bm25s' own `Tokenizer` (same splitter, stopwords and stemmer as `bm25s.tokenize`), the
postings (token id, term frequency) are spilled to disk, and the CSC matrix is assembled bucket by bucket of
columns with bm25s' own idf / tf scoring functions applied in the same float order, so the saved arrays are the
ones `BM25.index()` would produce (up to a renumbering of the vocabulary, which no score depends on). The result is
written with the file names of `BM25.save()` and loaded with `BM25.load(..., mmap=True)`.

Memory: the tokenizer's vocabulary (a few Python dict entries per distinct word), two int arrays per document,
and one bucket of postings (`bucket_entries` x 12 bytes, plus its sort). Past that, a single machine is the wrong
tool: `MemoryGuard` stops the build with a pointer to a TREC run from pyserini's prebuilt Lucene indexes."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from kalm_eval.errors import ConfigError
from kalm_eval.progress import progress_bar
from kalm_eval.storage import read_json, sha256_file, temp_sibling, write_json_atomic

log = logging.getLogger(__name__)

FORMAT = 1  # of this builder's output; part of the cache key
TOKEN_PATTERN = r"(?u)\b\w\w+\b"  # bm25s.tokenize's default (scikit-learn's CountVectorizer pattern)
FULL_CHECK_BYTES = 256 << 20  # below this, every load checksums the index files in full
BUCKET_ENTRIES = 1 << 25  # postings per column bucket during assembly (~400 MB + its sort)
SPILL_READ_DOCS = 1 << 18
META = "kalm_index.json"
FILES = {"data": "data.csc.index.npy", "indices": "indices.csc.index.npy", "indptr": "indptr.csc.index.npy",
         "vocab": "vocab.index.json", "params": "params.index.json", "nonoccurrence": "nonoccurrence_array.index.npy"}
TREC_RUN_HINT = ("for corpora this large, run BM25 with Lucene elsewhere and pass the run in: e.g. pyserini's prebuilt "
                 "indexes (`python -m pyserini.search.lucene --index beir-v1.0.0-<dataset>.flat | miracl-v1.0-<lang> "
                 "--topics ... --bm25 --hits 1000 --output run.trec`), then `retriever=trec_run retriever.path=run.trec`")


class MemoryGuard:
    """Stops a build with a clear error before the kernel's OOM killer would stop it without one."""

    def __init__(self, what: str, min_available: int = 256 << 20):
        self.what = what
        self.min_available = min_available

    def check(self, detail: str = "") -> None:
        available = _mem_available()
        if available is not None and available < self.min_available:
            raise ConfigError(f"{self.what}: only {available >> 20} MiB of memory left{detail}; this exceeds what one "
                              f"machine can do here; {TREC_RUN_HINT}")


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def analyzer_key(stopwords: str | None, stemmer: str | None) -> dict[str, Any]:
    import Stemmer

    return {"lower": True, "token_pattern": TOKEN_PATTERN, "stopwords": stopwords, "stemmer": stemmer,
            "pystemmer": getattr(Stemmer, "__version__", None) or _dist_version("PyStemmer")}


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def make_stemmer(name: str | None):
    import Stemmer

    return Stemmer.Stemmer(name) if name else None


@dataclass
class _Tokenised:
    """Phase 1's result: per-document lengths and distinct-term counts, document frequencies, the vocabulary, and
    the (term, tf) postings spilled to disk in document order."""

    doc_len: np.ndarray  # int32 [n]
    n_unique: np.ndarray  # int32 [n]
    df: np.ndarray  # int64 [terms]
    vocab: dict[str, int]
    tok_spill: Path
    tf_spill: Path
    seconds: float

    @property
    def postings(self) -> int:
        return int(self.n_unique.sum())


@dataclass
class _TermWeights:
    """Phase 2's result: bm25s' per-term arithmetic and the column pointers of the term-major matrix."""

    avg_doc_len: float
    idf: np.ndarray
    nonoccurrence: np.ndarray | None  # bm25l / bm25+ only
    indptr: np.ndarray
    calculate_tfc: Any


def build_index(corpus, joiner: str, out: Path, *, method: str, k1: float, b: float, delta: float = 0.5,
                idf_method: str | None = None, stopwords: str | None, stemmer: str | None,
                batch_size: int = 4096, bucket_entries: int = BUCKET_ENTRIES, progress: bool = True) -> dict[str, Any]:
    """Write a bm25s index of `corpus` (a DocStore, read in file order) into the empty directory `out`, in four
    phases that each hold O(corpus) integers at most: tokenise (postings spilled to disk) -> term weights ->
    score postings into buckets of whole columns -> assemble the column-major sparse matrix."""
    import bm25s

    idf_method = idf_method or method
    started = time.perf_counter()
    guard = MemoryGuard(f"BM25 index of {len(corpus):,} passages ({corpus.source})")
    tokenised = _tokenise(corpus, joiner, out, stopwords, stemmer, batch_size, guard, progress, started)
    weights = _term_weights(tokenised, len(corpus), method, idf_method, k1, b, delta)
    bucket_paths, record = _score_into_buckets(tokenised, weights, out, k1, b, delta, bucket_entries, guard)
    _assemble_matrix(out, bucket_paths, record, tokenised.postings, weights, guard)
    vocab = tokenised.vocab
    if "" not in vocab:  # BM25.index(create_empty_token=True) adds it after the columns
        vocab[""] = max(vocab.values(), default=-1) + 1
    with open(out / FILES["vocab"], "w", encoding="utf-8") as fh:
        fh.write(json.dumps(vocab, ensure_ascii=False))
    n = len(corpus)
    params = {"k1": k1, "b": b, "delta": delta, "method": method, "idf_method": idf_method, "dtype": "float32",
              "int_dtype": "int32", "num_docs": n, "version": bm25s.__version__, "backend": "numpy"}
    with open(out / FILES["params"], "w", encoding="utf-8") as fh:
        json.dump(params, fh, indent=4)
    stats = {"docs": n, "terms": len(tokenised.df), "postings": tokenised.postings,
             "avg_doc_len": float(weights.avg_doc_len), "tokenise_s": round(tokenised.seconds, 3),
             "build_s": round(time.perf_counter() - started, 3)}
    log.info("bm25: index of %d postings built in %.0f s", stats["postings"], stats["build_s"])
    return stats


def _tokenise(corpus, joiner: str, out: Path, stopwords: str | None, stemmer: str | None, batch_size: int,
              guard: MemoryGuard, progress: bool, started: float) -> _Tokenised:
    """bm25s' tokeniser over the corpus in batches; (term, tf) postings per document go to two spill files."""
    from bm25s.tokenization import Tokenizer

    tokenizer = Tokenizer(lower=True, splitter=TOKEN_PATTERN, stopwords=stopwords, stemmer=make_stemmer(stemmer))
    n = len(corpus)
    # int32 halves these two n-sized arrays; the mean below is still an exact integer sum divided by n.
    doc_len = np.zeros(n, dtype=np.int32)
    n_unique = np.zeros(n, dtype=np.int32)
    df = np.zeros(1 << 16, dtype=np.int64)
    tok_spill = out / "postings.tok.tmp"
    tf_spill = out / "postings.tf.tmp"
    position = 0
    bar = progress_bar(total=n, desc="bm25 index: tokenise", unit="passage", enabled=progress)
    try:
        with open(tok_spill, "wb") as tok_fh, open(tf_spill, "wb") as tf_fh:
            for batch, (_ids, docs) in enumerate(corpus.iter_batches(batch_size)):
                # allow_empty=False: a document without tokens stays empty (length 0), as in bm25s.tokenize
                lists = list(tokenizer.streaming_tokenize([d.passage(joiner) for d in docs], update_vocab=True,
                                                          allow_empty=False))
                count = len(lists)
                lens = np.fromiter(map(len, lists), dtype=np.int64, count=count)
                flat = np.fromiter(chain.from_iterable(lists), dtype=np.int64, count=int(lens.sum()))
                del lists
                local = np.repeat(np.arange(count, dtype=np.int64), lens)
                pairs, tf = np.unique((local << 32) | flat, return_counts=True)  # sorted by (doc, token)
                tok = (pairs & 0xFFFFFFFF).astype(np.int32)
                doc_len[position:position + count] = lens
                n_unique[position:position + count] = np.bincount(pairs >> 32, minlength=count)
                vocab_size = len(tokenizer.get_vocab_dict())
                if vocab_size > len(df):
                    df = np.concatenate([df, np.zeros(max(vocab_size, 2 * len(df)) - len(df), dtype=np.int64)])
                df[:vocab_size] += np.bincount(tok, minlength=vocab_size)
                tok_fh.write(tok.tobytes())
                tf_fh.write(tf.astype(np.int32).tobytes())
                position += count
                bar.update(count)
                if batch % 64 == 0:
                    guard.check(f" after tokenising {position:,} passages ({vocab_size:,} distinct terms)")
                    if batch and batch % 1024 == 0:
                        log.info("bm25: tokenised %d / %d passages, %d terms, %.0f s", position, n, vocab_size,
                                 time.perf_counter() - started)
    except MemoryError:
        raise ConfigError(f"BM25 index of {n:,} passages ({corpus.source}) ran out of memory while tokenising; "
                          f"{TREC_RUN_HINT}") from None
    finally:
        bar.close()
    vocab = dict(tokenizer.get_vocab_dict())
    del tokenizer
    tokenised = _Tokenised(doc_len, n_unique, df[:len(vocab)], vocab, tok_spill, tf_spill,
                           time.perf_counter() - started)
    log.info("bm25: %d passages, %d terms, %d postings tokenised in %.0f s", n, len(vocab), tokenised.postings,
             tokenised.seconds)
    return tokenised


def _term_weights(tokenised: _Tokenised, n: int, method: str, idf_method: str, k1: float, b: float,
                  delta: float) -> _TermWeights:
    """Exactly bm25s' arithmetic: avg over an int64 array of lengths; idf per term from a Python int df; tf scores
    as float64 from float32 term frequencies, stored as float32."""
    from bm25s.scoring import _select_idf_scorer, _select_tfc_scorer

    dtype = np.float32  # bm25s' default
    n_vocab = len(tokenised.df)
    avg_doc_len = tokenised.doc_len.mean()
    compute_idf = _select_idf_scorer(idf_method)
    calculate_tfc = _select_tfc_scorer(method)
    idf = np.zeros(n_vocab, dtype=dtype)
    nonoccurrence = np.zeros(n_vocab, dtype=dtype) if method in ("bm25l", "bm25+") else None
    for token_id, count in enumerate(tokenised.df.tolist()):
        if count:
            idf[token_id] = compute_idf(count, N=n)
            if nonoccurrence is not None:
                nonoccurrence[token_id] = compute_idf(count, N=n) * calculate_tfc(
                    tf_array=0, l_d=avg_doc_len, l_avg=avg_doc_len, k1=k1, b=b, delta=delta)
    indptr = np.zeros(n_vocab + 1, dtype=np.int64)
    np.cumsum(tokenised.df, out=indptr[1:])
    return _TermWeights(avg_doc_len, idf, nonoccurrence, indptr, calculate_tfc)


def _score_into_buckets(tokenised: _Tokenised, weights: _TermWeights, out: Path, k1: float, b: float, delta: float,
                        bucket_entries: int, guard: MemoryGuard) -> tuple[list[Path], np.dtype]:
    """Score every posting from the spill files and append it to the bucket of its column. Buckets hold whole
    columns, each at most `bucket_entries` postings (or one column, if that is larger)."""
    dtype = np.float32
    n, n_vocab, indptr = len(tokenised.doc_len), len(tokenised.df), weights.indptr
    starts = [0]
    while starts[-1] < n_vocab:
        limit = indptr[starts[-1]] + bucket_entries
        nxt = int(np.searchsorted(indptr, limit, side="right")) - 1
        starts.append(min(n_vocab, max(nxt, starts[-1] + 1)))
    bucket_starts = np.asarray(starts[:-1], dtype=np.int64)
    record = np.dtype([("tok", np.int32), ("doc", np.int32), ("score", dtype)])
    bucket_paths = [out / f"bucket-{i:04d}.tmp" for i in range(len(bucket_starts))]
    handles = [open(p, "wb") for p in bucket_paths]
    try:
        with open(tokenised.tok_spill, "rb") as tok_fh, open(tokenised.tf_spill, "rb") as tf_fh:
            for d0 in range(0, n, SPILL_READ_DOCS):
                d1 = min(n, d0 + SPILL_READ_DOCS)
                entries = int(tokenised.n_unique[d0:d1].sum())
                tok = np.fromfile(tok_fh, dtype=np.int32, count=entries)
                tf = np.fromfile(tf_fh, dtype=np.int32, count=entries).astype(dtype)
                doc = np.repeat(np.arange(d0, d1, dtype=np.int64), tokenised.n_unique[d0:d1])
                tfc = weights.calculate_tfc(tf_array=tf, l_d=tokenised.doc_len[doc], l_avg=weights.avg_doc_len,
                                            k1=k1, b=b, delta=delta)
                scores = weights.idf[tok] * tfc
                if weights.nonoccurrence is not None:
                    scores -= weights.nonoccurrence[tok]
                rows = np.empty(entries, dtype=record)
                rows["tok"], rows["doc"], rows["score"] = tok, doc, scores
                which = np.searchsorted(bucket_starts, tok, side="right") - 1
                by_bucket = np.argsort(which, kind="stable")  # keeps doc order inside each bucket
                cuts = np.searchsorted(which[by_bucket], np.arange(len(bucket_starts) + 1))
                rows = rows[by_bucket]
                for i in range(len(bucket_starts)):
                    if cuts[i + 1] > cuts[i]:
                        handles[i].write(rows[cuts[i]:cuts[i + 1]].tobytes())
                del rows, tok, tf, doc, tfc, scores, which, by_bucket
                guard.check(" while scoring postings")
    finally:
        for handle in handles:
            handle.close()
    tokenised.tok_spill.unlink()
    tokenised.tf_spill.unlink()
    return bucket_paths, record


def _assemble_matrix(out: Path, bucket_paths: list[Path], record: np.dtype, postings: int, weights: _TermWeights,
                     guard: MemoryGuard) -> None:
    """bm25s' saved CSC arrays: scores and document ids column by column, documents ascending within a column."""
    dtype, int_dtype = np.float32, np.int32  # bm25s' defaults
    with open(out / FILES["data"], "wb") as data_fh, open(out / FILES["indices"], "wb") as idx_fh:
        _npy_header(data_fh, dtype, postings)
        _npy_header(idx_fh, int_dtype, postings)
        for path in bucket_paths:
            rows = np.fromfile(path, dtype=record)
            order = np.argsort(rows["tok"], kind="stable")  # column-major, documents ascending within a column
            data_fh.write(np.ascontiguousarray(rows["score"][order]).tobytes())
            idx_fh.write(np.ascontiguousarray(rows["doc"][order]).astype(int_dtype).tobytes())
            del rows, order
            path.unlink()
            guard.check(" while assembling the sparse matrix")
    np.save(out / FILES["indptr"], weights.indptr, allow_pickle=False)
    if weights.nonoccurrence is not None:
        np.save(out / FILES["nonoccurrence"], weights.nonoccurrence, allow_pickle=False)


def _npy_header(fh, dtype, count: int) -> None:
    np.lib.format.write_array_header_1_0(fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                              "fortran_order": False, "shape": (count,)})


def index_files(directory: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for name in FILES.values():
        path = directory / name
        if path.exists():
            out[name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return out


def check_index(directory: Path, key: dict[str, Any], docs: int) -> str | None:
    """None if `directory` holds a complete index for `key` over `docs` documents, else what is wrong."""
    try:
        meta = read_json(directory / META)
    except FileNotFoundError:
        return "absent"
    except (OSError, ValueError) as err:
        return f"unreadable {META} ({err})"
    if not isinstance(meta, dict) or meta.get("key") != key:
        return f"{META} was written for another key"
    if meta.get("stats", {}).get("docs") != docs:
        return f"built over {meta.get('stats', {}).get('docs')} documents, the corpus has {docs}"
    files = meta.get("files") or {}
    total = 0
    for name, info in files.items():
        path = directory / name
        if not path.exists() or path.stat().st_size != info.get("bytes"):
            return f"{name} is missing or has the wrong size"
        total += info["bytes"]
    if FILES["data"] not in files or FILES["vocab"] not in files:
        return "index files are missing"
    if total <= FULL_CHECK_BYTES:
        for name, info in files.items():
            if sha256_file(directory / name) != info.get("sha256"):
                return f"{name} does not match its sha256"
    return None


def publish(staged: Path, target: Path, is_complete) -> None:
    """Rename a finished index directory into place. If `target` exists (a concurrent build finished first, or a
    damaged leftover), keep it when `is_complete(target)`, else move it aside and put ours there."""
    try:
        os.replace(staged, target)
        return
    except OSError:
        pass
    if is_complete(target):
        return
    doomed = temp_sibling(target, "old")
    try:
        os.replace(target, doomed)
    except OSError:
        pass
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(staged, target)


def write_meta(directory: Path, key: dict[str, Any], stats: dict[str, Any]) -> None:
    write_json_atomic(directory / META, {"key": key, "stats": stats, "files": index_files(directory)})
