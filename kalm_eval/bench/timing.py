"""Timing for the benchmarks: a device-synchronised timer, interleaved repetitions, medians and paired ratios, and
the matmul ceiling (the machine's throughput on a model's own linear shapes, measured in the same run).

Every comparison is timed as warm-up, then interleaved repetitions (every variant once per repetition, the order
alternating), so load drifts hit all variants alike; a ratio is paired per repetition (`paired_ratio`)."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from kalm_eval.bench.flops import StackDims

# Dense bf16 peak (TFLOP/s, no sparsity) by device-name fragment, for MFU; --peak-tflops overrides.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "H800": 989.0, "GH200": 989.0, "B200": 2250.0, "A100": 312.0,
                    "A800": 312.0, "L40S": 362.0, "L40": 181.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0,
                    "RTX 4090": 165.0, "RTX 3090": 71.0, "V100": 125.0}


def bf16_peak_tflops(device_name: str, dtype: torch.dtype) -> float | None:
    """The device's dense peak by name (tf32 ~ half of bf16 dense); None for a device not in the table."""
    for key, value in BF16_PEAK_TFLOPS.items():
        if key.lower() in device_name.lower():
            return value if dtype == torch.bfloat16 else value / 2
    return None


@dataclass
class Variant:
    key: str
    kind: str  # online | ref-same | ref-e2e | ours-e2e | encode | baseline | ceiling | nano-companion
    model: str  # paper row name (or a label)
    shape: str
    r: int | None
    units: int  # pairs (or passages for encode, or matmul calls for ceiling)
    unit: str  # "pair" | "passage" | "call"
    flops: float  # per call, FLOP model
    run: Callable[[], Any] | None
    warmup: Callable[[], Any] | None = None
    companion: str | None = None  # key of the Nano variant timed on the same pairs (relative cost)
    ceiling: str | None = None  # key of the ceiling variant of the same shapes
    seconds: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)
    output: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def ms(self) -> list[float]:
        return [1000.0 * s / self.units for s in self.seconds]


class Timer:
    def __init__(self, device: torch.device):
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        self.sync()
        started = time.perf_counter()
        out = fn()
        self.sync()
        return time.perf_counter() - started, out


def run_block(name: str, variants: list[Variant], repeats: int, timer: Timer, log: Callable[[str], None]) -> None:
    """Warm-up every variant, then `repeats` interleaved repetitions (each variant once per repetition)."""
    started = time.perf_counter()
    for v in variants:
        (v.warmup or v.run)()
    timer.sync()
    for rep in range(repeats):
        order = variants if rep % 2 == 0 else list(reversed(variants))  # alternate the order: no fixed position bias
        for v in order:
            seconds, out = timer(v.run)
            v.seconds.append(seconds)
            v.loads.append(os.getloadavg()[0])
            if v.output is None:
                v.output = out
    log(f"  block {name}: {len(variants)} variants x {repeats} repetitions in {time.perf_counter() - started:.0f}s "
        f"(load average {os.getloadavg()[0]:.2f})")

def interleaved(calls: dict[str, Callable[[], Any]], repeats: int, timer: Timer) -> dict[str, list[float]]:
    """Warm-up each call once, then `repeats` interleaved repetitions (order alternating): seconds per call."""
    for fn in calls.values():
        fn()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for rep in range(repeats):
        for name in (list(calls) if rep % 2 == 0 else list(reversed(calls))):
            seconds[name].append(timer(calls[name])[0])
    return seconds


def ceiling_run(dims: StackDims, rows: int, dtype: torch.dtype, device: torch.device, calls: int = 1
                ) -> tuple[Callable[[], Any], float]:
    """Matmuls of the decoder's own linear shapes on a [rows, in] activation: what this hardware does at best."""
    generator = torch.Generator().manual_seed(0)
    mats = [(torch.randn(rows, i, generator=generator).to(device, dtype),
             torch.randn(o, i, generator=generator).to(device, dtype)) for i, o in dims.linear_shapes()]
    flops = calls * sum(2 * rows * i * o for i, o in dims.linear_shapes())

    def run() -> None:
        with torch.inference_mode():
            for _ in range(calls):
                for x, w in mats:
                    torch.nn.functional.linear(x, w)

    return run, flops


def max_rss_gib() -> float:
    """Peak resident set of this process so far (Linux: ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def stats(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def paired_ratio(v: Variant, c: Variant) -> list[float]:
    return [(a / v.units) / (b / c.units) for a, b in zip(v.seconds, c.seconds)]
