"""kalm-eval-plan (cost before the spend, offline from config sizes) and kalm-eval-status (progress from files)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from kalm_eval.config import RunConfig
from kalm_eval.errors import ConfigError
from kalm_eval.plan import PlanSettings, make_plan, plan_unit
from kalm_eval.status import unit_status
from tests.helpers import compose_config, run_overrides
from tests.test_cli import CORPUS, QUERIES, QRELS  # noqa: F401  (fixture data)
from tests.data.test_beir_readers import write_beir


def test_plan_numbers_for_scifact_by_hand(tmp_path):
    cfg = compose_config("benchmark=beir/scifact", "reranker=kalm", "model=large", "compression=[1,32]",
                         "cache.persist_compression=[32]", f"cache_dir={tmp_path}")
    run_cfg = RunConfig.from_hydra(cfg, probe_paths=False)
    settings = PlanSettings(tokens_per_word=1.4, prompt_tokens=49, pairs_per_s=100.0,
                            passages_per_s=50.0)
    plan = plan_unit("beir/scifact", run_cfg, settings, {1: 100.0, 32: 100.0})
    assert (plan.queries, plan.corpus, plan.pairs) == (300, 5183, 300 * 100)
    assert plan.unique_passages == 5183  # at most the corpus
    passage_tokens = math.ceil(213.63 * 1.4) + 4  # BEIR Table 1 words x tokens/word + "<Document>: "
    assert plan.passage_tokens == passage_tokens == 304
    instruction = len(run_cfg.reranker.instruction.split())
    prompt = 49 + math.ceil((instruction + 12.37) * 1.4)
    assert plan.decoder_tokens == 30_000 * prompt * 2
    assert plan.vectors == {1: 304, 32: 10}
    assert plan.cache_bytes == {32: 5183 * 10 * 2560 * 2}  # only the persisted compression counts
    assert plan.score_s == 2 * 30_000 / 100.0 and plan.encode_s == 5183 / 50.0


def test_plan_of_the_paper_suite_runs_offline(tmp_path):
    plans, compressions, _ = make_plan(compose_config("+experiment=paper_beir", "model=large",
                                                      "compression=[1,2,4,8,16,32]", f"cache_dir={tmp_path}"))
    assert len(plans) == 13 and compressions == (1, 2, 4, 8, 16, 32)
    assert sum(p.queries for p in plans) == 33_234 and sum(p.corpus for p in plans) == 24_561_473
    assert sum(p.pairs for p in plans) == 3_323_400
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "kalm_eval.plan", "+experiment=paper_miracl", "model=nano",
                           "plan.pairs_per_s=500", f"cache_dir={tmp_path}"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "total (18/18 with sizes)" in done.stdout and "106,332,152" in done.stdout


def test_status_follows_a_run(tmp_path):
    root = write_beir(tmp_path / "mini", CORPUS, QUERIES, QRELS)
    overrides = ["benchmark=local", f"benchmark.path={root}", "benchmark.label=mini", f"cache_dir={tmp_path / 'c'}",
                 f"output_dir={tmp_path / 'out'}", "reranker=kalm", "model=tiny", "compression=[1,4]",
                 "reranker.chunk_passages=2", "retriever.depth=5", "reranker.latency_batches=0"]
    run_cfg = RunConfig.from_hydra(compose_config(*overrides), probe_paths=False)
    assert unit_status("mini", run_cfg).state == "not started"
    run_overrides(*overrides)
    status = unit_status("mini", run_cfg)
    assert status.state == "done" and status.records == (2, 2) and status.first_stage == "done"
    assert status.units["done"] == status.units["units"] > 1
    unit = next((tmp_path / "c").glob("rerank_units/*/*/*.npz"))
    unit.unlink()
    (tmp_path / "out" / "r4" / "per_query.tsv").unlink()  # a damaged record no longer counts
    status = unit_status("mini", run_cfg)
    assert status.records == (1, 2) and status.units["missing"] == 1 and status.state == "partial"
    # the missing unit being computed by a live process here: in progress; by a process that is gone: interrupted
    marker = unit.with_suffix(".inflight")
    marker.write_text(json.dumps({"host": os.uname().nodename, "pid": os.getpid(), "started": 0}))
    status = unit_status("mini", run_cfg)
    assert status.state == "in progress" and (status.units["in_flight"], status.units["interrupted"]) == (1, 0)
    total = status.units["units"]
    assert status.row()[3] == f"{total - 1}/{total} done, 1 in flight, 0 interrupted, 1 missing"  # missing = not done
    marker.write_text(json.dumps({"host": os.uname().nodename, "pid": 2**22 + 7, "started": 0}))
    status = unit_status("mini", run_cfg)
    assert status.state == "interrupted" and (status.units["in_flight"], status.units["interrupted"]) == (0, 1)


def test_plan_states_the_disk_a_run_writes_and_the_free_space(tmp_path):
    """SciFact BM25 -> tiny at r in {1,4}: doc store + BM25 index peak + run + units under cache_dir, two records."""
    from kalm_eval.plan import disk_line
    from kalm_eval.space import estimate

    cfg = compose_config("benchmark=beir/scifact", "reranker=kalm", "model=tiny", "compression=[1,4]",
                         f"cache_dir={tmp_path / 'cache'}", f"results_dir={tmp_path / 'results'}")
    needs = estimate(RunConfig.from_hydra(cfg, probe_paths=False))
    words = 5183 * 213.63
    assert needs.parts == {"doc store": int(words * 7.5 + 5183 * 40), "first-stage run": 300 * 100 * 18,
                           "bm25 index (peak while built)": int(2 * words * 4.5), "rerank units": 30000 * 2 * 16,
                           "result records": 2 * (2 * 300 * 100 * 18 + 30000 * 40)}
    assert needs.cache_bytes == sum(v for k, v in needs.parts.items() if k != "result records")
    line = disk_line(cfg)
    assert line.startswith(f"disk (estimate): cache_dir {tmp_path / 'cache'} 20.0 MB (free ")
    assert f"results {tmp_path / 'results'} 4.6 MB (free " in line
    # the shipped MIRACL configs (11 languages without stopwords) plan too
    assert disk_line(compose_config("benchmark=miracl", "retriever=bm25")).startswith("disk (estimate): cache_dir ")


def test_calibration_from_records(tmp_path):
    """Throughputs and the harness's own time (fixed + per pair) fitted from records of the same model; a dataset
    the calibration holds is timed with its own throughput (d2 scores at half the speed of the others)."""
    import json

    from kalm_eval.plan import UnitPlan, apply_calibration, calibrate

    for n, pairs in enumerate((100, 200, 400)):
        speed = 0.5 if n == 2 else 1.0
        scores = {1: pairs / (50 * speed), 4: pairs / (100 * speed)}
        for r, score_s in scores.items():
            record = tmp_path / f"d{n}" / f"r{r}"
            record.mkdir(parents=True)
            record.joinpath("metrics.json").write_text(json.dumps({
                "dataset": f"d{n}", "signature": f"s{n}{r}", "stages": {},
                "protocol": {"first_stage": {"signature": f"f{n}"},
                             "reranker": {"compression": r, "model": {"model": {"dtype": "float32"}}}},
                "timings": {"encode_s": 2.0, "score_s": score_s, "model_load_s": 1.0,
                            "total_s": 2.0 + sum(scores.values()) + 5.0 + 0.01 * pairs},
                "counts": {"pairs": pairs, "passages_encoded": 40},
                "provenance": {"config": {"model": {"name": "tiny"}}, "logged_knobs": {"model": {"device": "cpu"}}}}))
    cal = calibrate(tmp_path, "tiny")
    assert cal.runs == 3 and (cal.dtype, cal.device) == ("float32", "cpu")
    assert cal.passages_per_s == pytest.approx(20.0)
    assert cal.pairs_per_s == pytest.approx({1: 700 / (2 + 4 + 16), 4: 700 / (1 + 2 + 8)})
    assert cal.per_dataset["d2"]["pairs_per_s"] == pytest.approx({1: 25.0, 4: 50.0})
    assert cal.per_dataset["d0"]["pairs_per_s"] == pytest.approx({1: 50.0, 4: 100.0})
    assert cal.fixed_s == pytest.approx(5.0) and cal.per_pair_s == pytest.approx(0.01)
    own, other = UnitPlan("d2", 10, 100, pairs=1000, unique_passages=80), UnitPlan("d9", 10, 100, pairs=1000,
                                                                                    unique_passages=80)
    for plan in (own, other):
        apply_calibration(plan, cal, (1, 4), workers=2)
    assert own.rates_from == "this dataset" and own.score_s == pytest.approx(1000 / 25 + 1000 / 50)
    assert other.rates_from == "all datasets" and other.score_s == pytest.approx(1000 / (700 / 22) + 1000 / (700 / 11))
    assert own.wall_s == pytest.approx(5.0 + 0.01 * 1000 + (80 / 20 + own.score_s) / 2)
    with pytest.raises(ConfigError, match="no reranked record of model 'nano'"):
        calibrate(tmp_path, "nano")
