"""BM25 first stage with bm25s, set up as MTEB's bm25s baseline (lucene, k1=1.5, b=0.75, English stopwords, PyStemmer)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from kalm_eval.data import Dataset
from kalm_eval.records import RankedList
from kalm_eval.retrieval.runfile import rank


@dataclass(frozen=True)
class BM25Settings:
    method: str = "lucene"
    k1: float = 1.5
    b: float = 0.75
    stopwords: str = "en"
    stemmer: str | None = "english"


class BM25Retriever:
    def __init__(self, settings: BM25Settings):
        self.settings = settings

    def identity(self) -> dict:
        import bm25s

        return {"kind": "bm25", "library": f"bm25s=={bm25s.__version__}", **asdict(self.settings)}

    def retrieve(self, dataset: Dataset, depth: int) -> Iterator[RankedList]:
        import bm25s
        import Stemmer

        stemmer = Stemmer.Stemmer(self.settings.stemmer) if self.settings.stemmer else None
        doc_ids: list[str] = []
        texts: list[str] = []
        for doc in dataset.corpus:
            doc_ids.append(doc.id)
            texts.append(doc.passage(dataset.joiner))
        tokens = bm25s.tokenize(texts, stopwords=self.settings.stopwords, stemmer=stemmer, show_progress=False)
        del texts
        index = bm25s.BM25(method=self.settings.method, k1=self.settings.k1, b=self.settings.b)
        index.index(tokens, show_progress=False)

        queries = list(dataset.queries.values())
        query_tokens = bm25s.tokenize(
            [q.text for q in queries], stopwords=self.settings.stopwords, stemmer=stemmer, show_progress=False, return_ids=False
        )
        # One extra hit so dropping the query's own id (ArguAna, Quora) still leaves `depth` candidates.
        k = min(depth + int(dataset.quirks.ignore_identical_ids), len(doc_ids))
        free = [i for i, q in enumerate(queries) if dataset.candidates_for(q.id) is None]
        hits = {}
        if free:
            results, scores = index.retrieve([query_tokens[i] for i in free], k=k, show_progress=False, n_threads=1)
            hits = dict(zip(free, zip(results, scores)))
        position = {doc_id: i for i, doc_id in enumerate(doc_ids)} if len(free) < len(queries) else {}
        for i, query in enumerate(queries):
            if i in hits:
                rows, row_scores = hits[i]
                scored = zip([doc_ids[j] for j in rows.tolist()], row_scores.tolist())
            else:
                # LMEB scene: score only this query's candidates against the full index (corpus-level IDF), which
                # ranks exactly like ranking the whole corpus and then filtering to the scene.
                allowed = dataset.candidates_for(query.id)
                every = index.get_scores(query_tokens[i]) if query_tokens[i] else np.zeros(len(doc_ids), np.float32)
                scored = zip(allowed, every[[position[d] for d in allowed]].tolist())
            yield rank(query.id, scored, depth, ignore_identical_ids=dataset.quirks.ignore_identical_ids)
