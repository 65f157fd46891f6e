#!/usr/bin/env python
"""Scale benchmarks of the first stage on synthetic corpora (scripts/synthetic_corpus.py); not part of the test run.

Every phase runs in its own Python process, so each peak RSS is that of a whole process (ru_maxrss and VmHWM;
RssAnon = heap only, sampled) and nothing is warm that should be cold. Printed side by side per phase: wall time,
CPU time, peak RSS, and the 1-minute load average (start / max / end) of this shared machine.

    python scripts/synthetic_corpus.py --docs 10000000 --out /tmp/syn10m --queries 1000   # + run.trec (100 x 10)
    python scripts/bench_first_stage.py docstore --data /tmp/syn10m --cache /tmp/syn10m-cache
        # `kalm-eval retriever=trec_run reranker=kalm model=tiny` on run.trec with an empty cache (its first open
        # builds the corpus index) under /usr/bin/time -v, then a fresh open + warm random lookups
    python scripts/synthetic_corpus.py --prefix-of /tmp/syn10m --docs 2000000 --out /tmp/syn2m
    python scripts/bench_first_stage.py dense --data /tmp/syn2m --cache /tmp/syn2m-cache
        # random vectors through the real shard/search path: kill -9 while encoding, resume, brute-force check
    python scripts/synthetic_corpus.py --prefix-of /tmp/syn10m --docs 5000000 --out /tmp/syn5m
    python scripts/bench_first_stage.py bm25 --data /tmp/syn5m --cache /tmp/syn5m-cache
        # build + save the index (first run), then reuse it memory-mapped (second run); runs must be identical

Add --report FILE to keep the numbers as JSON."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULT = "BENCH-RESULT "


# ---------------------------------------------------------------------------------------------------------------
# measurement helpers (child side)


def _status(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Monitor:
    """Samples RssAnon and the load average every half second while a phase runs."""

    def __init__(self):
        self.started = time.perf_counter()
        self.cpu0 = os.times()
        self.load_start = os.getloadavg()[0]
        self.load_max = self.load_start
        self.anon_max = _status("RssAnon") or 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.load_max = max(self.load_max, os.getloadavg()[0])
            self.anon_max = max(self.anon_max, _status("RssAnon") or 0)

    def finish(self, **extra) -> dict:
        self._stop.set()
        self._thread.join()
        cpu = os.times()
        return {
            "wall_s": round(time.perf_counter() - self.started, 2),
            "cpu_s": round((cpu.user - self.cpu0.user) + (cpu.system - self.cpu0.system), 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "vm_hwm_mb": round((_status("VmHWM") or 0) / 2**20, 1),
            "peak_rss_anon_mb": round(max(self.anon_max, _status("RssAnon") or 0) / 2**20, 1),
            "load_start": round(self.load_start, 2),
            "load_max": round(max(self.load_max, os.getloadavg()[0]), 2),
            "load_end": round(os.getloadavg()[0], 2),
            **extra,
        }


def _dataset(data: Path, cache: Path):
    from kalm_eval.data.beir import load_beir
    from kalm_eval.data.quirks import Quirks

    return load_beir(data, name="synthetic", split="test", quirks=Quirks(), joiner=" ", cache_dir=cache)


def _corpus_file(data: Path) -> Path:
    for name in ("corpus.jsonl", "corpus.jsonl.gz"):
        if (data / name).exists():
            return data / name
    raise SystemExit(f"{data}: no corpus.jsonl[.gz]")


def _write_run(path: Path, rankings) -> int:
    from kalm_eval.retrieval.runfile import write_trec

    return write_trec(path, rankings, tag="bench")


# ---------------------------------------------------------------------------------------------------------------
# phases (each in its own process)


def phase_docstore_build(args) -> dict:
    from kalm_eval.data.docstore import DocStore

    monitor = Monitor()
    store = DocStore(_corpus_file(args.data), args.cache)
    return monitor.finish(docs=len(store), index_bytes=sum(f["bytes"] for f in store._meta["files"].values()))


def _timed(fn, count: int) -> dict:
    """Items per second of fn(), by wall clock and by this process's CPU time (the machine is shared)."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return {"per_s_wall": round(count / wall), "per_s_cpu": round(count / max(cpu, 1e-9)), "wall_s": round(wall, 3)}


