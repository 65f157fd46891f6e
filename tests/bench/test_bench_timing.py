"""kalm_eval/bench/timing.py: interleaved repetitions (order alternating), paired ratios per repetition."""

from __future__ import annotations

import torch

from kalm_eval.bench.timing import Timer, Variant, interleaved, paired_ratio, run_block, stats


def test_interleaved_warms_up_then_alternates_the_order():
    calls: list[str] = []
    seconds = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, Timer(torch.device("cpu")))
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then a-b, b-a, a-b
    assert {k: len(v) for k, v in seconds.items()} == {"a": 3, "b": 3}


def test_run_block_keeps_the_first_output_and_pairs_ratios_per_repetition():
    outputs = iter(range(100))
    v = Variant(key="v", kind="online", model="m", shape="nano", r=4, units=2, unit="pair", flops=1.0,
                run=lambda: next(outputs), warmup=lambda: None)
    c = Variant(key="c", kind="online", model="m", shape="nano", r=4, units=4, unit="pair", flops=1.0,
                run=lambda: None, warmup=lambda: None)
    run_block("b", [v, c], 3, Timer(torch.device("cpu")), log=lambda _: None)
    assert v.output == 0 and len(v.seconds) == len(c.seconds) == len(v.loads) == 3
    v.seconds, c.seconds = [2.0, 4.0, 3.0], [1.0, 1.0, 2.0]
    assert paired_ratio(v, c) == [4.0, 8.0, 3.0]  # (seconds / 2 pairs) / (seconds / 4 pairs), same repetition
    assert stats(paired_ratio(v, c)) == {"median": 4.0, "min": 3.0, "max": 8.0}
