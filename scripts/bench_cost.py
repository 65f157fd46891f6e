#!/usr/bin/env python
"""The paper's cost column, measured: the command line of kalm_eval/bench/cost.py (what it measures, its options
and the FLOP model are documented there and in docs/cost.md).

    python scripts/bench_cost.py                                   # CPU default (~14 min, 1 thread, bf16; peak RSS ~10 GiB)
    python scripts/bench_cost.py --quick                           # CI-sized smoke (Nano + Qwen3-0.6B, 1-2 min)
    python scripts/bench_cost.py --device cuda --output cost.json  # GPU: + MFU vs the device's bf16 peak, memory
    kalm-eval-report cost_benchmark=cost.json                      # the report's "measured (device)" column
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kalm_eval.bench.cost import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