def phase_docstore_open(args) -> dict:
    import numpy as np

    from kalm_eval.data.docstore import DocStore

    monitor = Monitor()
    t0 = time.perf_counter()
    store = DocStore(_corpus_file(args.data), args.cache)
    open_s = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    n = len(store)
    # 100 queries x 10 candidates, as a reranker reads them (ids drawn outside the timed part)
    batches = [store.ids_at(rng.integers(0, n, size=args.candidates).tolist()) for _ in range(args.reads)]
    got: list = []
    reads = _timed(lambda: got.extend(store.get_many(ids) for ids in batches), args.reads * args.candidates)
    assert all(d.id == i for ids, docs in zip(batches, got) for d, i in zip(docs, ids))
    ids = store.ids_at(rng.integers(0, n, size=args.lookups).tolist())
    out: dict = {}
    out["positions (vectorised id -> position)"] = _timed(lambda: store.positions(ids), len(ids))
    out["contains (one id at a time)"] = _timed(lambda: [doc_id in store for doc_id in ids], len(ids))
    # documents: the first pass reads their lines from wherever the page cache has them; the second is warm
    out["getitem first pass (id -> Document)"] = _timed(lambda: [store[doc_id] for doc_id in ids], len(ids))
    out["getitem warm (id -> Document)"] = _timed(lambda: [store[doc_id] for doc_id in ids], len(ids))
    out["get_many x10 warm (id -> Document)"] = _timed(
        lambda: [store.get_many(ids[i:i + 10]) for i in range(0, len(ids), 10)], len(ids))
    return monitor.finish(docs=n, open_s=round(open_s, 4), reads=f"{args.reads} queries x {args.candidates} docs",
                          reads_timing=reads, lookups=len(ids), lookup_rates=out)


def phase_dense(args) -> dict:
    """The real DenseRetriever with the encoder switched to deterministic random vectors (`random:<dim>`)."""
    from kalm_eval.retrieval.dense import DenseRetriever, DenseSettings

    monitor = Monitor()
    dataset = _dataset(args.data, args.cache)
    settings = DenseSettings(model=f"random:{args.dim}", store_dtype="float16", device="cpu",
                             shard_docs=args.shard_docs, batch_size=1024)
    retriever = DenseRetriever(settings, cache_dir=args.cache)
    queries = _write_run(args.run, retriever.retrieve(dataset, args.depth))
    store = retriever.shard_store(dataset)
    return monitor.finish(docs=len(dataset.corpus), queries=queries, units=store.units,
                          encoded_units=len(retriever.encoded_units), shard_dir=str(store.root))


def phase_dense_check(args) -> dict:
    """Brute force for sampled queries, independently of the running top-k: every score of every passage in float64
    from the stored shards (the exact reference), the k-th value by np.partition, then the run rule (score desc,
    doc id desc). A float32 search can only differ where two passages are closer than float32 rounding (~1e-7):
    such swaps are counted separately, and any other difference is a failure."""
    import numpy as np

    from kalm_eval.retrieval.dense import DenseRetriever, DenseSettings
    from kalm_eval.retrieval.dense_encoders import RandomEncoder
    from kalm_eval.retrieval.runfile import iter_trec

    monitor = Monitor()
    dataset = _dataset(args.data, args.cache)
    settings = DenseSettings(model=f"random:{args.dim}", store_dtype="float16", device="cpu",
                             shard_docs=args.shard_docs)
    store = DenseRetriever(settings, cache_dir=args.cache).shard_store(dataset)
    run = {r.query_id: r for r in iter_trec(args.run)}
    rng = np.random.default_rng(7)
    queries = list(dataset.queries.values())
    sample = [queries[i] for i in sorted(rng.choice(len(queries), size=min(args.sample, len(queries)), replace=False))]
    q = RandomEncoder(args.dim).encode_queries([x.text for x in sample]).astype(np.float64)
    scores = np.empty((len(sample), store.docs), dtype=np.float64)
    for unit in range(store.units):
        start, stop = store.bounds(unit)
        scores[:, start:stop] = q @ np.asarray(store.load(unit), dtype=np.float64).T
    equal = near_tie_swaps = 0
    max_delta = 0.0
    failures = []
    for row, query in zip(scores, sample):
        kth = np.partition(row, -args.depth)[-args.depth]
        cand = np.flatnonzero(row >= kth)
        pairs = sorted(sorted(zip(dataset.corpus.ids_at(cand.tolist()), row[cand].tolist()), reverse=True),
                       key=lambda p: -p[1])[:args.depth]
        got = run[query.id].candidates
        max_delta = max(max_delta, max(abs(s - c.score) for (_, s), c in zip(pairs, got)))
        if [d for d, _ in pairs] == [c.doc_id for c in got]:
            equal += 1
            continue
        exact = dict(pairs)
        # same documents, and every out-of-order pair is a near tie in the exact scores
        swaps_ok = {c.doc_id for c in got} == set(exact) and all(
            exact[a.doc_id] >= exact[b.doc_id] - 1e-6 for a, b in zip(got, got[1:]))
        near_tie_swaps += swaps_ok
        if not swaps_ok:
            failures.append(query.id)
    return monitor.finish(sampled_queries=len(sample), top_k=args.depth, equal_to_brute_force=equal,
                          equal_up_to_near_tie_swaps=near_tie_swaps, failures=failures,
                          max_score_delta_vs_float64=max_delta)


