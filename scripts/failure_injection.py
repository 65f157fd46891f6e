#!/usr/bin/env python
"""kill -9 at random moments of a small stand-in suite, resume with 1-3 workers, compare with an uninterrupted run.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python scripts/failure_injection.py --work /tmp/kills --cycles 10 \\
        --out results/rehearsal/failure-injection
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python scripts/failure_injection.py --work /tmp/kills --targeted 2 \\
        --out results/rehearsal/failure-injection-targeted

--targeted k: instead of a random delay, each of the named moments of kalm_eval.failpoints (a run file's or a unit's
temporary file written but not renamed, a unit scored but not written, a merge half done, a record staged, between a
record commit's two renames, the suite ledger's rewrite) is armed k times in the victim (KALM_EVAL_KILL_AT=<point>:<n>,
n drawn), which then dies there with SIGKILL exactly as kill -9 would.

The suite: the BEIR stand-in's SciFact, NFCorpus and ArguAna (kalm_eval/testing/standin.py) at --scale, model=tiny,
compression=[1,4,32], reranker.chunk_passages=64 (many units, so kills land in every phase). First one
uninterrupted one-worker run (the reference). Then per cycle, in a fresh cache and results dir: 1-3 job-array
workers start, one of them is killed with kill -9 after a random delay (its last log line says what it was doing),
the others finish, 1-3 workers resume, a one-worker closing pass writes the summary; every record's run files,
scores, per-query values and metric values are compared with the reference (kalm_eval/testing/rehearsal.py)."""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from kalm_eval.failpoints import ENVIRONMENT, POINTS
from kalm_eval.storage import write_json_atomic
from kalm_eval.testing.rehearsal import compare_trees
from kalm_eval.testing.standin import members, write_standin

KEEP = ("scifact", "nfcorpus", "arguana")


def overrides(data: Path, cache: Path, results: Path) -> list[str]:
    dropped = [f"~benchmark.datasets.{m.name}" for m in members("beir", data) if m.name not in KEEP]
    return ["benchmark=beir", *dropped, f"data_dir={data}", "retriever=trec_run",
            f'retriever.path="{data}/runs/{{dataset}}.trec.gz"', "reranker=kalm", "model=tiny", "compression=[1,4,32]",
            "reranker.chunk_passages=64", f"cache_dir={cache}", f"results_dir={results}", "progress=false"]


# how many times one worker running the 3-dataset suite alone reaches each point (n is drawn from 1..this / workers;
# a point of the merge, the records or the ledger is reached only by the worker that merges)
REACHES = {"run.write": 6, "unit.scored": 6, "unit.write": 6, "unit.done": 6, "merge": 5, "record.stage": 9,
           "record.rename": 9, "suite.ledger": 3}


def start(args: list[str], log: Path, kill_at: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != ENVIRONMENT}
    if kill_at:
        env[ENVIRONMENT] = kill_at
    return subprocess.Popen(["kalm-eval", *args], stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)


