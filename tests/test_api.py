"""The Python API: kalm_eval.evaluate (same overrides as the CLI) and kalm_eval.load_results (a tidy DataFrame)."""

from __future__ import annotations

import kalm_eval
from kalm_eval.storage import read_json
from tests.data.test_beir_readers import write_beir
from tests.test_cli import CORPUS, QRELS, QUERIES


def test_evaluate_a_sweep_and_load_it_as_a_frame(tmp_path):
    root = write_beir(tmp_path / "mini", CORPUS, QUERIES, QRELS)
    records = kalm_eval.evaluate("benchmark=local", f"benchmark.path={root}", "benchmark.label=mini",
                                 f"cache_dir={tmp_path / 'cache'}", f"output_dir={tmp_path / 'out'}", "reranker=kalm",
                                 "model=tiny", "compression=[1,4]", "retriever.depth=5", "reranker.latency_batches=0")
    assert [r.compression for r in records] == [1, 4] and all(r.path.parent == tmp_path / "out" for r in records)
    frame = kalm_eval.load_results(tmp_path / "out")
    ndcg = frame[(frame["measure"] == "nDCG@10") & (frame["stage"] == "reranked")]
    assert len(ndcg) == 2
    for _, row in ndcg.iterrows():
        record = read_json(tmp_path / "out" / f"r{int(row['compression'])}" / "metrics.json")
        assert row["value"] == record["stages"]["reranked"]["nDCG@10"]
        assert row["dataset"] == "local/mini" and row["first_stage"] and row["signature"] == record["signature"]
