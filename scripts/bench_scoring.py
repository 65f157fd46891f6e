#!/usr/bin/env python
"""Benchmark KaLM decoupled scoring against reference-style scoring, on the real Nano shape (random weights).

(a) Scoring only. Same pooled passage states, same prompt ids, same batches:
      ours = DecoderScorer: decoder over the prompt + the yes/no rows of the LM head at the last position;
      ref  = FullLogitsScorer: the stock forward, LM head over all 262,144 tokens at every position.
(b) End to end over N queries x their top-k candidates:
      ours = KalmReranker: encode each unique passage once (pooled at every ratio in the same pass, cold cache),
             then decoder-only scoring with pairs batched across queries;  time = encode + score(r);
      ref  = ReferenceScorer: per pair, re-run the encoder, pool (reference algorithm), full forward.
      "warm" = ours when the passage cache is already filled (score only).
Both parts assert that the scores agree (bf16 tolerance) and print max |delta margin|.

Workload: --pairs-file TSV (query <TAB> passage per line, grouped by query), or a synthetic SciFact-like one:
~300-token passages, ~88-token prompts, each passage a candidate of ~6 queries. The default subset
(--queries 6 --depth 2: 12 pairs over 2 unique passages) keeps the run to a few minutes on 2 CPU cores in bf16
(CPUs without native bf16 run it slowly; the *ratios* between columns are the result, not the seconds).

    /work/venv/bin/python scripts/bench_scoring.py                      # default: bf16, 2 threads, r = 1,4,32
    /work/venv/bin/python scripts/bench_scoring.py --queries 12 --depth 10 --ratios 1,2,4,8,16,32
    /work/venv/bin/python scripts/bench_scoring.py --pairs-file pairs.tsv --queries 5 --depth 20
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from kalm_eval.fbnl.model import LoadedModel, ModelSpec, build_random_nano  # noqa: E402
from kalm_eval.fbnl.passages import PassageStore  # noqa: E402
from kalm_eval.fbnl.prompts import DEFAULT_INSTRUCTION, passage_token_ids, prompt_token_ids  # noqa: E402
from kalm_eval.fbnl.reference import FullLogitsScorer, ReferenceScorer  # noqa: E402
from kalm_eval.fbnl.rerank import KalmReranker, RerankSettings, ScoreRequest  # noqa: E402
from kalm_eval.fbnl.scorer import DecoderScorer  # noqa: E402

WORDS = (
    "protein expression cell cells gene genes patients treatment increased decreased risk study results disease "
    "mice human tumor cancer immune response signaling pathway receptor activity levels clinical trial dose "
    "association significant reduced induced compared control group analysis evidence blood brain heart virus "
    "infection therapy mutation regulation binding function role effect effects model data sample population"
).split()


@dataclass
class Workload:
    queries: list[str]
    candidates: list[list[str]]  # doc ids per query, in rank order
    passages: dict[str, str]  # doc id -> passage text
    description: str

    @property
    def pairs(self) -> int:
        return sum(len(c) for c in self.candidates)


def _text_with_tokens(count_tokens, target: int, rng: random.Random) -> str:
    words: list[str] = []
    while True:
        words.extend(rng.choice(WORDS) for _ in range(8))
        if count_tokens(" ".join(words)) >= target:
            break
    while len(words) > 1 and count_tokens(" ".join(words[:-1])) >= target:
        words.pop()
    return " ".join(words)


def synthetic_workload(loaded: LoadedModel, args) -> Workload:
    """SciFact-like: pool of ceil(Q*k/share) passages; query i ranks k consecutive passages of the pool, so
    each passage is a candidate of ~share queries."""
    rng = random.Random(args.seed)
    tokenizer = loaded.tokenizer
    passage_len = lambda text: len(passage_token_ids(tokenizer, text, 10**9))  # noqa: E731
    prompt_len = lambda text: len(prompt_token_ids(tokenizer, text, DEFAULT_INSTRUCTION, 10**9))  # noqa: E731
    pool_size = max(1, math.ceil(args.queries * args.depth / args.share))
    passages = {f"p{i}": _text_with_tokens(passage_len, args.passage_tokens, rng) for i in range(pool_size)}
    queries = [_text_with_tokens(prompt_len, args.prompt_tokens, rng) for _ in range(args.queries)]
    ids = list(passages)
    candidates = [[ids[(q * args.depth + j) % pool_size] for j in range(min(args.depth, pool_size))]
                  for q in range(args.queries)]
    return Workload(queries, candidates, passages,
                    f"synthetic SciFact-like: {args.queries} queries x top-{args.depth}, {pool_size} unique passages "
                    f"(~{args.passage_tokens} tokens), prompts ~{args.prompt_tokens} tokens")


def file_workload(path: Path, args) -> Workload:
    queries: list[str] = []
    candidates: list[list[str]] = []
    passages: dict[str, str] = {}
    by_text: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        query, passage = line.split("\t", 1)
        if not queries or queries[-1] != query:
            if len(queries) == args.queries:
                break
            queries.append(query)
            candidates.append([])
        if len(candidates[-1]) < args.depth:
            doc_id = by_text.setdefault(passage, f"p{len(by_text)}")
            passages[doc_id] = passage
            candidates[-1].append(doc_id)
    return Workload(queries, candidates, passages,
                    f"{path.name}: {len(queries)} queries x top-{args.depth}, {len(passages)} unique passages")


def _max_delta(a, b) -> float:
    return max(abs(x.margin - y.margin) for x, y in zip(a, b))


def part_a(loaded: LoadedModel, work: Workload, args, ratios: list[int], tol: float) -> list[dict]:
    """Scoring only, from the same pooled states."""
    pairs = [(q, d) for q, cands in zip(work.queries, work.candidates) for d in cands][: args.a_pairs]
    store = PassageStore(loaded, encode_batch_size=args.encode_batch_size)
    store.add({d: work.passages[d] for _, d in pairs}, ratios)  # untimed: both sides get these states
    prompts = [prompt_token_ids(loaded.tokenizer, q, None, loaded.spec.query_max_len) for q, _ in pairs]
    ours, ref = DecoderScorer(loaded, args.batch_size), FullLogitsScorer(loaded, args.batch_size)
    rows = []
    for ratio in ratios:
        states = store.pooled([d for _, d in pairs], ratio)
        ours.score(prompts[:1], states[:1])  # warm-up (first-call allocations) for both sides
        ref.score(prompts[:1], states[:1])
        started = time.perf_counter()
        ours_scores = ours.score(prompts, states)
        ours_s = time.perf_counter() - started
        started = time.perf_counter()
        ref_scores = ref.score(prompts, states)
        ref_s = time.perf_counter() - started
        delta = _max_delta(ours_scores, ref_scores)
        assert delta <= tol, f"(a) r={ratio}: scores differ by {delta} > {tol}"
        rows.append({"ratio": ratio, "pairs": len(pairs), "ours_s": ours_s, "ref_s": ref_s,
                     "speedup": ref_s / ours_s, "max_delta": delta})
    return rows


def part_b(loaded: LoadedModel, work: Workload, args, ratios: list[int], tol: float) -> tuple[list[dict], dict]:
    """End to end: ours (encode once + decoder-only) vs reference-style per-pair encode + full forward."""
    reranker = KalmReranker(loaded, RerankSettings(ratios=ratios, batch_size=args.batch_size,
                                                   encode_batch_size=args.encode_batch_size))
    reranker.prepare(work.passages)  # cold: no disk cache, every unique passage goes through the encoder once
    encode_s = reranker.stats()["encode_seconds"]
    requests = [ScoreRequest(q, None, c) for q, c in zip(work.queries, work.candidates)]
    triples = [(q, None, work.passages[d]) for q, cands in zip(work.queries, work.candidates) for d in cands]
    reference = ReferenceScorer(loaded, batch_size=args.batch_size)
    rows = []
    for ratio in ratios:
        started = time.perf_counter()
        ours_scores = [s for per_query in reranker.score_many(requests, ratio) for s in per_query]
        score_s = time.perf_counter() - started
        started = time.perf_counter()
        ref_scores = reference.score(triples, ratio)
        ref_s = time.perf_counter() - started
        delta = _max_delta(ours_scores, ref_scores)
        assert delta <= tol, f"(b) r={ratio}: scores differ by {delta} > {tol}"
        total = encode_s + score_s
        rows.append({"ratio": ratio, "pairs": len(triples), "encode_s": encode_s, "score_s": score_s,
                     "ours_s": total, "ref_s": ref_s, "speedup": ref_s / total, "warm_speedup": ref_s / score_s,
                     "max_delta": delta})
    return rows, reranker.stats()


def print_table(title: str, rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    print(f"\n{title}")
    header = " | ".join(f"{label:>{len(label) if len(label) > 8 else 8}}" for label, _, _ in columns)
    print(header)
    print("-" * len(header))
    for row in rows:
        cells = []
        for label, key, fmt in columns:
            width = len(label) if len(label) > 8 else 8
            cells.append(f"{format(row[key], fmt):>{width}}")
        print(" | ".join(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratios", default="1,4,32", help="pooling ratios, measured side by side")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--parts", default="a,b", help="which parts to run: a, b or a,b")
    parser.add_argument("--pairs-file", type=Path, help="TSV: query<TAB>passage per line, grouped by query")
    parser.add_argument("--queries", type=int, default=6, help="number of queries (subset of the file)")
    parser.add_argument("--depth", type=int, default=2, help="candidates per query (top-k)")
    parser.add_argument("--share", type=int, default=6, help="synthetic: queries each passage is a candidate of")
    parser.add_argument("--passage-tokens", type=int, default=300)
    parser.add_argument("--prompt-tokens", type=int, default=88)
    parser.add_argument("--a-pairs", type=int, default=6, help="pairs timed in part (a)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--encode-batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    ratios = [int(r) for r in args.ratios.split(",")]
    parts = set(args.parts.split(","))
    tol = 0.125 if args.dtype == "bfloat16" else 1e-4  # bf16: two quantisation steps of a margin near 8-16

    load_before = os.getloadavg()
    started = time.perf_counter()
    spec = ModelSpec(name="random-nano", dtype=args.dtype, device=args.device, seed=args.seed)
    loaded = build_random_nano(dtype=args.dtype, seed=args.seed, spec=spec)
    work = file_workload(args.pairs_file, args) if args.pairs_file else synthetic_workload(loaded, args)
    tokenizer = loaded.tokenizer
    mean_prompt = sum(len(prompt_token_ids(tokenizer, q, None, 512)) for q in work.queries) / len(work.queries)
    mean_passage = sum(len(passage_token_ids(tokenizer, t, 1024)) for t in work.passages.values()) / len(work.passages)
    print(f"model: random weights, Nano shape (d=640, 18+18 layers, vocab 262144), {args.dtype}, {args.device}, "
          f"torch threads {torch.get_num_threads()}, tokenizer {type(tokenizer).__name__} ({len(tokenizer)})")
    print(f"workload: {work.description}; {work.pairs} pairs; mean prompt {mean_prompt:.0f} tokens, "
          f"mean passage {mean_passage:.0f} tokens (doc_max_len 1024)")
    print(f"setup {time.perf_counter() - started:.1f}s; load average before: {load_before[0]:.2f} "
          f"(machine shared with others: absolute seconds are noisy, compare within a row)")

    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}}
    if "a" in parts:
        rows = part_a(loaded, work, args, ratios, tol)
        results["a"] = rows
        print_table("(a) scoring only, same pooled states: decoder + 2 logits vs stock forward with full logits",
                    rows, [("r", "ratio", "d"), ("pairs", "pairs", "d"), ("ours s", "ours_s", ".2f"),
                           ("ref s", "ref_s", ".2f"), ("speedup", "speedup", ".2f"),
                           ("max|dmargin|", "max_delta", ".2e")])
        print(f"target >= 2x: {'MET' if min(r['speedup'] for r in rows) >= 2 else 'NOT MET'} "
              f"(min {min(r['speedup'] for r in rows):.2f}x)")
    if "b" in parts:
        rows, stats = part_b(loaded, work, args, ratios, tol)
        results["b"] = rows
        results["b_stats"] = stats
        print_table("(b) end to end: encode once + pool all ratios + decoder-only vs per-pair encode + full forward",
                    rows, [("r", "ratio", "d"), ("pairs", "pairs", "d"), ("encode s", "encode_s", ".2f"),
                           ("score s", "score_s", ".2f"), ("ours s", "ours_s", ".2f"), ("ref s", "ref_s", ".2f"),
                           ("speedup", "speedup", ".2f"), ("warm speedup", "warm_speedup", ".2f"),
                           ("max|dmargin|", "max_delta", ".2e")])
        print(f"(encode s is one pass over {stats['unique_passages']} unique passages serving every ratio; "
              f"pooled vectors/passage: "
              + ", ".join(f"r={r}: {v:.1f}" for r, v in sorted(stats["pooled_vectors_per_passage"].items())) + ")")
        print(f"target >= 3x: {'MET' if min(r['speedup'] for r in rows) >= 3 else 'NOT MET'} "
              f"(min {min(r['speedup'] for r in rows):.2f}x)")
    print(f"\ntotal {time.perf_counter() - started:.1f}s; load average after: {os.getloadavg()[0]:.2f}")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
