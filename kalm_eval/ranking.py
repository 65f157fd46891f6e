"""THE ranking rule of every run kalm-eval reads, writes or evaluates (`trec_order`), stated once.

trec_eval's own order: score descending, then doc id descending (strcmp; Python's str order is the same for UTF-8),
the rank column ignored. Every ranking kalm-eval makes is sorted by `trec_order` (first stages, reranked heads,
cascade steps), and retrieval.runfile.write_trec refuses a ranking that is not in it, so a written run ranks exactly
as trec_eval (pytrec_eval, ir-measures) ranks its scores and kalm-eval's metrics (computed on the rank order) equal
trec_eval's on the written file."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TypeVar

from kalm_eval.records import Candidate

# This matters: ArguAna's BM25 scores have many ties, and MTEB's published numbers come from trec_eval's ordering.
# (The text is part of every first stage's signature: unchanged since it was first written, so caches stay valid.)
TIE_BREAK = "score desc, then doc id desc (trec_eval)"

T = TypeVar("T")


def _doc_id(item) -> str:
    return item.doc_id if isinstance(item, Candidate) else item[0]


def _score(item) -> float:
    return item.score if isinstance(item, Candidate) else item[1]


def trec_order(items: Iterable[T], doc_id: Callable[[T], str] = _doc_id, score: Callable[[T], float] = _score
               ) -> list[T]:
    """`items` (Candidates, (doc id, score) pairs, or anything with `doc_id` and `score` functions) in trec_eval's
    order (TIE_BREAK): score descending, then doc id descending. The one ranking rule."""
    return sorted(items, key=lambda item: (score(item), doc_id(item)), reverse=True)


def scores_below(floor: float, count: int) -> list[float]:
    """`count` strictly decreasing finite scores below `floor` (floor - 1, floor - 2, ...; one float step at a time
    where the magnitude swallows 1.0), for a part of a run that keeps its order below a scored part."""
    scores, previous = [], floor
    for i in range(count):
        score = floor - 1.0 - i
        if not score < previous:
            score = math.nextafter(previous, -math.inf)
        scores.append(score)
        previous = score
    return scores
