"""The paper's cost column, measured: one cost benchmark, side by side in one run on the same pairs.

Workload: real SciFact BM25 top-100 pairs (kalm-eval's own first stage over --data-dir/beir/scifact), taken
passage-major as the engine does (passages in text-digest order, with every pair of the run that involves them,
until >= --pairs pairs over >= --passages passages): so the pairs keep SciFact's natural passage sharing. Without
the data: a synthetic workload with a realistic length spread (log-normal passages around 300 tokens, claims around
20 tokens, each passage a candidate of ~6 queries). Models: random weights in the real shapes (testing/shapes.py),
real Gemma 3 tokenizer (its token counts are used for every family; ids are taken modulo each model's vocabulary).

Rows (each timed as warm-up, then --repeats interleaved repetitions: every variant of a block once per repetition,
so load drifts hit all variants alike; median, min and max are reported):
  online       KaLM's online path: DecoderScorer (the scorer KalmReranker runs) over the prompt + pooled passage
               states already made (cached), yes/no rows of the LM head at the last position. Nano / Small / Large
               at every --ratios r.
  ref-same     reference-style scoring from the SAME pooled states: FullLogitsScorer (stock forward, LM head over
               all 262,144 tokens at every prompt position). ref-same / online = what the decoupled scorer buys.
  ref-e2e      ReferenceScorer: per pair, encoder + pooling + full forward (the checkpoint code's way), at
               --e2e-ratios; beside it ours-e2e = KalmReranker.score_chunk (each unique passage encoded once, then
               decoder-only scoring). ref-e2e / ours-e2e is the end-to-end ratio at the workload's passage sharing.
  encode       offline cost: the encoder + pooling per passage (PassageEncoder), ms per passage.
  baselines    Qwen3-Reranker-0.6B / 4B, bge-reranker-v2-gemma (causal LMs, logits at the last position only, as
               the harness's rerankers do), bge-reranker-v2-m3 (XLM-R cross-encoder): the whole pair is online.
  ceiling      the machine's bf16 (or --dtype) matmul throughput on the decoder's own linear shapes (a batch of
               --batch-size prompts), measured in the same run: the "how fast can this hardware go" row.
Big models are timed on a quantile-spread subset of the pairs (--subset, CPU defaults small=4, large=2, ...; on
CUDA every model takes every pair); each block also times Nano on the SAME subset in the same repetitions, and a
row's "relative to Nano" is the median over repetitions of (its ms/pair) / (Nano's ms/pair on those pairs in that
repetition): KaLM sizes vs Nano at the same r, baselines vs Nano at r=4.

FLOP model: kalm_eval/bench/flops.py (stated there). Timing: kalm_eval/bench/timing.py. Workloads:
kalm_eval/bench/workloads.py. Baselines' inputs: kalm_eval/bench/baselines.py (the families' own layout code).
The result file: kalm_eval/bench/record.py (`CostBenchmark`, written and read by the record itself).

    python scripts/bench_cost.py                                   # CPU default (~14 min, 1 thread, bf16; peak RSS ~10 GiB)
    python scripts/bench_cost.py --quick                           # CI-sized smoke (Nano + Qwen3-0.6B, 1-2 min)
    python scripts/bench_cost.py --device cuda --output cost.json  # GPU: + MFU vs the device's bf16 peak, memory
    kalm-eval-report cost_benchmark=cost.json                      # the report's "measured (device)" column
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from kalm_eval.bench.baselines import PRESET, BaselineScorer
from kalm_eval.bench.flops import StackDims
from kalm_eval.bench.record import CostBenchmark, CostRow
from kalm_eval.bench.timing import (
    Timer,
    Variant,
    bf16_peak_tflops,
    ceiling_run,
    max_rss_gib,
    paired_ratio,
    run_block,
    stats,
)
from kalm_eval.bench.workloads import (
    Workload,
    read_workload,
    run_workload,
    scifact_run,
    spread_subset,
    synthetic_run,
    write_workload,
)
from kalm_eval.fbnl.model import LoadedModel
from kalm_eval.fbnl.passages import PassageEncoder
from kalm_eval.fbnl.pooling import pooled_length
from kalm_eval.fbnl.prompts import passage_token_ids, prompt_token_ids
from kalm_eval.fbnl.scorer import DecoderScorer
from kalm_eval.records import compression_label
from kalm_eval.rerank.base import Variant as RerankVariant
from kalm_eval.rerank.kalm import KalmReranker
from kalm_eval.report.paper import load_paper
from kalm_eval.testing.reference import FullLogitsScorer, ReferenceScorer
from kalm_eval.testing.shapes import BASELINE_ROWS, KALM_SHAPES, build_random_baseline, build_random_kalm

ROOT = Path(__file__).resolve().parents[2]  # the checkout (scripts/, results/); its parent holds shared/data

@functools.cache
def paper_relative_cost(model: str) -> float | None:
    """The v1 paper's "relative online cost" of a row (analytic, formula not published; Nano = 1.0x), read from
    the published numbers (results/paper/v1/cost.yaml), not restated here."""
    cell, _ = load_paper("v1").relative_cost(model)
    return None if cell is None else cell.value


DEFAULT_SUBSET_CPU = {"small": 2, "large": 1, "qwen3-reranker-0.6b": 2, "bge-reranker-v2-m3": 2,
                      "bge-reranker-v2-gemma": 1, "qwen3-reranker-4b": 1, "qwen3-reranker-8b": 1}


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.device = torch.device(args.device)
        self.dtype_name = args.dtype
        self.dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[args.dtype]
        self.timer = Timer(self.device)
        self.variants: dict[str, Variant] = {}
        self.blocks: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self.device_name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else \
            (platform.processor() or platform.machine())
        self.peak_tflops = args.peak_tflops or (
            bf16_peak_tflops(self.device_name, self.dtype) if self.device.type == "cuda" else None)

    def log(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def add(self, v: Variant) -> Variant:
        self.variants[v.key] = v
        return v

    def block(self, name: str, variants: list[Variant], build_s: float) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        run_block(name, variants, self.args.repeats, self.timer, self.log)
        info = {"block": name, "variants": [v.key for v in variants], "build_s": round(build_s, 1),
                "max_rss_gib": round(max_rss_gib(), 2)}
        if self.device.type == "cuda":
            info["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        self.blocks.append(info)
        self.log(f"    peak RSS so far {info['max_rss_gib']:.2f} GiB")
        for v in variants:  # the closures hold the block's model and scorers: free them before the next block
            v.run = v.warmup = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ---- workload facts ---------------------------------------------------------------------------------------
    def prepare(self, work: Workload, tokenizer) -> None:
        self.work, self.tokenizer = work, tokenizer
        self.prompt_ids = [prompt_token_ids(tokenizer, q, work.instruction, 512) for q in work.queries]
        self.passage_ids = [passage_token_ids(tokenizer, p, 1024) for p in work.passages]
        self.q_len = [len(self.prompt_ids[q]) for q, _ in work.pairs]
        self.n_len = [len(self.passage_ids[p]) for _, p in work.pairs]
        self.all_rows = list(range(len(work.pairs)))

    def subset(self, name: str) -> list[int]:
        k = self.args.subset.get(name)
        if k is None or self.device.type == "cuda" and name not in self.args.subset_explicit:
            return self.all_rows
        return spread_subset([a + b for a, b in zip(self.q_len, self.n_len)], k)

    def kalm_flops(self, dims: StackDims, rows: Sequence[int], r: int, reference: bool = False) -> float:
        """FLOP model of the online path (reference=True: the stock decoder forward, without the vocabulary head)."""
        per_pair = dims.kalm_decoder if reference else dims.kalm_online
        return sum(per_pair(self.q_len[i], pooled_length(self.n_len[i], r)) for i in rows)

    # ---- KaLM ---------------------------------------------------------------------------------------------------
    def pooled_for(self, loaded: LoadedModel, rows: Sequence[int], ratios: Sequence[int]) -> dict[int, list[torch.Tensor]]:
        docs = sorted({self.work.pairs[i][1] for i in rows})
        texts = {str(d): self.work.passages[d] for d in docs}
        pooled, _ = PassageEncoder(loaded, encode_batch_size=self.args.encode_batch_size).pooled(texts, ratios)
        return {r: [pooled[r][str(self.work.pairs[i][1])] for i in rows] for r in ratios}

    def online_variant(self, loaded: LoadedModel, shape: str, rows: list[int], r: int,
                       states: list[torch.Tensor], key: str, kind: str = "online") -> Variant:
        scorer = DecoderScorer(loaded, batch_size=self.args.batch_size)
        prompts = [self.prompt_ids[self.work.pairs[i][0]] for i in rows]
        dims = StackDims.of_kalm(shape)
        return self.add(Variant(
            key=key, kind=kind, model=KALM_SHAPES[shape].paper_row, shape=shape, r=r, units=len(rows), unit="pair",
            flops=self.kalm_flops(dims, rows, r), run=lambda: scorer.score(prompts, states),
            warmup=None if self._full_warmup else (lambda: scorer.score([p[:16] for p in prompts[:1]], [s[:4] for s in states[:1]])),
            ceiling=f"ceiling/{shape}"))

    @property
    def _full_warmup(self) -> bool:
        """CUDA: warm up on the timed inputs themselves (kernel choice, allocator); CPU: a tiny call suffices."""
        return self.device.type == "cuda"

    def ceiling_variant(self, dims: StackDims, label: str, shape: str, pairs: int) -> Variant:
        """Activations of one batch as the block runs it: min(pairs, batch) prompts of the mean padded length."""
        rows = min(pairs, self.args.batch_size) * max(8, -(-int(statistics.mean(self.q_len)) // 8) * 8)
        one = sum(2 * rows * i * o for i, o in dims.linear_shapes())
        calls = max(1, round((2e10 if self.device.type == "cpu" else 2e12) / one))
        run, flops = ceiling_run(dims, rows, self.dtype, self.device, calls=calls)
        return self.add(Variant(key=f"ceiling/{label}", kind="ceiling", model=f"matmul ceiling ({label} shapes)",
                                shape=shape, r=None, units=1, unit="call", flops=flops, run=run,
                                extra={"rows": rows, "linear_shapes": dims.linear_shapes()}))

    def nano_block(self, nano: LoadedModel) -> None:
        a, rows, ratios = self.args, self.all_rows, self.args.ratios
        dims = StackDims.of_kalm("nano")
        pooled = self.pooled_for(nano, rows, sorted(set(ratios) | set(a.e2e_ratios) | set(a.ref_ratios)))
        self.nano_pooled = pooled
        variants = [self.ceiling_variant(dims, "nano", "nano", len(rows))]
        for r in ratios:
            variants.append(self.online_variant(nano, "nano", rows, r, pooled[r], f"online/nano/{compression_label(r)}"))
        prompts = [self.prompt_ids[self.work.pairs[i][0]] for i in rows]
        ref = FullLogitsScorer(nano, batch_size=a.batch_size)
        head = sum(dims.vocab_head(self.q_len[i]) for i in rows)
        for r in a.ref_ratios if not a.no_reference else []:
            states = pooled[r]
            variants.append(self.add(Variant(
                key=f"ref-same/nano/{compression_label(r)}", kind="ref-same", model="reference-style (same pooled states)", shape="nano",
                r=r, units=len(rows), unit="pair", flops=self.kalm_flops(dims, rows, r, reference=True) + head,
                run=lambda states=states: ref.score(prompts, states),
                warmup=None if self._full_warmup else (lambda states=states: ref.score(prompts[:2], states[:2])),
                companion=f"online/nano/{compression_label(r)}", ceiling="ceiling/nano")))
        chunk = self.work.chunk(rows)
        triples = self.work.triples(rows)
        docs = sorted({self.work.pairs[i][1] for i in rows})
        enc_flops = sum(dims.encoder(len(self.passage_ids[d])) for d in docs)
        enc_pair_flops = sum(dims.encoder(self.n_len[i]) for i in rows)
        encoder = PassageEncoder(nano, encode_batch_size=a.encode_batch_size)
        texts = {str(d): self.work.passages[d] for d in docs}
        variants.append(self.add(Variant(
            key="encode/nano", kind="encode", model="KaLM-Reranker-V1-Nano", shape="nano", r=None, units=len(docs),
            unit="passage", flops=enc_flops, run=lambda: encoder.pooled(texts, ratios),
            warmup=None if self._full_warmup else (lambda: encoder.pooled(dict(list(texts.items())[:1]), ratios)),
            ceiling="ceiling/nano")))
        for r in a.e2e_ratios if not a.no_reference else []:
            reranker = KalmReranker(nano, compression=[r], batch_size=a.batch_size, encode_batch_size=a.encode_batch_size)
            reference = ReferenceScorer(nano, batch_size=a.batch_size)
            online = self.kalm_flops(dims, rows, r)
            stock = self.kalm_flops(dims, rows, r, reference=True)
            variants.append(self.add(Variant(
                key=f"ours-e2e/nano/{compression_label(r)}", kind="ours-e2e", model="KalmReranker (encode once + decoder)",
                shape="nano", r=r, units=len(rows), unit="pair", flops=enc_flops + online,
                run=lambda reranker=reranker, r=r: reranker.score_chunk(chunk).scores[RerankVariant(compression=r).label],
                warmup=None if self._full_warmup else (lambda reranker=reranker: reranker.score_chunk(self.work.chunk(rows[:2]))),
                ceiling="ceiling/nano", extra={"passages": len(docs)})))
            variants.append(self.add(Variant(
                key=f"ref-e2e/nano/{compression_label(r)}", kind="ref-e2e", model="ReferenceScorer (encode per pair + full forward)",
                shape="nano", r=r, units=len(rows), unit="pair", flops=enc_pair_flops + stock + head,
                run=lambda reference=reference, r=r: reference.score(triples, r),
                warmup=None if self._full_warmup else (lambda reference=reference, r=r: reference.score(triples[:2], r)),
                companion=f"ours-e2e/nano/{compression_label(r)}", ceiling="ceiling/nano")))
        self.block("nano", variants, 0.0)

    def nano_companions(self, nano: LoadedModel, label: str, rows: list[int], ratios: Sequence[int]) -> list[Variant]:
        """Nano on the same pairs, repeated to fill one batch: Nano's per-pair cost on these pair lengths at its
        throughput efficiency (a batch of 1-2 Nano prompts leaves a CPU mostly idle; a 4B model's does not)."""
        rows = (rows * -(-self.args.batch_size // len(rows)))[: max(len(rows), self.args.batch_size)]
        pooled = self.pooled_for(nano, rows, ratios)
        return [self.online_variant(nano, "nano", rows, r, pooled[r], f"nano@{label}/{compression_label(r)}", kind="nano-companion")
                for r in ratios]

    def kalm_size_block(self, nano: LoadedModel, shape: str) -> None:
        a = self.args
        rows = self.subset(shape)
        started = time.perf_counter()
        loaded = build_random_kalm(shape, dtype=self.dtype_name, parts="decoder", tokenizer=self.tokenizer,
                                   device=a.device, attn_implementation=a.attn)
        build_s = time.perf_counter() - started
        dims = StackDims.of_kalm(shape)
        pooled = self.pooled_for(loaded, rows, a.ratios)  # 1-layer encoder stub: right shapes, cheap
        variants = [self.ceiling_variant(dims, shape, shape, len(rows))]
        variants += self.nano_companions(nano, shape, rows, a.ratios)
        for r in a.ratios:
            v = self.online_variant(loaded, shape, rows, r, pooled[r], f"online/{shape}/{compression_label(r)}")
            v.companion = f"nano@{shape}/{compression_label(r)}"
            variants.append(v)
        for r in a.size_reference_ratios if not a.no_reference else []:
            ref = FullLogitsScorer(loaded, batch_size=a.batch_size)
            prompts = [self.prompt_ids[self.work.pairs[i][0]] for i in rows]
            head = sum(dims.vocab_head(self.q_len[i]) for i in rows)
            states = pooled[r]
            variants.append(self.add(Variant(
                key=f"ref-same/{shape}/{compression_label(r)}", kind="ref-same", model="reference-style (same pooled states)",
                shape=shape, r=r, units=len(rows), unit="pair", flops=self.kalm_flops(dims, rows, r, reference=True) + head,
                run=lambda states=states, ref=ref, prompts=prompts: ref.score(prompts, states),
                warmup=None if self._full_warmup else (lambda states=states, ref=ref, prompts=prompts: ref.score([p[:16] for p in prompts[:1]], [s[:4] for s in states[:1]])),
                companion=f"online/{shape}/{compression_label(r)}", ceiling=f"ceiling/{shape}")))
        self.block(shape, variants, build_s)
        del loaded, pooled, variants
        gc.collect()
        if shape not in a.encode_sizes:
            return
        # Offline cost: the encoder of this size (built alone), on the subset's passages, beside Nano's.
        started = time.perf_counter()
        encoder_model = build_random_kalm(shape, dtype=self.dtype_name, parts="encoder", tokenizer=self.tokenizer,
                                          device=a.device, attn_implementation=a.attn)
        build_s = time.perf_counter() - started
        docs = sorted({self.work.pairs[i][1] for i in rows})[: a.encode_passages.get(shape, 10**6)]
        texts = {str(d): self.work.passages[d] for d in docs}
        variants = []
        for label, model in ((f"nano@{shape}", nano), (shape, encoder_model)):
            encoder = PassageEncoder(model, encode_batch_size=a.encode_batch_size)
            d = StackDims.of_kalm("nano" if model is nano else shape)
            variants.append(self.add(Variant(
                key=f"encode/{label}", kind="encode" if model is not nano else "nano-companion",
                model=KALM_SHAPES["nano" if model is nano else shape].paper_row, shape="nano" if model is nano else shape,
                r=None, units=len(docs), unit="passage", flops=sum(d.encoder(len(self.passage_ids[x])) for x in docs),
                run=lambda encoder=encoder: encoder.pooled(texts, [4]),
                warmup=None if self._full_warmup else (lambda encoder=encoder: encoder.pooled({"w": "warm up"}, [4])),
                companion=None if model is nano else f"encode/nano@{shape}", ceiling=f"ceiling/{shape}")))
        self.block(f"{shape}-encoder", variants, build_s)
        del encoder_model, variants
        gc.collect()

    def baseline_block(self, nano: LoadedModel, name: str) -> None:
        a = self.args
        rows = self.subset(name)
        started = time.perf_counter()
        model = build_random_baseline(name, dtype=self.dtype_name, device=a.device, attn_implementation=a.attn)
        build_s = time.perf_counter() - started
        scorer = BaselineScorer(name, model, self.tokenizer, self.device, a.batch_size)
        sequences = scorer.sequences(self.work.triples(rows))
        dims = StackDims.of_baseline(name)
        flops = sum(dims.cross_encoder(len(s)) if scorer.family == "cross_encoder" else dims.causal_lm(len(s))
                    for s in sequences)
        label = name
        variants = [self.ceiling_variant(dims, label, PRESET[name], len(rows))]
        variants += self.nano_companions(nano, label, rows, [4])
        variants.append(self.add(Variant(
            key=f"baseline/{name}", kind="baseline", model=BASELINE_ROWS[name][0], shape=PRESET[name], r=None,
            units=len(rows), unit="pair", flops=flops, run=lambda scorer=scorer: scorer.score(sequences),
            warmup=None if self._full_warmup else (lambda scorer=scorer: scorer.score([s[:32] for s in sequences[:1]])),
            companion=f"nano@{label}/r4", ceiling=f"ceiling/{label}",
            extra={"mean_tokens": statistics.mean(len(s) for s in sequences)})))
        self.block(name, variants, build_s)
        del model, scorer, variants
        gc.collect()


def summarise(bench: Bench) -> dict[str, Any]:
    V = bench.variants
    out: dict[str, Any] = {"variants": {}}
    for key, v in V.items():
        ms = v.ms()
        med_s = statistics.median(v.seconds)
        gflops = v.flops / med_s / 1e9
        row = {"kind": v.kind, "model": v.model, "shape": v.shape, "r": v.r, "units": v.units, "unit": v.unit,
               f"ms_per_{v.unit}": stats(ms), "gflop_per_call": v.flops / 1e9, "gflops": gflops,
               "load_avg": stats(v.loads), **v.extra}
        if v.ceiling and v.ceiling in V:
            ceiling = V[v.ceiling]
            row["fraction_of_ceiling"] = gflops / (ceiling.flops / statistics.median(ceiling.seconds) / 1e9)
        if bench.peak_tflops:
            row["mfu"] = gflops / (bench.peak_tflops * 1e3)
        if v.companion and v.companion in V:
            row["ratio_to_" + V[v.companion].key] = stats(paired_ratio(v, V[v.companion]))
        out["variants"][key] = row
    return out


def flop_ratio(bench: Bench, a: str, b: str) -> float:
    va, vb = bench.variants[a], bench.variants[b]
    return (va.flops / va.units) / (vb.flops / vb.units)


def report(bench: Bench, summary: dict[str, Any]) -> list[CostRow]:
    """Print the tables; return the cost-benchmark rows (report schema)."""
    V, S, log = bench.variants, summary["variants"], bench.log
    device = bench.device_name if bench.device.type == "cuda" else f"cpu ({bench.device_name}, {torch.get_num_threads()} threads)"
    log("")
    log(f"{'variant':<34} {'units':>6} {'ms/unit median [min-max]':>30} {'GFLOP/s':>9} {'%ceil':>6}"
        + (f" {'MFU':>6}" if bench.peak_tflops else "") + f" {'load':>5}")
    for key, v in V.items():
        s = S[key]
        ms = s[f"ms_per_{v.unit}"]
        frac = s.get("fraction_of_ceiling")
        log(f"{key:<34} {v.units:>4} {v.unit[:2]} {ms['median']:>11.2f} [{ms['min']:.2f}-{ms['max']:.2f}]".ljust(73)
            + f" {s['gflops']:>9.1f} {'' if frac is None else f'{100 * frac:5.1f}%':>6}"
            + (f" {100 * s['mfu']:5.1f}%" if bench.peak_tflops else "") + f" {s['load_avg']['median']:>5.2f}")

    log("\nDecoupled scoring vs reference-style, same pooled states (FullLogitsScorer / DecoderScorer):")
    for key in [k for k in V if k.startswith("ref-same/")]:
        v = V[key]
        ratio = S[key][f"ratio_to_{v.companion}"]
        log(f"  {v.shape:<6} r={v.r:<3} measured {ratio['median']:.2f}x [{ratio['min']:.2f}-{ratio['max']:.2f}]   "
            f"FLOP model {flop_ratio(bench, key, v.companion):.2f}x")
    for key in [k for k in V if k.startswith("ref-e2e/")]:
        v = V[key]
        ratio = S[key][f"ratio_to_{v.companion}"]
        passages = V[v.companion].extra["passages"]
        log(f"\nEnd to end ({bench.work.source}, {v.units} pairs over {passages} passages = {v.units / passages:.1f} "
            f"pairs/passage; run-wide sharing {bench.work.dataset_sharing:.1f}), r={v.r}: ReferenceScorer / "
            f"KalmReranker.score_chunk measured {ratio['median']:.2f}x [{ratio['min']:.2f}-{ratio['max']:.2f}]   "
            f"FLOP model {flop_ratio(bench, key, v.companion):.2f}x")

    rows: list[CostRow] = []
    log(f"\nRelative online cost (Nano = 1.0; paired with Nano on the same pairs in each repetition; device {device}, "
        f"{bench.dtype_name}):")
    log(f"  {'model':<26} {'r':>3} {'pairs':>5} {'ms/pair':>10} {'measured':>10} {'FLOP model':>11} {'paper (analytic)':>17}")
    nano_online = {v.r: v for v in V.values() if v.kind == "online" and v.shape == "nano"}
    for r, v in sorted(nano_online.items()):
        rows.append(cost_row(v, S, 1.0, device, bench.dtype_name))
        log(f"  {v.model:<26} {r:>3} {v.units:>5} {S[v.key]['ms_per_pair']['median']:>10.2f} {1.0:>9.2f}x "
            f"{1.0:>10.2f}x {paper_relative_cost(v.model):>16.1f}x")
    for v in V.values():
        if v.kind not in ("online", "baseline") or v.shape == "nano" or not v.companion:
            continue
        rel = S[v.key][f"ratio_to_{v.companion}"]
        flops = flop_ratio(bench, v.key, v.companion)
        v.extra["flop_model_relative"] = flops
        rows.append(cost_row(v, S, rel["median"], device, bench.dtype_name, rel=rel, flop=flops))
        paper = paper_relative_cost(v.model)
        log(f"  {v.model:<26} {'-' if v.r is None else v.r:>3} {v.units:>5} {S[v.key]['ms_per_pair']['median']:>10.2f} "
            f"{rel['median']:>9.2f}x {flops:>10.2f}x {'n/a' if paper is None else f'{paper:.1f}x':>17}"
            + ("" if v.r is not None else "  (vs Nano r=4)"))
    enc = [v for v in V.values() if v.key.startswith("encode/") and v.kind == "encode"]
    if enc:
        log("\nOffline encode cost per passage (encoder + MEP pooling at every r):")
        for v in enc:
            s = S[v.key]
            extra = f"  = {s['ratio_to_' + v.companion]['median']:.2f}x Nano on the same passages" if v.companion else ""
            log(f"  {v.model:<26} {s['ms_per_passage']['median']:>10.2f} ms/passage over {v.units} passages{extra}")
    return rows


def cost_row(v: Variant, S: dict, relative: float, device: str, dtype: str, rel=None, flop=None) -> CostRow:
    """One row of the result file (kalm_eval/bench/record.py), rounded as the file keeps it."""
    ms = S[v.key]["ms_per_pair"]
    s = S[v.key]
    return CostRow(
        model=v.model, shape=v.shape, r=v.r, device=device, dtype=dtype, ms_median=round(ms["median"], 6),
        ms_min=round(ms["min"], 6), ms_max=round(ms["max"], 6), relative_to_nano=round(relative, 4), pairs=v.units,
        gflops=round(s["gflops"], 2),
        relative_range=(round(rel["min"], 4), round(rel["max"], 4)) if rel else None,
        flop_model_relative=round(flop, 3) if flop else None,
        fraction_of_ceiling=round(s["fraction_of_ceiling"], 4) if "fraction_of_ceiling" in s else None,
        mfu=round(s["mfu"], 5) if "mfu" in s else None, paper_relative_cost=paper_relative_cost(v.model))


def parse_mapping(text: str) -> dict[str, int]:
    out = {}
    for item in filter(None, text.split(",")):
        key, value = item.split("=")
        out[key.strip()] = int(value)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"], help="never float16")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: 1 on CPU: on this shared 2-core machine two OpenMP threads "
                        "under load ran 2-5x slower and far noisier than one; give --threads 2 on a quiet machine)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repetitions (>= 3 for the median)")
    p.add_argument("--sizes", default="nano,small,large", help="KaLM shapes (nano is always timed)")
    p.add_argument("--baselines", default="qwen3-reranker-0.6b,bge-reranker-v2-m3,bge-reranker-v2-gemma,qwen3-reranker-4b",
                   help=f"real-shape baselines, from {', '.join(BASELINE_ROWS)}; '' for none")
    p.add_argument("--ratios", default="1,4,32", help="MEP ratios r of the online / same-states rows")
    p.add_argument("--ref-ratios", default="4", help="ratios of Nano's same-states reference rows (e.g. 1,4,32)")
    p.add_argument("--e2e-ratios", default="4", help="ratios of the end-to-end reference rows ('' for none)")
    p.add_argument("--size-reference-ratios", default="", help="ratios of the same-states reference for Small/Large")
    p.add_argument("--no-reference", action="store_true", help="skip every reference-style row")
    p.add_argument("--pairs", type=int, default=64, help="at least this many pairs ...")
    p.add_argument("--passages", type=int, default=8, help="... over at least this many unique passages")
    p.add_argument("--subset", default="", help="pairs per big model, e.g. large=2,qwen3-reranker-4b=2 (CPU defaults: "
                   + ",".join(f"{k}={v}" for k, v in DEFAULT_SUBSET_CPU.items()) + "; CUDA: every pair)")
    p.add_argument("--encode-sizes", default="small,large",
                   help="sizes whose encoder (offline cost) is timed; '' for none")
    p.add_argument("--encode-passages", default="large=1,small=1", help="passages timed per size encoder")
    p.add_argument("--batch-size", type=int, default=None, help="online/reference batch (default: cpu 16, cuda 64)")
    p.add_argument("--encode-batch-size", type=int, default=16)
    p.add_argument("--attn", default="auto", choices=["auto", "grouped", "sdpa", "eager"],
                   help="attention kernel of every model (auto: grouped on CPU, sdpa on CUDA, as model.attn_implementation)")
    p.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--cache-dir", type=Path, default=ROOT / "results" / "cache")
    p.add_argument("--synthetic", action="store_true", help="synthetic workload even when SciFact is there")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: table by name)")
    p.add_argument("--quick", action="store_true", help="CI-sized smoke: Nano + Qwen3-0.6B, one passage's pairs, r=4,32")
    p.add_argument("--output", type=Path, help="write the cost-benchmark JSON (kalm_eval/bench/record.py)")
    p.add_argument("--workload", type=Path, help="read the first-stage run from a file --export-workload wrote")
    p.add_argument("--export-workload", type=Path, help="write the first-stage run used (queries, passages, top-k) "
                   "as JSON(.gz): a GPU machine without the data or kalm-eval's first-stage packages reads it back")
    p.add_argument("--export-only", action="store_true", help="stop after --export-workload")
    p.add_argument("--rerank-queries", type=int, default=0,
                   help="also rerank the top-k of this many queries end to end with a Nano-shape KalmReranker "
                        "(engine units, cold encode + decoder at --rerank-ratio): pairs/s, ms/pair p50/p95, MFU, memory")
    p.add_argument("--rerank-ratio", type=int, default=4)
    p.add_argument("--rerank-depth", type=int, default=None, help="rerank depth (default: the workload's, 100)")
    p.add_argument("--rerank-only", action="store_true", help="only the rerank measurement (--output gets its JSON)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.pairs, args.passages = min(args.pairs, 4), min(args.passages, 1)
        if args.sizes == p.get_default("sizes"):
            args.sizes = "nano"
        if args.baselines == p.get_default("baselines"):
            args.baselines = "qwen3-reranker-0.6b"
        if args.ratios == p.get_default("ratios"):
            args.ratios = "4,32"
    args.ratios = [int(x) for x in args.ratios.split(",") if x]
    args.e2e_ratios = [int(x) for x in args.e2e_ratios.split(",") if x]
    args.ref_ratios = [int(x) for x in args.ref_ratios.split(",") if x]
    args.size_reference_ratios = [int(x) for x in args.size_reference_ratios.split(",") if x]
    args.sizes = [s for s in args.sizes.split(",") if s and s != "nano"]
    args.encode_sizes = [s for s in args.encode_sizes.split(",") if s]
    args.baselines = [b for b in args.baselines.split(",") if b]
    for name in args.sizes:
        if name not in KALM_SHAPES:
            p.error(f"--sizes: unknown {name!r} (nano, small, large)")
    for name in args.baselines:
        if name not in BASELINE_ROWS:
            p.error(f"--baselines: unknown {name!r} ({', '.join(BASELINE_ROWS)})")
    explicit = parse_mapping(args.subset)
    args.subset_explicit = set(explicit)
    args.subset = {**DEFAULT_SUBSET_CPU, **({k: 1 for k in DEFAULT_SUBSET_CPU} if args.quick else {}), **explicit}
    args.encode_passages = parse_mapping(args.encode_passages)
    if args.batch_size is None:
        args.batch_size = 64 if args.device == "cuda" else 16
    from kalm_eval.fbnl.spec import resolve_attn_implementation

    args.attn = resolve_attn_implementation(args.attn, args.device)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device visible")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads or args.device == "cpu":
        torch.set_num_threads(args.threads or 1)
    bench = Bench(args)
    load_start = os.getloadavg()
    started = time.perf_counter()
    from kalm_eval.testing.gemma_tokenizer import gemma3_tokenizer_or_none
    from kalm_eval.fbnl.tiny_tokenizer import build_tiny_tokenizer

    tokenizer = gemma3_tokenizer_or_none()
    tokenizer_name = "gemma3 (262,144)" if tokenizer is not None else "tiny word-level (fallback)"
    tokenizer = tokenizer or build_tiny_tokenizer()
    scifact = args.data_dir / "beir" / "scifact" / "corpus.jsonl.gz"
    if args.workload:
        full = read_workload(args.workload)
    elif scifact.exists() and not args.synthetic:
        full = scifact_run(args.data_dir, args.cache_dir)
    else:
        full = synthetic_run(tokenizer, args.seed)
    if args.export_workload:
        write_workload(full, args.export_workload)
        print(f"wrote {args.export_workload}")
        if args.export_only:
            return 0
    work = run_workload(full, args.pairs, args.passages)
    bench.prepare(work, tokenizer)
    bench.log(f"cost benchmark: device {args.device} ({bench.device_name}), {args.dtype}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, attention {args.attn}, batch {args.batch_size}, repeats "
              f"{args.repeats}, tokenizer {tokenizer_name}")
    bench.log(f"workload: {work.description}")
    bench.log(f"  prompt tokens mean {statistics.mean(bench.q_len):.1f} (min {min(bench.q_len)}, max {max(bench.q_len)}); "
              f"passage tokens mean {statistics.mean(bench.n_len):.1f} (min {min(bench.n_len)}, max {max(bench.n_len)})")
    bench.log(f"load average at start: {' '.join(f'{x:.2f}' for x in load_start)} ({os.cpu_count()} CPUs; shared "
              "machine: compare ratios measured side by side, not absolute speeds)")

    nano = build_random_kalm("nano", dtype=args.dtype, parts="full", tokenizer=tokenizer, device=args.device,
                             attn_implementation=args.attn)
    rerank = None
    if args.rerank_queries:
        rerank = rerank_speed(bench, nano, full, args.rerank_queries)
        if args.rerank_only:
            if args.output:
                args.output.parent.mkdir(parents=True, exist_ok=True)
                args.output.write_text(json.dumps(rerank, indent=2))
            return 0
    bench.nano_block(nano)
    for shape in args.sizes:
        bench.kalm_size_block(nano, shape)
    for name in args.baselines:
        bench.baseline_block(nano, name)

    summary = summarise(bench)
    rows = report(bench, summary)
    agreement = check_agreement(bench)
    load_end = os.getloadavg()
    total = time.perf_counter() - started
    bench.log(f"\nscores: {agreement}")
    bench.log(f"total {total:.0f}s; load average at end: {' '.join(f'{x:.2f}' for x in load_end)}")
    if args.output:
        record = CostBenchmark(
            path=args.output, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            settings={"workload": work.source, "pairs": len(work.pairs), "passages": len(work.passages),
                      "prompt_tokens_mean": round(statistics.mean(bench.q_len), 1),
                      "passage_tokens_mean": round(statistics.mean(bench.n_len), 1),
                      "batch_size": args.batch_size, "repeats": args.repeats, "attention": args.attn,
                      "threads": torch.get_num_threads(), "load_average_start": round(load_start[0], 2),
                      "load_average_end": round(load_end[0], 2),
                      "relative_to_nano": "median over repetitions of ms/pair / Nano's ms/pair on the same pairs "
                                          "in the same repetition (baselines: vs Nano r=4)"},
            rows=tuple(rows),
            details={"variants": summary["variants"], "blocks": bench.blocks, "args": {
                k: (sorted(v) if isinstance(v, set) else str(v) if isinstance(v, Path) else v)
                for k, v in vars(args).items()}, "torch": torch.__version__, "total_s": round(total, 1),
                "workload": work.description, "scores": agreement, "rerank": rerank})
        record.write(args.output)  # read back: the report can read it
        bench.log(f"wrote {args.output}")
    return 0


def rerank_speed(bench: Bench, nano: LoadedModel, full: dict[str, Any], n_queries: int) -> dict[str, Any]:
    """A whole rerank of n queries x top-k as kalm-eval runs it: engine units (RerankJob, 512 passages per unit),
    KalmReranker.score_chunk per unit (each passage encoded once, then decoder-only scoring), then the harness's
    warm latency probe (rerank/latency.py). Nano shape, random weights."""
    from kalm_eval.records import Candidate, RankedList
    from kalm_eval.rerank.engine import RerankJob
    from kalm_eval.rerank.latency import latency_chunk, measure_latency

    a, r = bench.args, bench.args.rerank_ratio
    depth = min(full["depth"], a.rerank_depth or full["depth"])
    rankings = [RankedList(q, tuple(Candidate(d, -float(i)) for i, d in enumerate(ids)))
                for q, ids in list(full["run"].items())[:n_queries]]
    job = RerankJob.build(rankings, depth=depth, query_text=full["queries"].__getitem__,
                          instruction=full["instruction"], passage_text=full["passages"].__getitem__,
                          chunk_passages=512)
    reranker = KalmReranker(nano, compression=[r], batch_size=a.batch_size, encode_batch_size=a.encode_batch_size)
    dims = StackDims.of_kalm("nano")
    q_tokens = {q: len(prompt_token_ids(bench.tokenizer, t, full["instruction"], 512)) for q, t in full["queries"].items()}
    n_tokens = {d: len(passage_token_ids(bench.tokenizer, full["passages"][d], 1024))
                for d in {c.doc_id for rk in rankings for c in rk.candidates[:depth]}}
    online_flops = sum(dims.kalm_online(q_tokens[rk.query_id], pooled_length(n_tokens[c.doc_id], r))
                       for rk in rankings for c in rk.candidates[:depth])
    encode_flops = sum(dims.encoder(n) for n in n_tokens.values())
    if bench.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(bench.device)
    warm = job.scoring_chunk(job.unit_pairs()[0][: 2 * a.batch_size], full["passages"].__getitem__)
    reranker.score_chunk(warm)  # warm-up (kernels, allocator)
    encode_s = score_s = 0.0
    bench.timer.sync()
    started = time.perf_counter()
    for rows in job.unit_pairs():
        out = reranker.score_chunk(job.scoring_chunk(rows, full["passages"].__getitem__))
        encode_s += out.counters["encode_seconds"]
        score_s += out.variant_counters[RerankVariant(compression=r).label]["score_seconds"]
    bench.timer.sync()
    total = time.perf_counter() - started
    per_batch = min(depth, a.batch_size)
    chunk = latency_chunk(rankings, pairs_per_batch=per_batch, count=12, query_text=full["queries"].__getitem__,
                          instruction=full["instruction"], passage_text=full["passages"].__getitem__)
    latency = measure_latency(reranker, chunk, RerankVariant(compression=r), pairs_per_batch=per_batch,
                              warmup=2 if len(chunk.queries) > 4 else 1) if chunk else None
    result = {"queries": len(rankings), "pairs": job.pairs, "passages": job.unique_texts, "units": job.chunks,
              "compression": r, "total_s": total, "encode_s": encode_s, "score_s": score_s,
              "pairs_per_s": job.pairs / total, "online_pairs_per_s": job.pairs / score_s,
              "encode_passages_per_s": job.unique_texts / encode_s, "online_gflops": online_flops / score_s / 1e9,
              "encode_gflops": encode_flops / encode_s / 1e9, "latency": latency, "load_average": os.getloadavg()[0],
              "device": bench.device_name, "dtype": bench.dtype_name, "batch_size": a.batch_size}
    if bench.peak_tflops:
        result["online_mfu"] = result["online_gflops"] / (bench.peak_tflops * 1e3)
        result["encode_mfu"] = result["encode_gflops"] / (bench.peak_tflops * 1e3)
    if bench.device.type == "cuda":
        result["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated(bench.device) / 2**30
    lat = latency or {}
    bench.log(f"\nNano-shape rerank ({full['name']}, {len(rankings)} queries x top-{depth} = {job.pairs} pairs over "
              f"{job.unique_texts} passages, r={r}, {job.chunks} units): {total:.1f}s = {result['pairs_per_s']:.1f} "
              f"pairs/s end to end (encode {encode_s:.1f}s, score {score_s:.1f}s = {result['online_pairs_per_s']:.1f} "
              f"pairs/s online); warm latency ms/pair p50 {lat.get('ms_per_pair_p50', float('nan')):.3f} p95 "
              f"{lat.get('ms_per_pair_p95', float('nan')):.3f} ({lat.get('pairs_per_batch')} pairs/batch); online "
              f"{result['online_gflops']:.1f} GFLOP/s, encode {result['encode_gflops']:.1f} GFLOP/s"
              + (f"; MFU online {100 * result['online_mfu']:.1f}%, encode {100 * result['encode_mfu']:.1f}%"
                 if bench.peak_tflops else "")
              + (f"; peak memory {result['max_memory_allocated_gib']:.2f} GiB" if "max_memory_allocated_gib" in result
                 else "") + f"; load average {result['load_average']:.2f}")
    return result


def check_agreement(bench: Bench) -> str:
    """Reference-style and decoupled scores of the same pairs must agree (bf16: a few quantisation steps)."""
    V = bench.variants
    tol = 0.125 if bench.dtype == torch.bfloat16 else 1e-3
    worst = 0.0
    for key, v in V.items():
        if v.kind in ("ref-same", "ref-e2e") and v.output is not None and V[v.companion].output is not None:
            ours = V[v.companion].output
            ours = ours if isinstance(ours, list) else ours.scores
            delta = max(abs(a.margin - b.margin) for a, b in zip(v.output, ours))
            worst = max(worst, delta)
            if delta > tol:
                raise AssertionError(f"{key}: margins differ from {v.companion} by {delta} > {tol}")
    return f"reference-style and decoupled margins agree (max |delta margin| {worst:.2e} <= {tol})"
