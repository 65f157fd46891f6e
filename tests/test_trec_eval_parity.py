"""Property tests: on any valid run file (lines in any order, ranks contradicting the scores, ties, negative and
exponent-notation scores), kalm-eval ranks as trec_eval does, and every measure it reports equals pytrec_eval's on
the same file, per query: for a given first-stage run, for the first-stage run kalm-eval writes, and for a reranked
run (margins with ties, as identical passage texts give) as written. The oracles are pytrec_eval itself and an
independent strcmp sort of the written lines; bounded examples, derandomized, a few seconds in all."""

from __future__ import annotations

import functools
import gzip
import random
from pathlib import Path
from types import SimpleNamespace

import ir_measures
import numpy as np
import pytrec_eval
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ir_measures import Qrel

from kalm_eval import metrics
from kalm_eval.data.quirks import Quirks
from kalm_eval.pipeline import Reranking
from kalm_eval.records import RankedList
from kalm_eval.rerank.engine import RerankJob
from kalm_eval.retrieval.runfile import read_trec_validated, write_trec

DOCS = ["a", "b", "B", "d1", "d10", "d2", "d9", "x_7", "zz", "é1", "d0", "D0"]  # prefixes, case, non-ASCII
QUERIES = ["q1", "q2", "q3", "q10"]
SCORES = [0.0, 1.0, -1.0, 2.5, -0.25, 1e-3, -3e7, 12.0]  # few values: ties are the rule, not the exception
DEPTH = 1000  # the file is never cut, so the given file itself is the oracle's input
PROPERTY = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def score_text(value: float, style: int) -> str:
    return [repr(value), f"{value:e}", f"{value:E}", f"{value:g}", f"{value:.6f}"][style]


@st.composite
def run_and_qrels(draw):
    lines, qrels = [], []
    for qid in draw(st.lists(st.sampled_from(QUERIES), min_size=1, max_size=4, unique=True)):
        docs = draw(st.lists(st.sampled_from(DOCS), min_size=1, max_size=len(DOCS), unique=True))
        for doc in docs:
            value, style = draw(st.sampled_from(SCORES)), draw(st.integers(0, 4))
            lines.append((qid, doc, draw(st.integers(1, 50)), score_text(value, style)))  # ranks: arbitrary
    for qid in QUERIES:  # judged docs, some of them never retrieved; some queries judged but not in the run
        for doc in draw(st.lists(st.sampled_from(DOCS), max_size=5, unique=True)):
            qrels.append(Qrel(qid, doc, draw(st.integers(0, 2))))
    if not any(q.relevance > 0 for q in qrels):
        qrels.append(Qrel(QUERIES[0], DOCS[0], 1))
    seed = draw(st.integers(0, 2**16))
    random.Random(seed).shuffle(lines)  # lines of one query need not be contiguous
    return lines, qrels


def write_lines(path: Path, lines) -> Path:
    path.write_text("".join(f"{q} Q0 {d} {r} {s} given\n" for q, d, r, s in lines))
    return path


def read_run(path: Path) -> dict[str, dict[str, float]]:
    opener = gzip.open if path.suffix == ".gz" else open
    run: dict[str, dict[str, float]] = {}
    with opener(path, "rt") as fh:
        for line in fh:
            qid, _, doc, _, score, _ = line.split()
            run.setdefault(qid, {})[doc] = float(score)
    return run


def pytrec_values(qrels: list[Qrel], run: dict[str, dict[str, float]], quirks: Quirks) -> dict[str, dict[str, float]]:
    """pytrec_eval's per-query value of every measure kalm-eval reports (metrics.measures_for), by kalm-eval's names."""
    cutoffs = [k for k in metrics.RECALL_CUTOFFS if k <= DEPTH]
    judged = {}
    for q in qrels:
        judged.setdefault(q.query_id, {})[q.doc_id] = q.relevance
    evaluator = pytrec_eval.RelevanceEvaluator(
        judged, {"ndcg_cut.10", "recip_rank", "recall." + ",".join(map(str, cutoffs))},
        relevance_level=quirks.relevance_threshold)
    rel = quirks.relevance_threshold
    out: dict[str, dict[str, float]] = {}
    for qid, values in evaluator.evaluate(run).items():
        rr = values["recip_rank"]
        named = {"nDCG@10": values["ndcg_cut_10"], f"RR(rel={rel})@10": rr if rr >= 0.1 else 0.0,
                 **{f"R(rel={rel})@{k}": values[f"recall_{k}"] for k in cutoffs}}
        out[qid] = {str(ir_measures.parse_measure(name)): value for name, value in named.items()}
    return out


def assert_equal_per_query(result, oracle: dict[str, dict[str, float]]) -> None:
    assert set(result.per_query) == {m for values in oracle.values() for m in values} or not oracle
    for measure, values in result.per_query.items():
        for qid, value in values.items():
            expected = oracle.get(qid, {}).get(measure, 0.0)  # judged, never retrieved: 0 (trec_eval -c)
            assert value == expected, (measure, qid, value, expected)


def strcmp_desc(a: tuple[str, float], b: tuple[str, float]) -> int:
    """trec_eval's comp_sim_docno: score descending, then strcmp(docno) descending, on bytes."""
    if a[1] != b[1]:
        return -1 if a[1] > b[1] else 1
    x, y = a[0].encode("utf-8"), b[0].encode("utf-8")
    return (x < y) - (x > y)