def phase_bm25(args) -> dict:
    from kalm_eval.retrieval.bm25 import BM25Retriever, BM25Settings

    monitor = Monitor()
    dataset = _dataset(args.data, args.cache)
    retriever = BM25Retriever(BM25Settings(), cache_dir=args.cache)
    t0 = time.perf_counter()
    index = retriever.load_index(dataset)
    index_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    queries = _write_run(args.run, retriever.retrieve(dataset, args.depth))
    search_s = time.perf_counter() - t0
    meta = json.loads((retriever.index_path / "kalm_index.json").read_text())
    del index
    return monitor.finish(docs=len(dataset.corpus), queries=queries, index_built=retriever.index_built,
                          index_s=round(index_s, 2), search_s=round(search_s, 2), index_stats=meta["stats"],
                          index_bytes=sum(f["bytes"] for f in meta["files"].values()))


PHASES = {"docstore-build": phase_docstore_build, "docstore-open": phase_docstore_open, "dense": phase_dense,
          "dense-check": phase_dense_check, "bm25": phase_bm25}


# ---------------------------------------------------------------------------------------------------------------
# driver (parent side)


def _child_args(args, **extra) -> list[str]:
    out = ["--data", str(args.data), "--cache", str(args.cache)]
    for key in ("reads", "candidates", "lookups", "dim", "shard_docs", "depth", "sample"):
        out += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    for key, value in extra.items():
        out += [f"--{key.replace('_', '-')}", str(value)]
    return out


def run_phase(name: str, args, label: str | None = None, kill_when=None, **extra) -> dict:
    """Run one phase in a fresh interpreter; `kill_when()` -> True makes the parent SIGKILL it (resume tests)."""
    cmd = [sys.executable, __file__, "phase", name, *_child_args(args, **extra)]
    print(f"$ {' '.join(cmd)}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    killed = False
    if kill_when is not None:
        while proc.poll() is None:
            if kill_when():
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.2)
    out, _ = proc.communicate()
    result = {"phase": label or name, "wall_s": round(time.perf_counter() - started, 2), "killed": killed,
              "returncode": proc.returncode}
    for line in out.splitlines():
        if line.startswith(RESULT):
            result.update(json.loads(line[len(RESULT):]))
    if proc.returncode != 0 and not killed:
        raise SystemExit(f"phase {name} failed with exit code {proc.returncode}")
    if killed:
        result["load_end"] = round(os.getloadavg()[0], 2)
    return result


def _table(results: list[dict]) -> str:
    cols = ["phase", "wall_s", "cpu_s", "peak_rss_mb", "vm_hwm_mb", "peak_rss_anon_mb", "load_start", "load_max",
            "load_end"]
    rows = [cols] + [[str(r.get(c, "")) for c in cols] for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in rows]
    extras = [f"{r['phase']}: " + json.dumps({k: v for k, v in r.items() if k not in cols}) for r in results]
    return "\n".join(lines + [""] + extras)


