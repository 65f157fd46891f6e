"""How much a whole run costs beyond its timed stages (issue 17): `model=tiny` (the stand-in for a fast device, where
the harness's own work would show) reranks the BM25 top-100 of the first N SciFact test queries at
compression=[1,2,4,8,16,32]; the run's wall time is compared with the stages its record times itself:
first stage + one passage encoding (shared by every ratio) + the six decoder passes.

    python scripts/bench_overhead.py [--queries 40] [--repeats 3] [--data-dir ../shared/data]

Each repetition is a fresh process (`kalm-eval`, imports included) on a fresh cache and output directory, so nothing
is served from a previous run; the first stage is built in each (BM25 over the whole 5,183-passage corpus). Printed:
the process wall, the in-process wall (`timings.total_s` of the last record), the timed stages and their ratios, the
load average. The latency probe is switched off (`reranker.latency_batches=0`): it is an extra measurement, not part
of the run's work; `--with-latency` keeps it to show its cost. `model_load_s` of model=tiny is almost all the
one-off import of torch + transformers (lazy, so it falls inside the run); the ratio is printed with and without it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RATIOS = [1, 2, 4, 8, 16, 32]


def subset(source: Path, target: Path, n_queries: int) -> int:
    """SciFact in BEIR layout with its first `n_queries` judged test queries (the whole corpus)."""
    (target / "qrels").mkdir(parents=True)
    qrels = (source / "qrels" / "test.tsv").read_text().splitlines()
    judged: list[str] = []
    for line in qrels[1:]:
        qid = line.split("\t")[0]
        if qid not in judged:
            judged.append(qid)
    keep = set(judged[:n_queries])
    (target / "qrels" / "test.tsv").write_text("\n".join([qrels[0]] + [l for l in qrels[1:] if l.split("\t")[0] in keep]) + "\n")
    with gzip.open(source / "queries.jsonl.gz", "rt", encoding="utf-8") as fh, open(target / "queries.jsonl", "w") as out:
        out.writelines(line for line in fh if json.loads(line)["_id"] in keep)
    os.symlink(source / "corpus.jsonl.gz", target / "corpus.jsonl.gz")
    return len(keep)


def one_run(root: Path, work: Path, with_latency: bool, threads: int) -> dict:
    args = ["kalm-eval", "benchmark=local", f"benchmark.path={root}", "benchmark.label=scifact40", "retriever=bm25",
            "reranker=kalm", "model=tiny", f"compression=[{','.join(map(str, RATIOS))}]", "progress=false",
            f"cache_dir={work / 'cache'}", f"output_dir={work / 'out'}", f"hydra.run.dir={work / 'hydra'}"]
    if not with_latency:
        args.append("reranker.latency_batches=0")
    started = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)})
    process_wall = time.perf_counter() - started
    records = [json.loads(p.read_text()) for p in sorted((work / "out").glob("r*/metrics.json"))]
    assert len(records) == len(RATIOS), f"expected {len(RATIOS)} records, got {len(records)}"
    t = records[0]["timings"]
    decodes = sum(r["timings"]["score_s"] for r in records)
    timed = t["first_stage_s"] + t["encode_s"] + decodes
    in_process = max(r["timings"]["total_s"] for r in records)
    return {"process_wall_s": process_wall, "in_process_s": in_process, "first_stage_s": t["first_stage_s"],
            "encode_s": t["encode_s"], "decode_s": decodes, "model_load_s": t.get("model_load_s"), "timed_s": timed,
            "pairs": records[0]["counts"]["pairs"], "ratio_in_process": in_process / timed,
            "ratio_without_load": (in_process - (t.get("model_load_s") or 0.0)) / timed,
            "ratio_process": process_wall / timed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--with-latency", action="store_true", help="keep the warm latency probe on")
    parser.add_argument("--threads", type=int, default=1,
                        help="OMP/torch threads of the run (default 1: on a shared machine, spinning OpenMP threads "
                             "of a multi-threaded run inflate the model's time many-fold and hide the overhead)")
    a = parser.parse_args()
    source = a.data_dir / "beir" / "scifact"
    if not (source / "corpus.jsonl.gz").exists():
        sys.exit(f"no SciFact at {source} (--data-dir)")
    tmp = Path(tempfile.mkdtemp(prefix="kalm-overhead-"))
    try:
        n = subset(source, tmp / "data", a.queries)
        print(f"SciFact, first {n} judged test queries, BM25 top-100 -> model=tiny compression={RATIOS}, {a.threads} thread(s); "
              f"load average before: {os.getloadavg()[0]:.2f}")
        rows = []
        for k in range(a.repeats):
            row = one_run(tmp / "data", tmp / f"run{k}", a.with_latency, a.threads)
            rows.append(row)
            print(f"run {k + 1}: pairs {row['pairs']}, first stage {row['first_stage_s']:.2f} s + encode {row['encode_s']:.2f} s "
                  f"+ six decodes {row['decode_s']:.2f} s = timed {row['timed_s']:.2f} s; model load {row['model_load_s']:.2f} s; "
                  f"in-process total {row['in_process_s']:.2f} s ({row['ratio_in_process']:.3f}x timed, "
                  f"{row['ratio_without_load']:.3f}x without the model load); "
                  f"process wall {row['process_wall_s']:.2f} s ({row['ratio_process']:.3f}x timed); "
                  f"load {os.getloadavg()[0]:.2f}")
        print(f"median in-process / timed: {statistics.median(r['ratio_in_process'] for r in rows):.3f}x "
              f"({statistics.median(r['ratio_without_load'] for r in rows):.3f}x without the model load); "
              f"median process wall / timed: {statistics.median(r['ratio_process'] for r in rows):.3f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
