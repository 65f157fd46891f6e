"""BM25 first stage with bm25s, set up as MTEB's bm25s baseline (lucene, k1=1.5, b=0.75, English stopwords, PyStemmer).

The index is built once per (corpus, joiner, analyzer, BM25 parameters, bm25s version) out of core
(kalm_eval.retrieval.bm25_index), saved under `<cache_dir>/bm25/<key>/` in bm25s' format and reused memory-mapped;
the numbers equal those of `bm25s.BM25().index(bm25s.tokenize(texts))`."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kalm_eval.data import Dataset
from kalm_eval.parallel import Workers
from kalm_eval.progress import progress_bar
from kalm_eval.records import RankedList
from kalm_eval.retrieval import bm25_index
from kalm_eval.retrieval.runfile import rank
from kalm_eval.storage import named_writes, signature_of, temp_sibling

log = logging.getLogger(__name__)

# bm25s' own top-k (np.argpartition over every score) degrades to ~1 s per query on 5M passages because most
# scores are 0 (introselect on equal keys), and it picks arbitrarily among documents tied at the cut. Selecting
# among the non-zero scores and keeping every tie at the k-th score is ~25x faster and leaves the cut to the run
# rule (score desc, then doc id desc), as trec_eval would order the full list.
TOP_K_RULE = "exact over non-zero scores, ties at the k-th score kept"
LARGE_CORPUS = 10_000_000  # passages; above this the build logs where a Lucene run is the better tool


@dataclass(frozen=True)
class BM25Settings:
    method: str = "lucene"
    k1: float = 1.5
    b: float = 0.75
    stopwords: str | None = "en"  # a bm25s stopword list; None = no stopword removal (languages bm25s has none for)
    stemmer: str | None = "english"  # a PyStemmer algorithm; None = no stemming


class BM25Retriever:
    """`cache_dir` holds the saved index (default: the corpus DocStore's cache). `workers`: under torchrun every rank
    calls `prepare` (rank 0 builds the index while the others wait at a barrier), then rank 0 alone `retrieve`s.
    `progress` turns the indexing / search bars on or off (kalm_eval.progress)."""

    def __init__(self, settings: BM25Settings, cache_dir: Path | None = None, workers: Workers | None = None,
                 progress: bool = True, batch_size: int = 4096):
        self.settings = settings
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.workers = workers
        self.progress = progress
        self.batch_size = batch_size
        self.index_path: Path | None = None  # where the index was found or built
        self.index_built = False  # whether this retriever had to build it
        self._loaded: tuple[str, Any] | None = None  # (key signature, memory-mapped bm25s.BM25)

    def identity(self) -> dict:
        import bm25s

        return {"kind": "bm25", "library": f"bm25s=={bm25s.__version__}", **asdict(self.settings),
                "top_k": TOP_K_RULE}

    def index_key(self, dataset: Dataset) -> dict[str, Any]:
        """Everything the saved index depends on."""
        import bm25s

        s = self.settings
        return {"format": bm25_index.FORMAT, "corpus_sha256": dataset.corpus.sha256, "docs": len(dataset.corpus),
                "joiner": dataset.joiner, "analyzer": bm25_index.analyzer_key(s.stopwords, s.stemmer),
                "bm25": {"method": s.method, "k1": s.k1, "b": s.b, "delta": 0.5, "idf_method": s.method,
                         "dtype": "float32", "int_dtype": "int32"},
                "bm25s": bm25s.__version__}

    def prepare(self, dataset: Dataset, depth: int) -> None:
        """The cooperative part: build (rank 0) or wait for (other ranks) the saved index."""
        self.load_index(dataset)

    def load_index(self, dataset: Dataset):
        """The memory-mapped bm25s index of `dataset`'s corpus, built first if absent or damaged."""
        import bm25s

        key = self.index_key(dataset)
        signature = signature_of(key)
        if self._loaded is not None and self._loaded[0] == signature:
            return self._loaded[1]
        root = (self.cache_dir or dataset.corpus.cache_dir) / "bm25"
        target = root / signature[:16]
        self.index_path = target
        workers = self.workers or Workers()
        if workers.distributed and not workers.is_main:
            workers.barrier()  # rank 0 builds
        for attempt in range(2):
            problem = bm25_index.check_index(target, key, len(dataset.corpus))
            if problem is not None and (workers.is_main or not workers.distributed):
                if problem != "absent":
                    log.warning("bm25 index %s: %s; discarding and rebuilding it", target, problem)
                self._build(dataset, key, target)
                problem = bm25_index.check_index(target, key, len(dataset.corpus))
            if problem is None:
                index = bm25s.BM25.load(target, mmap=True, show_progress=False)
                trouble = _inconsistency(index, len(dataset.corpus))
                if trouble is None:
                    break
                problem = trouble
                log.warning("bm25 index %s: %s; discarding and rebuilding it", target, problem)
                shutil.rmtree(target, ignore_errors=True)
            if attempt == 1 or (workers.distributed and not workers.is_main):
                raise RuntimeError(f"bm25 index {target} unusable after a rebuild: {problem}")
        if workers.distributed and workers.is_main:
            workers.barrier()
        self._loaded = (signature, index)
        return index

    def _build(self, dataset: Dataset, key: dict[str, Any], target: Path) -> None:
        s = self.settings
        staged = temp_sibling(target, "build")
        log.info("building bm25 index of %s (%d passages) in %s", dataset.name, len(dataset.corpus), target)
        if len(dataset.corpus) > LARGE_CORPUS:
            # Measured: 5M synthetic passages (2.9M terms) peak at 2.6 GB and ~11 CPU-minutes; the tokenizer's
            # vocabulary grows with distinct terms, and Python tokenisation is single-threaded.
            log.warning("bm25 over %d passages on one machine: expect hours of single-core tokenisation and several "
                        "GB of memory; %s", len(dataset.corpus), bm25_index.TREC_RUN_HINT)
        try:
            with named_writes(target):  # no space / read-only: one line naming the index; the staged build is removed
                target.parent.mkdir(parents=True, exist_ok=True)
                staged.mkdir()
                stats = bm25_index.build_index(dataset.corpus, dataset.joiner, staged, method=s.method, k1=s.k1,
                                               b=s.b, stopwords=s.stopwords, stemmer=s.stemmer,
                                               batch_size=self.batch_size, progress=self.progress)
                bm25_index.write_meta(staged, key, stats)
                bm25_index.publish(staged, target,
                                   lambda t: bm25_index.check_index(t, key, len(dataset.corpus)) is None)
            self.index_built = True
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    def retrieve(self, dataset: Dataset, depth: int) -> Iterator[RankedList]:
        import bm25s

        corpus = dataset.corpus
        index = self.load_index(dataset)
        stemmer = bm25_index.make_stemmer(self.settings.stemmer)
        queries = list(dataset.queries.values())
        query_tokens = bm25s.tokenize(
            [q.text for q in queries], stopwords=self.settings.stopwords, stemmer=stemmer, show_progress=False, return_ids=False
        )
        # One extra hit so dropping the query's own id (ArguAna, Quora) still leaves `depth` candidates.
        k = min(depth + int(dataset.quirks.ignore_identical_ids), len(corpus))
        bar = progress_bar(total=len(queries), desc="bm25 search", unit="query", enabled=self.progress)
        for i, query in enumerate(queries):
            tokens = query_tokens[i]
            every = index.get_scores(tokens) if tokens else np.zeros(len(corpus), np.float32)
            allowed = dataset.candidates_for(query.id)
            if allowed is None:
                rows = top_k_with_ties(every, k)
                scored = zip(corpus.ids_at(rows.tolist()), every[rows].tolist())
            else:
                # LMEB scene: score only this query's candidates against the full index (corpus-level IDF), which
                # ranks exactly like ranking the whole corpus and then filtering to the scene.
                scored = zip(allowed, every[corpus.positions(allowed)].tolist())
            ranked = rank(query.id, scored, depth, ignore_identical_ids=dataset.quirks.ignore_identical_ids,
                          source="bm25")
            bar.update(1)
            yield ranked
        bar.close()


def top_k_with_ties(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k best scores plus every score tied with the k-th (see TOP_K_RULE), unordered.

    With fewer than k non-zero scores the zeros are tied at the cut and may be millions; there, as bm25s does,
    np.argpartition over all scores picks which of them fill the list."""
    n = len(scores)
    if k >= n:
        return np.arange(n)
    nonzero = np.flatnonzero(scores)
    values = scores[nonzero]
    if len(nonzero) >= k and not (values < 0).any():
        kth = np.partition(values, len(values) - k)[len(values) - k]
        return nonzero[values >= kth]
    return np.argpartition(scores, -k)[-k:]


def _inconsistency(index, docs: int) -> str | None:
    """Cheap structural checks of a loaded index (its files' sizes were checked against the recorded ones)."""
    scores = index.scores
    indptr = scores["indptr"]
    if scores.get("num_docs") != docs:
        return f"num_docs {scores.get('num_docs')} != {docs}"
    if len(scores["data"]) != len(scores["indices"]) or int(indptr[-1]) != len(scores["data"]) or int(indptr[0]) != 0:
        return "indptr does not span data/indices"
    columns = len(indptr) - 1
    if any(v > columns for v in (max(index.vocab_dict.values(), default=0),)):
        return "vocabulary ids outside the matrix"
    return None
