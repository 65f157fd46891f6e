#!/usr/bin/env python
"""The paper's protocol rehearsed end to end on a stand-in suite, one command (kalm_eval/testing/rehearsal.py):
generate -> plan -> run with N job-array workers (one killed with kill -9 part way, then resumed),
kalm-eval-status while it runs -> closing pass -> kalm-eval-report; writes results/rehearsal/<name>.json + .md
(peak RSS per process, disk per cache kind, wall per stage and per dataset, plan vs actual).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python scripts/rehearsal.py beir --scale 0.05 --work /tmp/rehearsal-beir-0.05 \\
        --calibrate /tmp/reference-beir-0.01/results --out results/rehearsal/beir-0.05

`--reference <results tree>` compares every record byte for byte with an uninterrupted run of the same suite and
scale (e.g. `kalm-eval benchmark=beir ... ` with one worker, the same overrides as the rehearsal's `command_overrides`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kalm_eval.testing.rehearsal import (Rehearsal, compare_trees, harness_share, markdown, per_dataset, plan_vs_actual,
                                         write)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", choices=("beir", "miracl"), nargs="?")
    parser.add_argument("--scale", type=float, default=0.05)
    parser.add_argument("--work", type=Path, help="data, caches, results, logs (outside the repo)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--compression", default="[1,4,32]")
    parser.add_argument("--kill-at", type=float, default=0.4,
                        help="share of the planned units written before kill -9 (0: no kill, an uninterrupted run)")
    parser.add_argument("--calibrate", help="results tree for plan.calibrate (same model, dtype, device)")
    parser.add_argument("--reference", help="results tree of an uninterrupted run to compare byte for byte")
    parser.add_argument("--out", type=Path, required=True, help="results/rehearsal/<name> (.json and .md are added)")
    parser.add_argument("--recompare", action="store_true",
                        help="recount --out's results tree (per dataset, against <work>/plan.json; with --reference, the "
                             "comparison) and rewrite --out")
    args = parser.parse_args(argv)
    if args.recompare:
        summary = json.loads(Path(f"{args.out}.json").read_text())
        results = Path(summary["work"]) / "results"
        summary["datasets"] = per_dataset(results)
        plan = json.loads((Path(summary["work"]) / "plan.json").read_text())  # as the rehearsal wrote it, or made again
        summary.update(plan_vs_actual=plan_vs_actual(plan, summary["datasets"]), plan_total=plan.get("total"),
                       plan_calibration=plan.get("calibration"))
        summary["timed_stage_sum_s"] = sum(d["timed_s"] for d in summary["datasets"].values())
        summary.update(harness_share(summary))
        if args.reference:
            summary["identical_to_reference"] = compare_trees(results, Path(args.reference))
        write(summary, args.out)
        print(markdown(summary))
        return
    if not args.suite or not args.work:
        parser.error("give a suite and --work")
    rehearsal = Rehearsal(args.suite, args.scale, args.work.resolve(), workers=args.workers,
                          compression=args.compression, kill_at=args.kill_at, calibrate=args.calibrate,
                          reference=args.reference)
    summary = rehearsal.run()
    write(summary, args.out)
    print(markdown(summary))


if __name__ == "__main__":
    main()
