"""The gate explains itself: wins / ties / losses per dataset and the queries with the largest loss and gain, with
their texts, the relevant documents' ranks before and after and the top passages, in compare.md and compare.json.
Acceptance on two real SciFact tiny-model runs (r=1 vs r=32); the rest on synthetic records."""

from __future__ import annotations

import csv
import gzip
import json

import numpy as np
import pytest

from kalm_eval.report.compare import CompareOptions, compare_records
from kalm_eval.report.compare_render import to_console, to_json, to_markdown
from kalm_eval.report.drilldown import extremes, outcome_counts
from kalm_eval.result import ResultRecord, discover
from tests.conftest import shared_dataset
from tests.helpers import run_overrides

N = 5
ALLOW = ("reranker.compression",)


@pytest.fixture(scope="module")
def scifact_pair(tmp_path_factory):
    """r=1 (baseline) and r=32 (candidate) of the tiny model on real SciFact, sharing one encoder pass."""
    data = shared_dataset("beir", "scifact")
    tmp = tmp_path_factory.mktemp("drill")
    outputs = run_overrides("benchmark=beir/scifact", f"data_dir={data.parent.parent}", "retriever=bm25",
                            "retriever.depth=20", "reranker=kalm", "reranker.depth=10", "model=tiny",
                            "model.doc_max_len=256", "reranker.latency_batches=0", "compression=[1,32]",
                            f"cache_dir={tmp / 'cache'}", f"output_dir={tmp / 'out'}")
    by_ratio = {ResultRecord.load(out).compression: ResultRecord.load(out) for out in outputs}
    return data, by_ratio[1], by_ratio[32]


def _queries(data) -> dict[str, str]:
    with gzip.open(data / "queries.jsonl.gz", "rt", encoding="utf-8") as fh:
        return {row["_id"]: row["text"] for row in map(json.loads, fh)}


def _qrels(data) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    with open(data / "qrels" / "test.tsv") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if int(row["score"]) >= 1:
                out.setdefault(row["query-id"], set()).add(row["corpus-id"])
    return out


def _run(record: ResultRecord) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with gzip.open(record.path / "run.reranked.trec.gz", "rt") as fh:
        for line in fh:
            qid, _, doc, *_ = line.split()
            out.setdefault(qid, []).append(doc)
    return out


def test_drilldown_names_the_worst_queries_with_their_texts(scifact_pair, tmp_path):
    data, r1, r32 = scifact_pair
    result = compare_records([r1], [r32], CompareOptions(allow_protocol_diff=ALLOW, drilldown=N))
    assert result.exit_code in (0, 1) and not result.refused
    [d] = result.drilldowns
    # independently: per-query values from per_query.tsv, the N most negative differences
    before, after = r1.per_query("reranked", "nDCG@10"), r32.per_query("reranked", "nDCG@10")
    diffs = {q: after[q] - before[q] for q in before}
    assert (d.wins, d.ties, d.losses) == (sum(v > 1e-9 for v in diffs.values()), sum(abs(v) <= 1e-9 for v in diffs.values()),
                                          sum(v < -1e-9 for v in diffs.values()))
    assert d.queries == 300 and d.losses > 0 and d.wins > 0
    worst = sorted((v, q) for q, v in diffs.items() if v < -1e-9)[:N]
    assert [c.query_id for c in d.losses_top] == [q for _, q in worst]
    texts, qrels, run1, run32 = _queries(data), _qrels(data), _run(r1), _run(r32)
    for change in d.losses_top + d.gains_top:
        assert change.text == texts[change.query_id] and change.text
        assert change.delta == pytest.approx(diffs[change.query_id])
        assert {r.doc_id for r in change.relevant} == qrels[change.query_id]
        for rel in change.relevant:
            assert rel.before == (run1[change.query_id].index(rel.doc_id) + 1 if rel.doc_id in run1[change.query_id] else None)
            assert rel.after == (run32[change.query_id].index(rel.doc_id) + 1 if rel.doc_id in run32[change.query_id] else None)
        assert [p.doc_id for p in change.top_baseline] == run1[change.query_id][:3]
        assert [p.doc_id for p in change.top_candidate] == run32[change.query_id][:3]
        assert all(p.words for p in change.top_baseline + change.top_candidate)
    assert all(a.delta <= b.delta for a, b in zip(d.losses_top, d.losses_top[1:]))
    assert all(a.delta >= b.delta > 0 for a, b in zip(d.gains_top, d.gains_top[1:]))

    md = to_markdown(result, [str(r1.path)], [str(r32.path)])
    assert f"### beir/scifact: {d.wins} wins / {d.ties} ties / {d.losses} losses over 300 queries" in md
    for change in d.losses_top:
        assert texts[change.query_id].split()[0] in md and f"**{change.query_id}**" in md
    doc = json.loads(json.dumps(to_json(result)))
    [entry] = doc["drilldown"]
    assert [c["query_id"] for c in entry["largest_losses"]] == [q for _, q in worst]
    assert entry["largest_losses"][0]["text"] == texts[worst[0][1]]
    assert len(entry["largest_losses"][0]["top_baseline"]) == 3 and entry["largest_losses"][0]["relevant"]
    assert f"largest loss {worst[0][1]}" in to_console(result)