def run_cli(args, label: str, *overrides: str) -> dict:
    """A whole `kalm-eval` process under /usr/bin/time -v: its peak RSS (%M), wall and CPU time, load average."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "kalm_eval", *overrides]
    print(f"$ {' '.join(cmd)}", file=sys.stderr, flush=True)
    load_start = load_max = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "KALM_EVAL_PROGRESS_SECONDS": "60"})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    while proc.poll() is None:
        load_max = max(load_max, os.getloadavg()[0])
        time.sleep(0.5)
    reader.join()
    text = "".join(lines)
    if proc.returncode != 0:
        print(text[-4000:], file=sys.stderr)
        raise SystemExit(f"{label}: kalm-eval failed with exit code {proc.returncode}")
    timed = {k.strip(): v.strip() for k, _, v in (line.partition(": ") for line in text.splitlines()[-30:]) if v}
    return {"phase": label, "wall_s": round(time.perf_counter() - started, 2),
            "cpu_s": round(float(timed["User time (seconds)"]) + float(timed["System time (seconds)"]), 2),
            "peak_rss_mb": round(int(timed["Maximum resident set size (kbytes)"]) / 1024, 1),
            "load_start": round(load_start, 2), "load_max": round(max(load_max, os.getloadavg()[0]), 2),
            "load_end": round(os.getloadavg()[0], 2), "command": " ".join(cmd[2:])}


def bench_docstore(args) -> list[dict]:
    run = args.data / "run.trec"
    if not run.exists():
        raise SystemExit(f"{run}: missing (scripts/synthetic_corpus.py writes it)")
    if (args.cache / "docstore").exists():
        raise SystemExit(f"{args.cache}: use an empty cache, so that the rerank process builds the corpus index")
    rerank = run_cli(args, "rerank: trec_run 100x10 + model=tiny (first open builds the index)",
                     "benchmark=local", f"benchmark.path={args.data}", "benchmark.label=synthetic",
                     "retriever=trec_run", f"retriever.path={run}", "retriever.depth=10", "reranker=kalm",
                     "model=tiny", "reranker.depth=10", "reranker.latency_batches=0", f"cache_dir={args.cache}",
                     f"output_dir={args.cache / 'out-rerank'}")
    again = run_cli(args, "rerank again (index reused; record already done)",
                    "benchmark=local", f"benchmark.path={args.data}", "benchmark.label=synthetic",
                    "retriever=trec_run", f"retriever.path={run}", "retriever.depth=10", "reranker=kalm",
                    "model=tiny", "reranker.depth=10", "reranker.latency_batches=0", f"cache_dir={args.cache}",
                    f"output_dir={args.cache / 'out-rerank'}", "force=true")
    return [rerank, again, run_phase("docstore-open", args, "docstore: open + reads + lookups")]


def bench_dense(args) -> list[dict]:
    results = [run_phase("docstore-build", args, "dense: docstore index")]
    shard_glob = "dense/*/shard-*.json"

    def enough_shards() -> bool:
        return len(list(args.cache.glob(shard_glob))) >= args.kill_after

    run = args.cache / "bench-dense.trec"
    killed = run_phase("dense", args, "dense: encode, killed (-9)", kill_when=enough_shards,
                       run=args.cache / "bench-dense-killed.trec")
    killed["shards_done_at_kill"] = len(list(args.cache.glob(shard_glob)))
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in args.cache.glob("dense/*/shard-*.npy")}
    resumed = run_phase("dense", args, "dense: resume + search", run=run)
    resumed["shards_untouched_since_kill"] = sum(
        hashlib.sha256(p.read_bytes()).hexdigest() == digests.get(p.name) for p in args.cache.glob("dense/*/shard-*.npy"))
    check = run_phase("dense-check", args, "dense: brute-force check", run=run)
    return results + [killed, resumed, check]


def bench_bm25(args) -> list[dict]:
    first_run, second_run = args.cache / "bench-bm25-1.trec", args.cache / "bench-bm25-2.trec"
    results = [run_phase("docstore-build", args, "bm25: docstore index"),
               run_phase("bm25", args, "bm25: first run (build + save)", run=first_run),
               run_phase("bm25", args, "bm25: second run (reuse, mmap)", run=second_run)]
    results[-1]["run_identical_to_first"] = first_run.read_bytes() == second_run.read_bytes()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["docstore", "dense", "bm25", "phase"])
    parser.add_argument("phase", nargs="?", choices=sorted(PHASES))
    parser.add_argument("--data", type=Path, required=True, help="synthetic BEIR-layout dataset directory")
    parser.add_argument("--cache", type=Path, required=True, help="cache directory (index, shards, runs)")
    parser.add_argument("--report", type=Path, help="also write the results as JSON here")
    parser.add_argument("--reads", type=int, default=100, help="docstore: queries of --candidates reads each")
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--lookups", type=int, default=200_000, help="docstore: warm random lookups to time")
    parser.add_argument("--dim", type=int, default=384, help="dense: random vector dimension (all-MiniLM-L6-v2's)")
    parser.add_argument("--shard-docs", type=int, default=65536)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--sample", type=int, default=20, help="dense: queries checked against brute force")
    parser.add_argument("--kill-after", type=int, default=8, help="dense: SIGKILL once this many shards exist")
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.what == "phase":
        import logging

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
        print(RESULT + json.dumps(PHASES[args.phase](args)), flush=True)
        return
    results = {"docstore": bench_docstore, "dense": bench_dense, "bm25": bench_bm25}[args.what](args)
    print(_table(results))
    if args.report:
        args.report.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
