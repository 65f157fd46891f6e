"""A cost-benchmark result file, as the report reads it: measured online cost per model shape and ratio on one
device, shown beside the paper's analytic "relative online cost" (`kalm-eval-report cost_benchmark=<file.json>`).

The file's format has one owner, the record that writes and reads it: `kalm_eval.bench.record` (its schema is in
that module's docstring). This module only names what the report uses of it."""

from __future__ import annotations

from kalm_eval.bench.record import CostBenchmark, CostBenchmarkError, CostRow, load_cost_benchmark

__all__ = ["CostBenchmark", "CostBenchmarkError", "CostRow", "load_cost_benchmark"]
