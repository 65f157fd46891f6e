"""The gate explains itself: per compared dataset, wins / ties / losses over queries, and the N queries with the
largest loss and the largest gain, each with its text, the relevant documents' ranks before (baseline) and after
(candidate), and the top passages (id + first words) on each side.

Read from what a result directory stores (per_query.tsv values, run.<stage>.trec.gz rankings) and from the dataset
named by the baseline record's provenance (provenance.config.benchmark, loaded as the run loaded it). When the
dataset cannot be read here (moved, another machine), the drill-down still names the queries and their values,
and says why texts and relevance are missing."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kalm_eval.errors import KalmEvalError
from kalm_eval.result import ResultRecord
from kalm_eval.retrieval.runfile import iter_trec

log = logging.getLogger(__name__)

TIE = 1e-9  # |Δ| at or below this is a tie (per-query values are stored as float repr)
TOP = 3  # passages shown per side
WORDS = 12  # first words of a passage


@dataclass(frozen=True)
class Passage:
    doc_id: str
    words: str  # the first WORDS words of its text ("" when the text is unavailable)


@dataclass(frozen=True)
class RelevantRank:
    doc_id: str
    relevance: int
    before: int | None  # 1-based rank in the baseline run; None = not in the run
    after: int | None  # the same in the candidate run


@dataclass(frozen=True)
class QueryChange:
    query_id: str
    text: str | None  # None: the dataset is not readable here
    baseline: float
    candidate: float
    relevant: tuple[RelevantRank, ...]
    top_baseline: tuple[Passage, ...]
    top_candidate: tuple[Passage, ...]

    @property
    def delta(self) -> float:
        return self.candidate - self.baseline


@dataclass
class DatasetDrilldown:
    label: str  # the gate's row label (dataset, and r when a dataset has several pairs)
    dataset: str
    wins: int
    ties: int
    losses: int
    losses_top: list[QueryChange] = field(default_factory=list)  # largest loss first
    gains_top: list[QueryChange] = field(default_factory=list)  # largest gain first
    note: str | None = None  # why texts / relevance are missing, when they are

    @property
    def queries(self) -> int:
        return self.wins + self.ties + self.losses


def outcome_counts(diffs: np.ndarray) -> tuple[int, int, int]:
    """(wins, ties, losses) of candidate − baseline differences."""
    d = np.asarray(diffs, dtype=float)
    return int(np.sum(d > TIE)), int(np.sum(np.abs(d) <= TIE)), int(np.sum(d < -TIE))


def extremes(query_ids, diffs, n: int) -> tuple[list[str], list[str]]:
    """The n queries with the largest loss (most negative first) and the n with the largest gain (ties by id)."""
    pairs = [(float(d), q) for q, d in zip(query_ids, diffs)]
    losses = [q for d, q in sorted(pairs) if d < -TIE][:n]
    gains = [q for d, q in sorted(pairs, key=lambda p: (-p[0], p[1])) if d > TIE][:n]
    return losses, gains


class DatasetTexts:
    """Query texts, passage texts and judgements of one dataset (`dataset` None: not available, `error` says why)."""

    def __init__(self, dataset=None, error: str | None = None):
        self.dataset = dataset
        self.error = error
        self.relevant: dict[str, list[tuple[str, int]]] = {}
        if dataset is not None:
            threshold = dataset.quirks.relevance_threshold
            for qrel in dataset.qrels:
                if qrel.relevance >= threshold:
                    self.relevant.setdefault(qrel.query_id, []).append((qrel.doc_id, int(qrel.relevance)))

    @classmethod
    def from_record(cls, record: ResultRecord) -> DatasetTexts:
        """The dataset a record was computed on, loaded as the run loaded it (provenance.config.benchmark)."""
        config = record.provenance.get("config") or {}
        benchmark = config.get("benchmark")
        if not isinstance(benchmark, dict):
            return cls(error=f"{record.path}: no benchmark config in its provenance")
        path = benchmark.get("path")
        if path and not Path(path).exists():  # never fetch a moved dataset again just to show texts
            return cls(error=f"dataset {benchmark.get('name')} not readable here: {path} does not exist")
        from kalm_eval.data.loaders import load_dataset

        cache = Path(config["cache_dir"]) if config.get("cache_dir") else Path(tempfile.gettempdir()) / "kalm-eval-cache"
        try:
            return cls(load_dataset(dict(benchmark), cache))
        except (KalmEvalError, OSError, KeyError, ValueError) as err:
            error = f"dataset {benchmark.get('name')} not readable here ({type(err).__name__}: {err})"
            log.warning("drill-down: %s; showing query ids and values only", error)
            return cls(error=error)

    def query_text(self, query_id: str) -> str | None:
        if self.dataset is None:
            return None
        query = self.dataset.queries.get(query_id)
        return None if query is None else query.text

    def passage(self, doc_id: str) -> Passage:
        if self.dataset is None:
            return Passage(doc_id, "")
        try:
            words = self.dataset.passage(doc_id).split()
        except KeyError:
            return Passage(doc_id, "")
        return Passage(doc_id, " ".join(words[:WORDS]) + (" …" if len(words) > WORDS else ""))

    def judged(self, query_id: str) -> list[tuple[str, int]]:
        return [] if self.dataset is None else sorted(self.relevant.get(query_id, []), key=lambda j: (-j[1], j[0]))


def rankings(record: ResultRecord, stage: str, query_ids: set[str]) -> dict[str, list[str]]:
    """query id -> doc ids best first, from the record's run file of `stage` (only `query_ids`)."""
    name = record.files.get(f"{stage}_run")
    if not name or record.path is None or not (Path(record.path) / name).exists():
        return {}
    return {ranked.query_id: [c.doc_id for c in ranked.candidates]
            for ranked in iter_trec(Path(record.path) / name) if ranked.query_id in query_ids}


