#!/usr/bin/env python
"""World-size-free reranking, measured: one process vs torchrun ranks vs torchrun killed with kill -9 and resumed
with another number of ranks (issue "Paper-scale reranking", acceptance 1).

    python scripts/bench_distributed.py [--data ../shared/data] [--work /tmp/kalm-dist] [--nproc 3] [--resume-nproc 2]

Scenario (SciFact, BM25 top-30 -> model=tiny at compression [1,4], units of 256 passages; CPU processes stand in
for GPUs, gloo backend, OMP_NUM_THREADS=1 per process):
  (a) one process;  (b) torchrun --standalone --nproc-per-node=N;  (c) the same N ranks killed (SIGKILL to the
  whole process group) once K units are written, then resumed with --nproc-per-node=M.
Printed: wall and CPU seconds (user+sys of all processes) per scenario, the load average, units done / in flight
at the kill and units computed by the resume, and whether every reranked run file (decompressed), scores file
and metrics number is identical across (a), (b), (c). Exit status 1 on any difference."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def overrides(args, cache: Path, out: Path) -> list[str]:
    return ["benchmark=beir/scifact", f"data_dir={args.data}", f"cache_dir={cache}", "retriever=bm25",
            f"retriever.depth={args.depth}", "reranker=kalm", f"reranker.depth={args.depth}", "model=tiny",
            "model.doc_max_len=256", "compression=[1,4]", f"reranker.chunk_passages={args.chunk}", "progress=false",
            f"output_dir={out}"]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def launch(args, nproc: int | None, cache: Path, out: Path, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "kalm_eval"] if nproc is None else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "kalm_eval"]
    return subprocess.Popen(command + overrides(args, cache, out), env=env(), cwd=args.work, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def timed(args, nproc: int | None, cache: Path, out: Path, name: str) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = launch(args, nproc, cache, out, args.work / f"{name}.log")
    code = process.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        raise SystemExit(f"{name} failed (exit {code}); see {args.work / f'{name}.log'}")
    return {"wall_s": time.perf_counter() - started,
            "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}


def units_dir(cache: Path) -> Path | None:
    found = sorted(cache.glob("rerank_units/*/*/job.json"))
    return found[0].parent if found else None


def ranks_using(cache: Path) -> list[int]:
    """Live processes whose command line names `cache` (the killed run's ranks, if they outlived their agent)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(cache) in (proc / "cmdline").read_bytes().decode(errors="replace") and \
                    (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                pids.append(int(proc.name))
        except (OSError, IndexError):
            continue
    return pids


def killed_and_resumed(args, cache: Path, out: Path) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = launch(args, args.nproc, cache, out, args.work / "c-killed.log")
    while True:
        directory = units_dir(cache)
        if directory is not None and len(list(directory.glob("*.npz"))) >= args.kill_after:
            break
        if process.poll() is not None:
            raise SystemExit("the run ended before it could be killed: lower --kill-after")
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # torchrun's own process group: its ranks run in sessions of their own
    process.wait()
    directory = units_dir(cache)
    done = {p.stem for p in directory.glob("*.npz")}
    orphans, killed_at = {}, time.perf_counter()
    for after_s in (0.5, 5.0):  # the ranks stop when they see their agent gone (kalm_eval.parallel.exit_with_agent)
        time.sleep(max(0.0, killed_at + after_s - time.perf_counter()))
        orphans[after_s] = len(ranks_using(cache))
    in_flight = {p.stem for p in directory.glob("*.inflight")} - done
    total = json.loads((directory / "job.json").read_text())["units"]
    status = subprocess.run([sys.executable, "-m", "kalm_eval.status", *overrides(args, cache, out)], env=env(),
                            cwd=args.work, capture_output=True, text=True)
    resumed = timed(args, args.resume_nproc, cache, out, "c-resumed")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    computed_by_resume = sum(1 for p in directory.glob("*.npz") if p.stem not in done)
    return {"wall_s": time.perf_counter() - started,
            "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "units": total, "done_at_kill": len(done), "in_flight_at_kill": len(in_flight),
            "computed_by_resume": computed_by_resume, "ranks_alive_after_kill": orphans,
            "recomputed": len(in_flight & {p.stem for p in directory.glob("*.npz")}),
            "status_after_kill": status.stdout.strip().splitlines()[-3:], "resume_wall_s": resumed["wall_s"]}


def fingerprint(out: Path) -> dict:
    """Decompressed run/score files and the metrics numbers of every record under `out`."""
    result = {}
    for record in sorted(out.glob("r*/metrics.json")):
        folder = record.parent
        metrics = json.loads(record.read_text())
        result[folder.name] = {
            "reranked_run": gzip.decompress((folder / "run.reranked.trec.gz").read_bytes()),
            "scores": gzip.decompress((folder / "scores.reranked.tsv.gz").read_bytes()),
            "per_query": (folder / "per_query.tsv").read_bytes(),
            "stages": json.dumps(metrics["stages"], sort_keys=True), "signature": metrics["signature"]}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=Path("/tmp/kalm-dist"))
    parser.add_argument("--nproc", type=int, default=3)
    parser.add_argument("--resume-nproc", type=int, default=2)
    parser.add_argument("--depth", type=int, default=30)
    parser.add_argument("--chunk", type=int, default=256, help="reranker.chunk_passages (unit size)")
    parser.add_argument("--kill-after", type=int, default=5, help="kill (c) once this many units are written")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run (c) this many times in all, each further try killed after 2-12 units (seeded), and "
                             "compare each with (a)")
    args = parser.parse_args()
    args.data, args.work = args.data.resolve(), args.work.resolve()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    warm = args.work / "warm-cache"
    timed(args, None, warm, args.work / "warm", "warm")  # builds the corpus index and the first-stage run once
    shutil.rmtree(warm / "rerank_units")
    caches = {name: args.work / f"cache-{name}" for name in "abc"}
    for cache in caches.values():
        shutil.copytree(warm, cache)
    load = os.getloadavg()
    results = {"a": timed(args, None, caches["a"], args.work / "a", "a"),
               "b": timed(args, args.nproc, caches["b"], args.work / "b", "b"),
               "c": killed_and_resumed(args, caches["c"], args.work / "c")}
    prints = {name: fingerprint(args.work / name) for name in "abc"}
    same = prints["a"] == prints["b"] == prints["c"] and prints["a"]
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; after: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"(a) 1 process:            wall {results['a']['wall_s']:7.1f} s   CPU {results['a']['cpu_s']:7.1f} s")
    print(f"(b) torchrun {args.nproc} ranks:     wall {results['b']['wall_s']:7.1f} s   CPU {results['b']['cpu_s']:7.1f} s"
          f"   CPU (b)/(a) = {results['b']['cpu_s'] / results['a']['cpu_s']:.2f}")
    c = results["c"]
    print(f"(c) {args.nproc} ranks killed, resumed with {args.resume_nproc}: wall {c['wall_s']:7.1f} s   CPU {c['cpu_s']:7.1f} s")
    print(f"    units {c['units']}: {c['done_at_kill']} done and {c['in_flight_at_kill']} in flight at the kill; the resume "
          f"computed {c['computed_by_resume']} (recomputed, i.e. in flight at the kill: {c['recomputed']})")
    print("    ranks of the killed run still alive 0.5 s / 5 s after the kill: "
          + " / ".join(str(n) for n in c["ranks_alive_after_kill"].values()))
    print("    kalm-eval-status after the kill: " + " | ".join(c["status_after_kill"]))
    for name in "abc":
        print(f"    {name}: records {sorted(prints[name])}")
    print("reranked run files, scores, per-query values and metrics identical across (a), (b), (c):", bool(same))
    if args.repeat > 1:
        same = repeat_killed_and_resumed(args, prints["a"], args.repeat - 1) and same
    return 0 if same else 1


def repeat_killed_and_resumed(args, reference: dict, tries: int) -> bool:
    """(c) again and again, the kill drawn after 2-12 units (random.Random(7)), each resumed run compared with (a)."""
    import random

    rng, rows = random.Random(7), []
    for i in range(tries):
        args.kill_after = rng.randint(2, 12)
        cache, out = args.work / f"repeat-cache-{i}", args.work / f"repeat-out-{i}"
        shutil.copytree(args.work / "warm-cache", cache)
        c = killed_and_resumed(args, cache, out)
        rows.append({"kill_after": args.kill_after, "alive": list(c["ranks_alive_after_kill"].values()),
                     "identical": fingerprint(out) == reference})
        shutil.rmtree(cache)
        print(f"    try {i + 2}: killed after {args.kill_after} units, ranks alive 0.5 s / 5 s after: "
              f"{rows[-1]['alive'][0]} / {rows[-1]['alive'][1]}, identical to (a): {rows[-1]['identical']}", flush=True)
    print(f"(c) repeated: {sum(r['identical'] for r in rows) + 1} of {tries + 1} identical; load "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return all(r["identical"] for r in rows)


if __name__ == "__main__":
    sys.exit(main())
