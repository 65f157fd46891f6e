"""Invariants of reranking, on real SciFact (skipped visibly without ../shared/data) and as per-run checks:

- the control reranker `reranker=first_stage` (each pair scored by its first-stage score) reproduces the first-stage
  run and every metric exactly;
- `reranker.depth=1` leaves the run and every metric unchanged;
- a pair's score does not depend on which other pairs, queries or passages share its unit or batch;
- every reranked query holds exactly its own first-stage top-k candidates (checked on every run, before metrics);
- a given run whose tied scores carry ranks is ranked as trec_eval reads it (the issue's SciFact case);
- a non-finite score in a run file is one line, exit 2; a cached unit holding one is recomputed."""

from __future__ import annotations

import csv
import gzip
import io
import logging
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytrec_eval

from kalm_eval.errors import InvariantError
from kalm_eval.pipeline import Reranking, checked_candidates
from kalm_eval.records import Candidate, RankedList
from kalm_eval.rerank.engine import RerankJob
from kalm_eval.storage import read_json
from tests.conftest import shared_dataset
from tests.helpers import poison_unit, run_overrides


def run_lines(path: Path) -> list[list[str]]:
    with gzip.open(path, "rt") as fh:
        return [line.split() for line in fh]


def by_query(lines: list[list[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for qid, _, doc, _, _, _ in lines:
        out.setdefault(qid, []).append(doc)
    return out


def per_query(out: Path) -> dict[tuple[str, str, str], float]:
    rows = csv.reader(io.StringIO((out / "per_query.tsv").read_text()), delimiter="\t")
    next(rows)
    return {(stage, measure, qid): float(value) for stage, measure, qid, value in rows}


def stage_values(out: Path, stage: str) -> dict[tuple[str, str], float]:
    return {(m, q): v for (s, m, q), v in per_query(out).items() if s == stage}


def scores(out: Path) -> dict[tuple[str, str], float]:
    with gzip.open(out / "scores.reranked.tsv.gz", "rt") as fh:
        return {(r["query_id"], r["doc_id"]): float(r["margin"]) for r in csv.DictReader(fh, delimiter="\t")}


def qrels_of() -> dict[str, dict[str, int]]:
    judged: dict[str, dict[str, int]] = {}
    for line in (shared_dataset("beir", "scifact") / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        qid, doc, grade = line.split("\t")
        judged.setdefault(qid, {})[doc] = int(grade)
    return judged


def pytrec_ndcg(run: dict[str, dict[str, float]]) -> dict[str, float]:
    evaluator = pytrec_eval.RelevanceEvaluator(qrels_of(), {"ndcg_cut.10"})
    return {qid: values["ndcg_cut_10"] for qid, values in evaluator.evaluate(run).items()}


@pytest.fixture(scope="module")
def scifact(tmp_path_factory):
    data = shared_dataset("beir", "scifact")
    tmp = tmp_path_factory.mktemp("invariants")
    common = ["benchmark=beir/scifact", f"data_dir={data.parent.parent}", "retriever=bm25",
              f"cache_dir={tmp / 'cache'}", "progress=false"]
    [first] = run_overrides(*common, "retriever.depth=100", f"output_dir={tmp / 'bm25'}")
    return SimpleNamespace(tmp=tmp, common=common, first=first)


def test_control_reranker_reproduces_the_first_stage_exactly(scifact):
    [control] = run_overrides(*scifact.common, "retriever.depth=100", "reranker=first_stage",
                              f"output_dir={scifact.tmp / 'control'}")
    [partial] = run_overrides(*scifact.common, "retriever.depth=100", "reranker=first_stage", "reranker.depth=30",
                              f"output_dir={scifact.tmp / 'control30'}")
    first = run_lines(scifact.first / "run.first_stage.trec.gz")
    assert len(first) == 300 * 100
    # every line but the tag: same docs, same ranks, same scores (the control keeps float64 scores)
    assert [line[:5] for line in run_lines(control / "run.reranked.trec.gz")] == [line[:5] for line in first]
    assert by_query(run_lines(partial / "run.reranked.trec.gz")) == by_query(first)  # head 30 + first-stage tail
    for out in (control, partial):
        stages = read_json(out / "metrics.json")["stages"]
        measures = [m for m, v in stages["first_stage"].items() if isinstance(v, float)]
        assert len(measures) >= 8 and stages["first_stage"]["nDCG@10"] > 0.6
        assert {m: stages["reranked"][m] for m in measures} == {m: stages["first_stage"][m] for m in measures}
        assert stage_values(out, "reranked") == stage_values(out, "first_stage") == stage_values(scifact.first,
                                                                                                    "first_stage")
    record = read_json(control / "metrics.json")
    assert record["protocol"]["reranker"]["name"] == "first_stage"
    assert record["protocol"]["reranker"]["model"]["score"].startswith("the pair's first-stage score")


def test_rerank_depth_one_leaves_run_and_every_metric_unchanged(scifact):
    [out] = run_overrides(*scifact.common, "retriever.depth=20", "reranker=kalm", "model=tiny", "model.doc_max_len=128",
                          "reranker.depth=1", "reranker.latency_batches=0", f"output_dir={scifact.tmp / 'depth1'}")
    assert by_query(run_lines(out / "run.reranked.trec.gz")) == by_query(run_lines(out / "run.first_stage.trec.gz"))
    stages = read_json(out / "metrics.json")["stages"]
    measures = [m for m, v in stages["first_stage"].items() if isinstance(v, float)]
    assert {m: stages["reranked"][m] for m in measures} == {m: stages["first_stage"][m] for m in measures}
    assert stage_values(out, "reranked") == stage_values(out, "first_stage")


def test_a_pairs_score_does_not_depend_on_its_unit_batch_or_neighbours(scifact):
    """The same pairs scored in one unit with every query, and in a shuffled run of a third of the queries cut
    into small units and odd batches: each pair's margin agrees within 1e-5 (fp32, model=tiny)."""
    tiny = ["reranker=kalm", "model=tiny", "model.doc_max_len=128", "reranker.latency_batches=0", "compression=4"]
    [whole] = run_overrides(*scifact.common, "retriever.depth=5", *tiny, "reranker.chunk_passages=4096",
                            f"output_dir={scifact.tmp / 'whole'}")
    lines = [line for line in run_lines(whole / "run.first_stage.trec.gz")]
    keep = set(random.Random(7).sample(sorted({line[0] for line in lines}), 100))
    subset = [line for line in lines if line[0] in keep]
    random.Random(8).shuffle(subset)  # lines of a query scattered, ranks out of order
    given = scifact.tmp / "subset.trec"
    given.write_text("".join(" ".join(line) + "\n" for line in subset))
    common = [c for c in scifact.common if c != "retriever=bm25"]
    [regrouped] = run_overrides(*common, "retriever=trec_run", f"retriever.path={given}", "retriever.depth=5", *tiny,
                                "reranker.chunk_passages=37", "reranker.batch_size=3", "reranker.encode_batch_size=5",
                                f"output_dir={scifact.tmp / 'regrouped'}")
    assert read_json(regrouped / "metrics.json")["counts"]["units"] > 10
    alone, together = scores(regrouped), scores(whole)
    assert len(alone) == 100 * 5 and set(alone) <= set(together)
    differences = np.array([abs(alone[pair] - together[pair]) for pair in alone])
    assert differences.max() <= 1e-5, differences.max()


def test_tied_scores_carrying_ranks_rank_as_trec_eval_reads_them(scifact):
    """The issue's case: a given run whose tied scores carry ranks. trec_eval ignores the rank column and breaks
    the tie by doc id; kalm-eval used to break it by the rank column (nDCG@10 0.0 where pytrec_eval read > 0)."""
    lines = run_lines(scifact.first / "run.first_stage.trec.gz")
    judged = qrels_of()
    runs = by_query(lines)
    for qid, docs in runs.items():  # a query with a relevant doc in trec_eval's top 10 of its 20 tied candidates
        tied = docs[:20]
        relevant = [d for d in tied if judged.get(qid, {}).get(d, 0) > 0]
        if relevant and all(d in sorted(tied, reverse=True)[:10] for d in relevant) and len(relevant) < 10:
            break
    else:
        pytest.fail("no SciFact query fits the case")
    ranked = [d for d in tied if d not in relevant] + relevant  # the file's ranks put the relevant docs last
    given = scifact.tmp / "tied.trec"
    with open(given, "w") as fh:
        for rank, doc in enumerate(ranked, start=1):
            fh.write(f"{qid} Q0 {doc} {rank} 7.25 tied\n")
    by_rank_column = pytrec_ndcg({qid: {doc: float(len(ranked) - i) for i, doc in enumerate(ranked)}})[qid]
    trec_eval = pytrec_ndcg({qid: dict.fromkeys(ranked, 7.25)})[qid]
    assert by_rank_column == 0.0 and trec_eval > 0.0  # the two readings differ, as in the issue (0.0 vs 0.185)
    common = [c for c in scifact.common if c != "retriever=bm25"]
    [out] = run_overrides(*common, "retriever=trec_run", f"retriever.path={given}", "retriever.depth=20",
                          "reranker=first_stage", f"output_dir={scifact.tmp / 'tied'}")
    values = per_query(out)
    assert values[("first_stage", "nDCG@10", qid)] == trec_eval
    assert values[("reranked", "nDCG@10", qid)] == trec_eval  # the control keeps it
    written = run_lines(out / "run.first_stage.trec.gz")
    assert [line[2] for line in written] == sorted(ranked, reverse=True)  # doc id descending under the tie
    assert pytrec_ndcg({qid: {line[2]: float(line[4]) for line in written}})[qid] == trec_eval


def test_nan_in_a_run_file_is_one_line_naming_file_and_line_exit_2(scifact):
    """The issue's case: a clean BM25 run with one score written as `nan` (third line of query 1)."""
    lines = run_lines(scifact.first / "run.first_stage.trec.gz")
    lines[2][4] = "nan"
    given = scifact.tmp / "nan.trec"
    given.write_text("".join(" ".join(line) + "\n" for line in lines))
    data = [c for c in scifact.common if c.startswith("data_dir=")]
    proc = subprocess.run([sys.executable, "-m", "kalm_eval", "benchmark=beir/scifact", *data, "retriever=trec_run",
                           f"retriever.path={given}", f"cache_dir={scifact.tmp / 'cache'}",
                           f"output_dir={scifact.tmp / 'nan'}", "progress=false"],
                          capture_output=True, text=True, cwd=scifact.tmp, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"kalm-eval: error: {given}:3: score 'nan' is not a finite number (nan, inf and values beyond the float "
        "range cannot be ranked)")
    assert "Traceback" not in proc.stderr and not (scifact.tmp / "nan").exists()


def test_a_cached_unit_with_a_non_finite_score_is_recomputed_in_the_same_run(scifact, caplog):
    args = [*scifact.common, "retriever.depth=100", "reranker=first_stage", "reranker.chunk_passages=1000",
            f"output_dir={scifact.tmp / 'unit'}"]
    root = scifact.tmp / "cache" / "rerank_units" / "beir__scifact"
    earlier = set(root.glob("*")) if root.exists() else set()
    [out] = run_overrides(*args)
    before = {name: (out / name).read_bytes() for name in ("run.reranked.trec.gz", "per_query.tsv")}
    [directory] = set(root.glob("*")) - earlier  # this run's units
    units = [directory / "000001.npz"]
    for unit in units:
        poison_unit(unit, "", 3, np.nan)
    caplog.set_level(logging.INFO)
    [again] = run_overrides(*args, "force=true")
    assert f"rerank unit {units[-1]} is unusable (it holds non-finite scores" in caplog.text
    assert "recomputing 1 damaged rerank unit(s)" in caplog.text
    assert {name: (again / name).read_bytes() for name in before} == before


# ---- the candidate check, on every run (no data needed) ------------------------------------------------------

class FirstStageFile:
    def __init__(self, path: Path, rankings: list[RankedList]):
        self.path, self.rankings = path, rankings

    def __iter__(self):
        return iter(self.rankings)


def reranking_over(rankings: list[RankedList], job_rankings: list[RankedList], depth: int) -> tuple:
    job = RerankJob.build(job_rankings, depth=depth, query_text=str, instruction=None, passage_text=str,
                          chunk_passages=8)
    reranking = Reranking.__new__(Reranking)
    reranking.state = SimpleNamespace(first_stage=FirstStageFile(Path("first.trec.gz"), rankings))
    reranking.settings = SimpleNamespace(depth=depth, tail="first_stage", cascade=None)
    return reranking, job


def ranking(qid: str, docs: str) -> RankedList:
    return RankedList(qid, tuple(Candidate(d, float(len(docs) - i)) for i, d in enumerate(docs)))


def test_a_reranked_query_must_hold_exactly_its_own_first_stage_candidates():
    first = [ranking("q1", "abcde"), ranking("q2", "fghij")]
    reranking, job = reranking_over(first, first, depth=3)
    reranked = list(reranking._reranked(job, np.zeros(job.pairs)))
    assert [sorted(c.doc_id for c in r.candidates) for r in reranked] == [list("abcde"), list("fghij")]
    # the run changed under the job (another first stage, another order): refused before any metric
    reranking, job = reranking_over(first, [ranking("q1", "abdce"), ranking("q2", "fghij")], depth=3)
    with pytest.raises(InvariantError, match=r"query 'q1' \(#1\): the scored pairs are not its first-stage top-3"):
        list(reranking._reranked(job, np.zeros(job.pairs)))
    reranking, job = reranking_over(first, [ranking("q2", "fghij"), ranking("q1", "abcde")], depth=3)
    with pytest.raises(InvariantError, match=r"query 'q1' \(#1\)"):
        list(reranking._reranked(job, np.zeros(job.pairs)))
    reranking, job = reranking_over(first, first[:1], depth=3)
    with pytest.raises(InvariantError, match=r"query 'q2' \(#2\)"):
        list(reranking._reranked(job, np.zeros(job.pairs)))
    with pytest.raises(InvariantError, match=r"reranked query 'q1' does not hold exactly the first-stage candidates"):
        checked_candidates(first[0], ranking("q1", "abcdz"), 3, "first_stage")
    with pytest.raises(InvariantError, match=r"reranked query 'q1'"):
        checked_candidates(first[0], ranking("q1", "abcdd"), 3, "first_stage")  # a doc twice, one missing
    assert checked_candidates(first[0], ranking("q1", "cab"), 3, "drop") == ranking("q1", "cab")
