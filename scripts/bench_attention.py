#!/usr/bin/env python
"""Which attention kernel per device: grouped vs sdpa vs eager, side by side in one run, on KaLM's own shapes
(the command line of kalm_eval/bench/attention_kernels.py, where the three comparisons are described).

    python scripts/bench_attention.py                      # CPU, bf16, 1 thread
    python scripts/bench_attention.py --device cuda --batch 64
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kalm_eval.bench.attention_kernels import compare  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1 on a shared machine)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--prompt", type=int, default=80, help="prompt tokens (SciFact prompts: 68-110, mean 78)")
    p.add_argument("--pooled", type=int, default=92, help="pooled states (SciFact at r=4: 44-157, mean 92)")
    p.add_argument("--repeats", type=int, default=5)
    compare(**vars(p.parse_args()))


if __name__ == "__main__":
    main()
