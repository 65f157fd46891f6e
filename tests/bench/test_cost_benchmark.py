"""The cost benchmark's pieces that need no timing: real-shape configs, the FLOP model, subsets, the JSON it writes.

Nothing here times anything (kalm_eval/bench/, command lines in scripts/); the one end-to-end smoke of the script is
marked slow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from kalm_eval.bench import cost, flops, timing, workloads
from kalm_eval.report.cost_benchmark import load_cost_benchmark
from kalm_eval.testing.shapes import KALM_SHAPES, kalm_config, text_stack_parameters

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    """The benchmark's names, from the package modules that hold them."""
    return SimpleNamespace(StackDims=flops.StackDims, spread_subset=workloads.spread_subset, Variant=timing.Variant,
                           cost_row=cost.cost_row, parse_args=cost.parse_args)


def test_kalm_shapes_reproduce_the_paper_non_embedding_parameters():
    # reference §2: Non-Embedding = one text stack, exact from the §3.1 dims
    assert text_stack_parameters(KALM_SHAPES["nano"].text_config) == 100_325_376
    assert text_stack_parameters(KALM_SHAPES["small"].text_config) == 697_894_912
    assert text_stack_parameters(KALM_SHAPES["large"].text_config) == 3_209_008_128


def test_part_configs_keep_one_layer_of_the_other_stack():
    decoder_only = kalm_config("large", "decoder")
    assert decoder_only.decoder.num_hidden_layers == 34 and decoder_only.encoder.text_config.num_hidden_layers == 1
    encoder_only = kalm_config("small", "encoder")
    assert encoder_only.encoder.text_config.num_hidden_layers == 26 and encoder_only.decoder.num_hidden_layers == 1


def test_flop_model_same_states_ratio_is_the_documented_band(bench):
    """Reference (stock decoder + full-vocabulary head over the prompt) vs the online path. The head alone is worth
    2.49-2.64x for Nano at SciFact lengths and r >= 4 (the issue's 2.51-2.67x band; at r = 1 the pooled keys' K/V
    projections and attention grow, so the head's share shrinks); the last layer at the scored position only adds
    ~5 % (1/18 of the decoder), 2.62-2.78x in all."""
    nano = bench.StackDims.of_kalm("nano")

    def ratios(dims, q, n, r):
        m = -(-n // r)
        reference = dims.kalm_decoder(q, m) + dims.vocab_head(q)
        return reference / dims.kalm_decoder(q, m), reference / dims.kalm_online(q, m)

    for q, n, r in [(72, 300, 4), (78, 366, 4), (72, 300, 32), (90, 200, 32), (78, 366, 8)]:
        head_only, decoupled = ratios(nano, q, n, r)
        assert 2.49 < head_only < 2.64 and 2.62 < decoupled < 2.78, (q, n, r)
        assert 1.04 < decoupled / head_only < 1.06
    assert 2.1 < ratios(nano, 78, 366, 1)[0] < 2.3
    assert 1.1 < ratios(bench.StackDims.of_kalm("large"), 72, 300, 4)[1] < 1.3  # a 4B decoder dwarfs its head


def test_flop_model_relative_costs(bench):
    """Real matmul FLOPs do not reproduce the paper's analytic column (reference §9 says its formula is unknown):
    at the paper's derived lengths (43 prompt tokens, 1024-token passages at r = 4, T = 1059 for a cross-encoder)."""
    nano, large = bench.StackDims.of_kalm("nano"), bench.StackDims.of_kalm("large")
    q4b = bench.StackDims.of_baseline("qwen3-reranker-4b")
    q06 = bench.StackDims.of_baseline("qwen3-reranker-0.6b")
    assert round(q06.causal_lm(1059) / nano.kalm_online(43, 256), 1) == 88.2  # paper 42.4x
    assert round(q4b.causal_lm(1059) / large.kalm_online(43, 256), 1) == 22.1  # paper 236.8 / 43.7 = 5.4x
    assert round(large.kalm_online(43, 256) / nano.kalm_online(43, 256), 1) == 30.2  # paper 43.7x
    m3 = bench.StackDims.of_baseline("bge-reranker-v2-m3")
    assert m3.mlp_mats == 2 and m3.heads == m3.kv_heads == 16 and m3.head_dim == 64


def test_spread_subset_takes_quantiles(bench):
    lengths = [10, 50, 20, 40, 30, 60, 70, 80]
    assert bench.spread_subset(lengths, 2) == [4, 6]  # the 30 and the 70: quantiles 1/4 and 3/4
    assert bench.spread_subset(lengths, 20) == list(range(8))


def test_cost_rows_follow_the_report_schema(bench, tmp_path):
    v = bench.Variant(key="online/large/r4", kind="online", model="KaLM-Reranker-V1-Large", shape="large", r=4,
                      units=2, unit="pair", flops=1e9, run=lambda: None)
    summary = {"online/large/r4": {"ms_per_pair": {"median": 2.0, "min": 1.5, "max": 2.5}, "gflops": 0.5,
                                   "fraction_of_ceiling": 0.4}}
    row = bench.cost_row(v, summary, 31.0, "cpu", "bfloat16", rel={"min": 30.0, "max": 32.0}, flop=33.0).to_json()
    path = tmp_path / "cost.json"
    path.write_text(json.dumps({"schema": "kalm-eval/cost-benchmark", "schema_version": 1, "rows": [row]}))
    loaded = load_cost_benchmark(path)
    assert loaded.rows[0].relative_to_nano == 31.0 and loaded.rows[0].shape == "large"
    assert row["paper_relative_cost"] == 43.7 and row["flop_model_relative_to_nano"] == 33.0


def test_quick_mode_arguments(bench):
    args = bench.parse_args(["--quick"])
    assert args.sizes == [] and args.baselines == ["qwen3-reranker-0.6b"] and args.pairs == 4
    assert all(k == 1 for k in args.subset.values())
    with pytest.raises(SystemExit):
        bench.parse_args(["--sizes", "huge"])


@pytest.mark.slow
def test_quick_smoke_writes_a_report_readable_file(tmp_path):
    out = tmp_path / "cost.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_cost.py"), "--quick", "--synthetic", "--baselines",
                    "", "--repeats", "1", "--output", str(out)], check=True, cwd=ROOT, timeout=900)
    benchmark = load_cost_benchmark(out)
    assert {row.shape for row in benchmark.rows} == {"nano"}
