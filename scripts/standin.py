#!/usr/bin/env python
"""Write a stand-in of a suite (beir | miracl): every member at its own shape, where `benchmark=<suite>
data_dir=<out>` finds it, plus one first-stage run per member (kalm_eval/testing/standin.py says how). Never
inside the repository: the files are generated, deterministic for a given --seed, and cached by their arguments.

    python scripts/standin.py beir --scale 0.05 --out /tmp/standin-beir-0.05
    kalm-eval benchmark=beir data_dir=/tmp/standin-beir-0.05 retriever=trec_run \\
        'retriever.path=/tmp/standin-beir-0.05/runs/{dataset}.trec.gz' reranker=kalm model=tiny
    python scripts/standin.py --measure-run results/runs/beir__scifact/bm25-*/run.first_stage.trec.gz"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kalm_eval.testing.standin import unique_ratio, write_standin


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", nargs="?", choices=("beir", "miracl"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--scale", type=float, default=0.05, help="queries and corpora shrink together (default 0.05)")
    parser.add_argument("--depth", type=int, default=100, help="candidates per query in the run (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="member short names (default: all)")
    parser.add_argument("--measure-run", nargs="*", type=Path, help="print pairs / unique passages of run files")
    args = parser.parse_args(argv)
    if args.measure_run:
        for path in args.measure_run:
            pairs, unique = unique_ratio(path, args.depth)
            print(f"{path}: {pairs:,} pairs, {unique:,} unique passages, ratio {unique / pairs:.4f}")
        return
    if not args.suite or not args.out:
        parser.error("give a suite and --out (or --measure-run)")
    if not 0 < args.scale <= 1:
        parser.error("--scale must be in (0, 1]")
    write_standin(args.suite, args.out, scale=args.scale, depth=args.depth, seed=args.seed, only=args.only,
                  log=lambda line: print(line, file=sys.stderr))


if __name__ == "__main__":
    main()