def assert_ranks_as_trec_eval_reads(path: Path) -> None:
    per_query: dict[str, list[tuple[int, str, float]]] = {}
    with gzip.open(path, "rt") as fh:
        for line in fh:
            qid, _, doc, rank, score, _ = line.split()
            per_query.setdefault(qid, []).append((int(rank), doc, float(score)))
    for qid, rows in per_query.items():
        by_rank = [doc for _, doc, _ in sorted(rows)]
        assert [r for r, _, _ in sorted(rows)] == list(range(1, len(rows) + 1))
        by_trec_eval = [doc for doc, _ in sorted(((d, s) for _, d, s in rows), key=functools.cmp_to_key(strcmp_desc))]
        assert by_rank == by_trec_eval, qid


@PROPERTY
@given(case=run_and_qrels())
def test_first_stage_metrics_equal_pytrec_eval_on_the_given_and_the_written_file(tmp_path_factory, case):
    lines, qrels = case
    tmp = tmp_path_factory.mktemp("fs")
    given_file = write_lines(tmp / "given.trec", lines)
    quirks = Quirks()
    rankings, _ = read_trec_validated(given_file, queries=set(QUERIES), corpus=set(DOCS), depth=DEPTH,
                                      ignore_identical_ids=False, on_unknown="error", on_duplicate="error")
    result = metrics.evaluate("first_stage", rankings, qrels, quirks, DEPTH)
    assert_equal_per_query(result, pytrec_values(qrels, read_run(given_file), quirks))
    written = tmp / "run.first_stage.trec.gz"
    write_trec(written, rankings, tag="trec_run")
    assert_ranks_as_trec_eval_reads(written)
    assert_equal_per_query(result, pytrec_values(qrels, read_run(written), quirks))


class FirstStageFile:
    """What Reranking reads of the first stage: its path, and its rankings streamed."""

    def __init__(self, path: Path, rankings: list[RankedList]):
        self.path, self.rankings = path, rankings

    def __iter__(self):
        return iter(self.rankings)


def reranking_of(tmp: Path, lines, depth: int, tail: str, cascade=None):
    """The given run read as the pipeline reads it, its rerank job at `depth`, and the pipeline's Reranking over it
    (only the state its ranking methods read)."""
    rankings, _ = read_trec_validated(write_lines(tmp / "given.trec", lines), queries=set(QUERIES),
                                      corpus=set(DOCS), depth=DEPTH, ignore_identical_ids=False, on_unknown="error",
                                      on_duplicate="error")
    job = RerankJob.build(rankings, depth=depth, query_text=str, instruction=None, passage_text=str,
                          chunk_passages=4)
    reranking = Reranking.__new__(Reranking)
    reranking.state = SimpleNamespace(first_stage=FirstStageFile(tmp / "first_stage.trec.gz", rankings))
    reranking.settings = SimpleNamespace(depth=depth, tail=tail, cascade=cascade)
    return rankings, job, reranking


@PROPERTY
@given(case=run_and_qrels(), depth=st.integers(1, 8), tail=st.sampled_from(["first_stage", "drop"]),
       margins=st.lists(st.sampled_from([0.5, -1.25, 3.0, 0.0, -7.5]), min_size=64, max_size=64))
def test_reranked_run_as_written_ranks_like_trec_eval_and_its_metrics_equal_pytrec_eval(tmp_path_factory, case,
                                                                                         depth, tail, margins):
    lines, qrels = case
    tmp = tmp_path_factory.mktemp("rr")
    rankings, job, reranking = reranking_of(tmp, lines, depth, tail)
    margin = np.resize(np.asarray(margins, dtype=np.float32), job.pairs)  # float32 margins, many ties
    reranked = list(reranking._reranked(job, margin))
    quirks = Quirks()
    result = metrics.evaluate("reranked", reranked, qrels, quirks, DEPTH)
    written = tmp / "run.reranked.trec.gz"
    write_trec(written, reranked, tag="reranked")
    assert_ranks_as_trec_eval_reads(written)
    assert_equal_per_query(result, pytrec_values(qrels, read_run(written), quirks))
    for first, again in zip(rankings, reranked):  # each query holds exactly its own first-stage candidates
        expected = first.candidates if tail == "first_stage" else first.candidates[:depth]
        assert sorted(c.doc_id for c in again.candidates) == sorted(c.doc_id for c in expected)


@PROPERTY
@given(case=run_and_qrels(), depths=st.tuples(st.integers(2, 8), st.integers(1, 7)),
       margins=st.lists(st.sampled_from([0.5, -1.25, 3.0, 0.0]), min_size=2 * 64, max_size=2 * 64))
def test_cascade_run_as_written_ranks_like_trec_eval_and_its_metrics_equal_pytrec_eval(tmp_path_factory, case,
                                                                                        depths, margins):
    lines, qrels = case
    first_depth, second_depth = depths[0], min(depths)
    tmp = tmp_path_factory.mktemp("cascade")
    steps = [SimpleNamespace(depth=first_depth, compression=32), SimpleNamespace(depth=second_depth, compression=2)]
    _, job, reranking = reranking_of(tmp, lines, first_depth, "first_stage", cascade=steps)
    values = np.asarray(margins, dtype=np.float32)
    unit_scores = SimpleNamespace(
        margin={"r32": np.resize(values[:64], job.pairs), "r2": np.resize(values[64:], job.pairs)},
        p_yes={"r32": np.full(job.pairs, 0.5), "r2": np.full(job.pairs, 0.5)})
    quirks = Quirks()
    for k in (1, 2):  # each step's ranking is evaluated (cascade_1, reranked) and would be written the same way
        cascaded = [ranked for ranked, _ in reranking._cascade(job, unit_scores, steps[:k])]
        result = metrics.evaluate("reranked", cascaded, qrels, quirks, DEPTH)
        written = tmp / f"run.cascade{k}.trec.gz"
        write_trec(written, cascaded, tag="reranked")
        assert_ranks_as_trec_eval_reads(written)
        assert_equal_per_query(result, pytrec_values(qrels, read_run(written), quirks))
