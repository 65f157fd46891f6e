#!/usr/bin/env python
"""Bounded memory of passage-major reranking, measured: peak RSS of a whole `kalm-eval` process reranking ~30k vs
~300k unique candidate passages with model=tiny at compression [1, 4, 32] (issue "Paper-scale reranking",
acceptance 2). The synthetic corpora and first-stage runs are generated in a temp dir (never committed).

    python scripts/bench_rerank_memory.py [--work /tmp/kalm-mem] [--sizes 30000 300000] [--words 40]

Each size: Q = size / 100 queries, each with 100 distinct candidates (so the unique candidates = size), given as a
TREC run (retriever=trec_run); passages of `--words` random words. Printed per size: unique passages, units, wall
time, peak RSS (/usr/bin/time %M: the whole process, Python + torch included) and the load average."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

WORDS = ("protein cell gene risk patient disease treatment increase study effect human mouse cancer blood brain "
         "heart virus immune response expression level drug dose trial sample analysis evidence claim support "
         "water energy light space city country history science research computer network language system").split()


def write_dataset(root: Path, unique: int, words: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    queries = unique // 100
    root.mkdir(parents=True, exist_ok=True)
    (root / "qrels").mkdir(exist_ok=True)
    with gzip.open(root / "corpus.jsonl.gz", "wt", encoding="utf-8") as fh:
        for i in range(unique):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(words // 2, words * 3 // 2)))
            fh.write(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n")
    with gzip.open(root / "queries.jsonl.gz", "wt", encoding="utf-8") as fh:
        for q in range(queries):
            fh.write(json.dumps({"_id": f"q{q}", "text": " ".join(rng.choice(WORDS) for _ in range(8))}) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"q{q}\td{q * 100 + rng.randrange(100)}\t1\n" for q in range(queries)))
    with gzip.open(root / "run.trec.gz", "wt") as fh:
        for q in range(queries):
            for rank in range(100):
                fh.write(f"q{q} Q0 d{q * 100 + rank} {rank + 1} {100 - rank} synthetic\n")
    return root


def measure(root: Path, work: Path, label: str) -> dict:
    command = ["/usr/bin/time", "-f", "%M %e", sys.executable, "-m", "kalm_eval", "benchmark=local",
               f"benchmark.path={root}", f"benchmark.label={label}", f"cache_dir={work / ('cache-' + label)}",
               f"output_dir={work / ('out-' + label)}", "retriever=trec_run", f"retriever.path={root / 'run.trec.gz'}",
               "reranker=kalm", "model=tiny", "model.doc_max_len=128", "compression=[1,4,32]", "progress=false",
               "reranker.latency_batches=3"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=work)
    if done.returncode != 0:
        raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
    peak_kb, wall = re.findall(r"^(\d+) ([\d.]+)$", done.stderr, re.M)[-1]
    record = json.loads((work / f"out-{label}" / "r4" / "metrics.json").read_text())
    return {"unique_passages": record["counts"]["unique_passages"], "units": record["counts"]["units"],
            "pairs": record["counts"]["pairs"], "wall_s": float(wall), "peak_rss_mb": int(peak_kb) / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/kalm-mem"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[30_000, 300_000])
    parser.add_argument("--words", type=int, default=40)
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    rows = []
    for size in args.sizes:
        root = write_dataset(args.work / f"data-{size}", size, args.words)
        load = os.getloadavg()
        started = time.perf_counter()
        row = measure(root, args.work, f"u{size}")
        row["load"] = load
        rows.append(row)
        print(f"{size:>8} unique: {row['unique_passages']} passages, {row['pairs']} pairs, {row['units']} units, "
              f"wall {row['wall_s']:.0f} s, peak RSS {row['peak_rss_mb']:.0f} MB (load {load[0]:.2f}; "
              f"{time.perf_counter() - started:.0f} s incl. generation)", flush=True)
    if len(rows) > 1:
        print(f"peak RSS ratio largest/smallest: {rows[-1]['peak_rss_mb'] / rows[0]['peak_rss_mb']:.2f} "
              f"for {rows[-1]['unique_passages'] / rows[0]['unique_passages']:.0f}x the passages")
    shutil.rmtree(args.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