def test_outcome_counts_and_extremes():
    diffs = np.array([0.5, -0.25, 0.0, -0.5, 1e-12, 0.25, -0.25])
    assert outcome_counts(diffs) == (2, 2, 3)
    losses, gains = extremes([f"q{i}" for i in range(7)], diffs, 2)
    assert losses == ["q3", "q1"] and gains == ["q0", "q5"]  # ties of equal loss broken by query id
    assert extremes(["a", "b"], np.array([0.0, 0.0]), 3) == ([], [])


def test_drilldown_without_the_dataset_still_names_queries(make_record, tmp_path):
    """Synthetic records name a dataset that is not on this machine: ids and values, and a note saying why."""
    base = discover(make_record(tmp_path / "a", model="nano", seed=1)).records
    cand = discover(make_record(tmp_path / "b", model="nano", seed=2)).records
    result = compare_records(base, cand, CompareOptions(drilldown=2))
    [d] = result.drilldowns
    assert d.wins + d.ties + d.losses == 300 and len(d.losses_top) == 2 and len(d.gains_top) == 2
    assert d.note and "not readable here" in d.note
    assert d.losses_top[0].text is None and "(text unavailable)" in to_markdown(result, ["a"], ["b"])
    counts_only = compare_records(base, cand, CompareOptions(drilldown=0))
    assert counts_only.drilldowns[0].losses_top == [] and counts_only.drilldowns[0].note is None
    md = to_markdown(counts_only, ["a"], ["b"])
    assert "wins /" in md and "Largest losses" not in md and "Then the" not in md


def test_drilldown_knob_is_validated():
    with pytest.raises(ValueError, match="drilldown"):
        CompareOptions(drilldown=-1)
    with pytest.raises(ValueError, match="drilldown"):
        CompareOptions(drilldown=True)


def test_a_moved_dataset_is_named_not_fetched(make_record, tmp_path):
    """A record whose dataset folder is gone (another machine): no download attempt, the note names the path."""
    records = []
    for name, seed in (("a", 1), ("b", 2)):
        path = make_record(tmp_path / name, model="nano", seed=seed)
        raw = json.loads((path / "metrics.json").read_text())
        raw["provenance"]["config"]["benchmark"].update({"loader": "beir", "path": str(tmp_path / "gone" / "scifact"),
                                                         "md5": "0" * 32})
        (path / "metrics.json").write_text(json.dumps(raw))
        records.append(discover(path).records)
    [d] = compare_records(records[0], records[1], CompareOptions(drilldown=1)).drilldowns
    assert f"{tmp_path / 'gone' / 'scifact'} does not exist" in d.note and len(d.losses_top) == 1
