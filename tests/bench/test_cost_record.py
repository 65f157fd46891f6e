"""The cost-benchmark record (kalm_eval/bench/record.py) writes and reads its own file, and is the one reader: the
report and the planner read through it. The baselines' inputs follow the families' own layouts and limits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from kalm_eval.bench.baselines import BaselineScorer, preset_settings
from kalm_eval.bench.record import CostBenchmark, CostBenchmarkError, CostRow, load_cost_benchmark
from kalm_eval.fbnl.tiny_tokenizer import build_tiny_tokenizer
from kalm_eval.report import cost_benchmark as report_reader
from kalm_eval.rerank.bge_gemma import DEFAULT_PROMPT, PASSAGE_PREFIX, QUERY_PREFIX, SEP
from kalm_eval.rerank.qwen3 import PREFIX, SUFFIX, format_body

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = sorted((ROOT / "results" / "cost").glob("*.json"))


def test_the_report_reads_through_the_record():
    assert report_reader.load_cost_benchmark is load_cost_benchmark and report_reader.CostBenchmark is CostBenchmark


@pytest.mark.parametrize("path", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_results_read_and_write_back_unchanged(path, tmp_path):
    raw = json.loads(path.read_text())
    record = load_cost_benchmark(path)
    assert record.to_json() == raw
    again = record.write(tmp_path / path.name)
    assert json.loads((tmp_path / path.name).read_text()) == raw and again.rows == record.rows


def test_written_record_reads_back_equal_and_keeps_unknown_fields(tmp_path):
    row = CostRow(model="KaLM-Reranker-V1-Large", shape="large", r=4, device="cpu", dtype="bfloat16", ms_median=2.0,
                  ms_min=1.5, ms_max=2.5, relative_to_nano=31.0, pairs=2, relative_range=(30.0, 32.0),
                  flop_model_relative=33.0, paper_relative_cost=43.7, extra={"note": "kept"})
    record = CostBenchmark(path=None, created="2026-12-07T00:00:00+00:00", settings={"pairs": 2}, rows=(row,),
                           details={"total_s": 1.0})
    back = record.write(tmp_path / "sub" / "cost.json")
    assert back.rows == (row,) and back.rows[0].extra == {"note": "kept"}
    assert back.settings == {"pairs": 2} and back.details == {"total_s": 1.0} and back.path == tmp_path / "sub" / "cost.json"
    written = json.loads((tmp_path / "sub" / "cost.json").read_text())
    assert written["schema"] == "kalm-eval/cost-benchmark" and written["schema_version"] == 1
    assert written["rows"][0]["relative_to_nano_range"] == {"min": 30.0, "max": 32.0}
    assert "mfu" not in written["rows"][0]  # optional fields only when set
    with pytest.raises(CostBenchmarkError, match="at least one row"):
        CostBenchmark(path=None, created=None, settings={}, rows=()).write(tmp_path / "empty.json")


def test_record_imports_nothing_heavy():
    """Product code (report, plan) imports the record: it must not pull torch or the benchmark in."""
    code = ("import sys, kalm_eval.bench.record; "
            "heavy = [m for m in ('torch', 'transformers', 'kalm_eval.bench.cost', 'kalm_eval.testing') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


def test_plan_reads_the_benchmark_through_the_record(tmp_path):
    from kalm_eval.errors import ConfigError
    from kalm_eval.plan import PlanSettings, throughput_of

    path = tmp_path / "cost.json"
    CostBenchmark(path=None, created=None, settings={}, rows=(
        CostRow(model="KaLM-Reranker-V1-Nano", shape="nano", r=4, device="cpu", dtype="bfloat16", ms_median=2.0,
                ms_min=2.0, ms_max=2.0, relative_to_nano=1.0),)).write(path)
    assert throughput_of(PlanSettings(cost_benchmark=str(path)), "nano", (4,)) == {4: 500.0}
    path.write_text(json.dumps({"schema": "kalm-eval/cost-benchmark", "schema_version": 1, "rows": []}))
    with pytest.raises(ConfigError, match="non-empty"):
        throughput_of(PlanSettings(cost_benchmark=str(path)), "nano", (4,))


# ---- baselines' inputs: the families' layouts and the presets' limits (written from the layouts' definitions) ----


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def scorer(name, tokenizer):
    model = SimpleNamespace(config=SimpleNamespace(vocab_size=10**9))  # ids kept as they are
    return BaselineScorer(name, model, tokenizer, device=None, batch_size=4)


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


LONG = " ".join(["the water of the capital"] * 2000)  # ~10,000 tokens
QUERY = "what is the capital of water"


def test_qwen3_inputs_are_prefix_body_suffix_cut_to_the_preset_max_length(tokenizer):
    assert preset_settings("qwen3-reranker-4b").max_length == 8192
    s = scorer("qwen3-reranker-0.6b", tokenizer)
    short, long = s.sequences([(QUERY, "Given a query", "the water"), (QUERY, "Given a query", LONG)])
    prefix, suffix = ids(tokenizer, PREFIX), ids(tokenizer, SUFFIX)
    assert short == prefix + ids(tokenizer, format_body(QUERY, "Given a query", "the water")) + suffix
    assert len(long) == 8192 and long[: len(prefix)] == prefix and long[-len(suffix):] == suffix


def test_bge_gemma_inputs_follow_flagembedding_with_the_preset_limits(tokenizer):
    s = scorer("bge-reranker-v2-gemma", tokenizer)
    (seq,) = s.sequences([(LONG, None, LONG)])
    sep, prompt = ids(tokenizer, SEP), ids(tokenizer, DEFAULT_PROMPT)
    first = [tokenizer.bos_token_id] + ids(tokenizer, QUERY_PREFIX + LONG)[:384]  # query: 3/4 of max_length 512
    second = (sep + ids(tokenizer, PASSAGE_PREFIX + LONG)[:512])[: 512 + len(sep) + len(prompt) - len(first)]
    assert seq == first + second + sep + prompt


def test_cross_encoder_inputs_are_the_xlmr_pair_template_longest_first_to_512(tokenizer):
    s = scorer("bge-reranker-v2-m3", tokenizer)
    short, long = s.sequences([(QUERY, None, "the water"), (QUERY, None, LONG)])
    q = ids(tokenizer, QUERY)
    assert short == [0] + q + [2, 2] + ids(tokenizer, "the water") + [2]
    assert len(long) == 512 and long[: len(q) + 3] == [0] + q + [2, 2] and long[-1] == 2