def drilldown(label: str, baseline: ResultRecord, candidate: ResultRecord, stage: str, query_ids, diffs,
              baseline_values, n: int, texts: DatasetTexts) -> DatasetDrilldown:
    """The drill-down of one compared pair: counts over every query, details for the n largest losses and gains."""
    wins, ties, losses = outcome_counts(diffs)
    out = DatasetDrilldown(label=label, dataset=baseline.dataset, wins=wins, ties=ties, losses=losses,
                           note=texts.error)
    worst, best = extremes(query_ids, diffs, n)
    wanted = set(worst) | set(best)
    before, after = rankings(baseline, stage, wanted), rankings(candidate, stage, wanted)
    missing = [side for side, runs in (("baseline", before), ("candidate", after)) if wanted and not runs]
    if missing:
        out.note = "; ".join(filter(None, [out.note, f"no {stage} run file in the {' and '.join(missing)} record"]))
    value = dict(zip(query_ids, baseline_values))
    delta = dict(zip(query_ids, diffs))

    def change(qid: str) -> QueryChange:
        b, a = before.get(qid, []), after.get(qid, [])
        relevant = tuple(RelevantRank(doc, grade, _rank(b, doc), _rank(a, doc)) for doc, grade in texts.judged(qid))
        return QueryChange(query_id=qid, text=texts.query_text(qid), baseline=float(value[qid]),
                           candidate=float(value[qid] + delta[qid]), relevant=relevant,
                           top_baseline=tuple(texts.passage(d) for d in b[:TOP]),
                           top_candidate=tuple(texts.passage(d) for d in a[:TOP]))

    out.losses_top = [change(q) for q in worst]
    out.gains_top = [change(q) for q in best]
    return out


def _rank(ranking: list[str], doc_id: str) -> int | None:
    try:
        return ranking.index(doc_id) + 1
    except ValueError:
        return None


def rank_text(rank: int | None) -> str:
    return "—" if rank is None else str(rank)


def to_dict(d: DatasetDrilldown) -> dict:
    def change(c: QueryChange) -> dict:
        return {"query_id": c.query_id, "text": c.text, "baseline": c.baseline, "candidate": c.candidate,
                "delta": c.delta,
                "relevant": [{"doc_id": r.doc_id, "relevance": r.relevance, "rank_before": r.before,
                              "rank_after": r.after} for r in c.relevant],
                "top_baseline": [{"doc_id": p.doc_id, "first_words": p.words} for p in c.top_baseline],
                "top_candidate": [{"doc_id": p.doc_id, "first_words": p.words} for p in c.top_candidate]}

    return {"label": d.label, "dataset": d.dataset, "queries": d.queries, "wins": d.wins, "ties": d.ties,
            "losses": d.losses, "largest_losses": [change(c) for c in d.losses_top],
            "largest_gains": [change(c) for c in d.gains_top], "note": d.note}


def to_markdown(d: DatasetDrilldown, measure: str, details: bool = True) -> list[str]:
    lines = [f"### {d.label}: {d.wins} wins / {d.ties} ties / {d.losses} losses over {d.queries} queries", ""]
    if d.note:
        lines += [f"Note: {d.note}", ""]
    sides = ((f"Largest losses ({measure})", d.losses_top), (f"Largest gains ({measure})", d.gains_top))
    for title, changes in sides if details else ():
        lines += [f"#### {title}", ""]
        if not changes:
            lines += ["(none)", ""]
            continue
        for i, c in enumerate(changes, 1):
            text = "(text unavailable)" if c.text is None else f"“{_md(c.text)}”"
            lines.append(f"{i}. **{_md(c.query_id)}** Δ {c.delta:+.4f} ({c.baseline:.4f} → {c.candidate:.4f}): {text}")
            if c.relevant:
                lines.append("   - relevant (rank before → after): " + "; ".join(
                    f"{_md(r.doc_id)} {rank_text(r.before)} → {rank_text(r.after)}" for r in c.relevant))
            for side, top in (("baseline", c.top_baseline), ("candidate", c.top_candidate)):
                if top:
                    lines.append(f"   - {side} top-{len(top)}: " + "; ".join(
                        f"{_md(p.doc_id)}" + (f" “{_md(p.words)}”" if p.words else "") for p in top))
        lines.append("")
    return lines


def _md(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")
