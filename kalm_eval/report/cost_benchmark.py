"""A cost-benchmark result file: measured online cost per model shape and ratio on one device, to show beside the
paper's analytic "relative online cost" (`kalm-eval-report cost_benchmark=<file.json>`).

Schema (JSON, `schema_version` 1); the benchmark script that writes it is separate from the report:

    {
      "schema": "kalm-eval/cost-benchmark",
      "schema_version": 1,
      "created": "2026-12-05T10:00:00+00:00",          # ISO 8601, optional
      "settings": {"query_tokens": 43, "passage_tokens": 1024, "batch_size": 32},   # optional, free-form, shown
      "rows": [
        {
          "model": "KaLM-Reranker-V1-Nano",            # a paper row name, or any label
          "shape": "nano",                             # the model shape (config preset) that was timed
          "r": 4,                                      # MEP ratio; null for a model without MEP
          "device": "NVIDIA H200",
          "dtype": "bfloat16",
          "ms_per_pair": {"median": 0.118, "min": 0.112, "max": 0.131},   # online (decoder) ms per (query, passage)
          "relative_to_nano": 1.0                      # median / the Nano row's median at the same r, device, dtype
        }
      ]
    }

`relative_to_nano` may be null when the file has no Nano row to divide by. Every other row field is required."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = "kalm-eval/cost-benchmark"
SCHEMA_VERSION = 1


class CostBenchmarkError(ValueError):
    """A cost-benchmark file that does not follow the schema above; the message names the file and the field."""


@dataclass(frozen=True)
class CostRow:
    model: str
    shape: str
    r: int | None
    device: str
    dtype: str
    ms_median: float
    ms_min: float
    ms_max: float
    relative_to_nano: float | None


@dataclass(frozen=True)
class CostBenchmark:
    path: Path
    created: str | None
    settings: dict[str, Any]
    rows: tuple[CostRow, ...]

    def find(self, *, r: int | None, shape: str | None = None, model: str | None = None) -> list[CostRow]:
        """Rows at ratio r for a shape (config preset name) or a model (paper row) name."""
        return [row for row in self.rows if row.r == r and ((shape and row.shape == shape) or (model and row.model == model))]

    def describe(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        return f"{self.path}" + (f" ({self.created})" if self.created else "") + (f"; {settings}" if settings else "")


def load_cost_benchmark(path: str | Path) -> CostBenchmark:
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CostBenchmarkError(f"{path}: unreadable cost-benchmark file ({err})") from None
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        raise CostBenchmarkError(f"{path}: not a cost-benchmark file (needs \"schema\": \"{SCHEMA}\")")
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise CostBenchmarkError(f"{path}: schema_version {raw.get('schema_version')!r}; this kalm-eval reads {SCHEMA_VERSION}")
    if not isinstance(raw.get("rows"), list) or not raw["rows"]:
        raise CostBenchmarkError(f"{path}: \"rows\" must be a non-empty list")
    rows = tuple(_row(item, f"{path} rows[{i}]") for i, item in enumerate(raw["rows"]))
    return CostBenchmark(path=path, created=raw.get("created"), settings=dict(raw.get("settings") or {}), rows=rows)


def _row(item: Any, where: str) -> CostRow:
    if not isinstance(item, dict):
        raise CostBenchmarkError(f"{where}: a row is an object, got {item!r}")
    for key in ("model", "shape", "r", "device", "dtype", "ms_per_pair", "relative_to_nano"):
        if key not in item:
            raise CostBenchmarkError(f"{where}: missing {key!r}")
    ms = item["ms_per_pair"]
    if not isinstance(ms, dict):
        raise CostBenchmarkError(f"{where}: ms_per_pair is {{median, min, max}}, got {ms!r}")
    median, low, high = (_positive(ms.get(k), f"{where}.ms_per_pair.{k}") for k in ("median", "min", "max"))
    if not low <= median <= high:
        raise CostBenchmarkError(f"{where}: ms_per_pair needs min <= median <= max, got {low}, {median}, {high}")
    r = item["r"]
    if r is not None and (not isinstance(r, int) or isinstance(r, bool) or r < 1):
        raise CostBenchmarkError(f"{where}: r must be a positive integer or null, got {r!r}")
    relative = None if item["relative_to_nano"] is None else _positive(item["relative_to_nano"], f"{where}.relative_to_nano")
    return CostRow(model=str(item["model"]), shape=str(item["shape"]), r=r, device=str(item["device"]),
                   dtype=str(item["dtype"]), ms_median=median, ms_min=low, ms_max=high, relative_to_nano=relative)


def _positive(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise CostBenchmarkError(f"{where}: a positive number is required, got {value!r}")
    return float(value)