def workers(base: list[str], n: int, logs: Path, tag: str, victim: int | None = None,
            kill_at: str | None = None) -> list[subprocess.Popen]:
    if n == 1:
        return [start(base, logs / f"{tag}-w0.log", kill_at if victim == 0 else None)]
    return [start([*base, f"worker={i}", f"workers={n}"], logs / f"{tag}-w{i}.log", kill_at if victim == i else None)
            for i in range(n)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--scale", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=0.9,
                        help="kill within this share of the reference run's wall (more workers finish sooner)")
    parser.add_argument("--targeted", type=int, default=0, metavar="K",
                        help="arm each kalm_eval.failpoints point K times instead of --cycles random delays")
    parser.add_argument("--start-workers", type=int, choices=(1, 2, 3),
                        help="workers at the start of every cycle (default: drawn from 1-3); with 1 the victim merges, "
                             "so the merge, record and ledger points are always reached")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    work = args.work.resolve()
    data = work / "data"
    write_standin("beir", data, scale=args.scale, only=list(KEEP), log=lambda _: None)
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    reference = work / "reference"
    started = time.perf_counter()
    wall_file = reference / "wall_s.txt"
    if not wall_file.exists():
        done = subprocess.run(["kalm-eval", *overrides(data, reference / "cache", reference / "results")],
                              stdout=open(logs / "reference.log", "w"), stderr=subprocess.STDOUT)
        assert done.returncode == 0, "the reference run failed"
        wall_file.write_text(f"{time.perf_counter() - started:.1f}\n")
    reference_s = float(wall_file.read_text())  # kills land anywhere in a run this long
    cycles = []
    armed = [point for point in POINTS for _ in range(args.targeted)]
    for cycle in range(len(armed) or args.cycles):
        root = work / f"seed{args.seed}-cycle{cycle}"
        base = overrides(data, root / "cache", root / "results")
        first, resume = rng.randint(1, 3), rng.randint(1, 3)
        first = args.start_workers or first
        victim = rng.randrange(first)
        killed_at, delay = None, None
        if armed:
            point = armed[cycle]
            kill_at = f"{point}:{rng.randint(1, max(1, REACHES[point] // first))}"  # the victim's share of them
            procs = workers(base, first, logs, f"seed{args.seed}-cycle{cycle}-start", victim, kill_at)
            for proc in procs:
                proc.wait()
            if procs[victim].returncode == -signal.SIGKILL:
                killed_at = f"{ENVIRONMENT}={kill_at}"
        else:
            delay = rng.uniform(2.0, max(3.0, reference_s * args.max_delay))
            procs = workers(base, first, logs, f"seed{args.seed}-cycle{cycle}-start")
            time.sleep(delay)
            if procs[victim].poll() is None:
                os.kill(procs[victim].pid, signal.SIGKILL)
                lines = (logs / f"seed{args.seed}-cycle{cycle}-start-w{victim}.log").read_text(errors="replace").strip().splitlines()
                killed_at = lines[-1][-160:] if lines else "(no output yet: imports / config)"
            for proc in procs:
                proc.wait()
        for proc in workers(base, resume, logs, f"seed{args.seed}-cycle{cycle}-resume"):
            proc.wait()
        closing = subprocess.run(["kalm-eval", *base], stdout=open(logs / f"seed{args.seed}-cycle{cycle}-closing.log", "w"),
                                 stderr=subprocess.STDOUT)
        compared = compare_trees(root / "results", reference / "results")
        identical = (closing.returncode == 0 and compared["matched"] == compared["records"] == 9
                     and compared["identical_bytes"] == compared["identical_metrics"] == 9)
        row = {"cycle": f"{args.seed}/{cycle}", "workers_at_start": first, "killed_worker": victim,
               "delay_s": round(delay, 1) if delay is not None else None,
               "killed_while": killed_at or ("(never reached it)" if armed else "(had already finished)"),
               "workers_at_resume": resume,
               "closing_exit": closing.returncode, "identical": identical,
               "compared": {k: v for k, v in compared.items() if k != "differences"},
               "differences": compared["differences"][:5]}
        cycles.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    summary = {"scale": args.scale, "datasets": list(KEEP), "reference_wall_s": reference_s, "cycles": cycles,
               "identical": sum(c["identical"] for c in cycles),
               "killed": sum(not c["killed_while"].startswith("(") for c in cycles), "targeted": bool(armed),
               "load_average": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(f"{args.out}.json"), summary)
    lines = [f"# Failure injection: {len(cycles)} cycles, {summary['killed']} kill -9 landed, "
             f"{summary['identical']} identical to the uninterrupted run", "",
             "| cycle | workers | killed after s | killed while (its armed point, or its last log line) | resumed with | "
             "identical |",
             "|---:|---:|---:|---|---:|---|"]
    lines += [f"| {c['cycle']} | {c['workers_at_start']} | {c['delay_s'] if c['delay_s'] is not None else '—'} | "
              f"`{c['killed_while']}` | "
              f"{c['workers_at_resume']} | {c['identical']} |" for c in cycles]
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
