"""The cost-benchmark result file: one record that writes and reads its own JSON (the one reader of the format).

`kalm_eval.bench.cost` builds a `CostBenchmark` and calls `write`; the report (`kalm-eval-report
cost_benchmark=<file>`, kalm_eval/report/cost_benchmark.py) and the planner (`plan.cost_benchmark=<file>`) call
`load_cost_benchmark`. This module imports nothing but the standard library, so product code may import it (an
import-linter contract in pyproject.toml allows this module and no other of kalm_eval.bench).

Schema (JSON, `schema_version` 1):

    {
      "schema": "kalm-eval/cost-benchmark",
      "schema_version": 1,
      "created": "2026-12-05T10:00:00+00:00",          # ISO 8601, optional
      "settings": {"workload": "...", "pairs": 67, "batch_size": 16, ...},   # optional, free-form, shown
      "rows": [
        {
          "model": "KaLM-Reranker-V1-Nano",            # a paper row name, or any label
          "shape": "nano",                             # the model shape (config preset) that was timed
          "r": 4,                                      # MEP ratio; null for a model without MEP
          "device": "NVIDIA H200",
          "dtype": "bfloat16",
          "ms_per_pair": {"median": 0.118, "min": 0.112, "max": 0.131},   # online (decoder) ms per (query, passage)
          "relative_to_nano": 1.0,                     # median / the Nano row's median at the same r, device, dtype
          # optional (the benchmark writes them; the report shows the ones above):
          "pairs": 67, "gflops": 41.2, "relative_to_nano_range": {"min": 30.0, "max": 32.0},
          "flop_model_relative_to_nano": 30.2, "fraction_of_ceiling": 0.66, "mfu": 0.41, "paper_relative_cost": 43.7
        }
      ],
      "details": {...}                                 # optional, free-form: per-variant timings, blocks, arguments
    }

`relative_to_nano` may be null when the file has no Nano row to divide by. Every other required row field must be
there; other row fields are kept as they are (`CostRow.extra`) and written back."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = "kalm-eval/cost-benchmark"
SCHEMA_VERSION = 1
REQUIRED = ("model", "shape", "r", "device", "dtype", "ms_per_pair", "relative_to_nano")
OPTIONAL = ("pairs", "gflops", "relative_to_nano_range", "flop_model_relative_to_nano", "fraction_of_ceiling", "mfu",
            "paper_relative_cost")


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
    pairs: int | None = None
    gflops: float | None = None
    relative_range: tuple[float, float] | None = None  # (min, max) over repetitions
    flop_model_relative: float | None = None
    fraction_of_ceiling: float | None = None
    mfu: float | None = None
    paper_relative_cost: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # fields this schema does not name, kept

    def to_json(self) -> dict[str, Any]:
        """The row as the file holds it (required fields first, optional ones only when set)."""
        out: dict[str, Any] = {"model": self.model, "shape": self.shape, "r": self.r, "device": self.device,
                               "dtype": self.dtype,
                               "ms_per_pair": {"median": self.ms_median, "min": self.ms_min, "max": self.ms_max},
                               "relative_to_nano": self.relative_to_nano}
        optional = {"pairs": self.pairs, "gflops": self.gflops,
                    "relative_to_nano_range": None if self.relative_range is None else
                    {"min": self.relative_range[0], "max": self.relative_range[1]},
                    "flop_model_relative_to_nano": self.flop_model_relative,
                    "fraction_of_ceiling": self.fraction_of_ceiling, "mfu": self.mfu,
                    "paper_relative_cost": self.paper_relative_cost}
        return out | {k: v for k, v in optional.items() if v is not None} | self.extra


@dataclass(frozen=True)
class CostBenchmark:
    path: Path | None
    created: str | None
    settings: dict[str, Any]
    rows: tuple[CostRow, ...]
    details: dict[str, Any] = field(default_factory=dict)

    def find(self, *, r: int | None, shape: str | None = None, model: str | None = None) -> list[CostRow]:
        """Rows at ratio r for a shape (config preset name) or a model (paper row) name."""
        return [row for row in self.rows if row.r == r and ((shape and row.shape == shape) or (model and row.model == model))]

    def describe(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        return f"{self.path}" + (f" ({self.created})" if self.created else "") + (f"; {settings}" if settings else "")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION}
        if self.created is not None:
            out["created"] = self.created
        out["settings"] = self.settings
        out["rows"] = [row.to_json() for row in self.rows]
        if self.details:
            out["details"] = self.details
        return out

    def write(self, path: str | Path) -> CostBenchmark:
        """Write the file (checked by reading it back); returns the record as read from `path`."""
        path = Path(path)
        if not self.rows:
            raise CostBenchmarkError(f"{path}: a cost benchmark needs at least one row")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2))
        return load_cost_benchmark(path)


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
    for key in ("settings", "details"):
        if not isinstance(raw.get(key) or {}, dict):
            raise CostBenchmarkError(f"{path}: {key!r} must be an object")
    return CostBenchmark(path=path, created=raw.get("created"), settings=dict(raw.get("settings") or {}), rows=rows,
                         details=dict(raw.get("details") or {}))


def _row(item: Any, where: str) -> CostRow:
    if not isinstance(item, dict):
        raise CostBenchmarkError(f"{where}: a row is an object, got {item!r}")
    for key in REQUIRED:
        if key not in item:
            raise CostBenchmarkError(f"{where}: missing {key!r}")
    ms = item["ms_per_pair"]
    if not isinstance(ms, dict):
        raise CostBenchmarkError(f"{where}: ms_per_pair is {{median, min, max}}, got {ms!r}")
    median, low, high = (_positive(ms.get(k), f"{where}.ms_per_pair.{k}") for k in ("median", "min", "max"))
    if not low <= median <= high:
        raise CostBenchmarkError(f"{where}: ms_per_pair needs min <= median <= max, got {low}, {median}, {high}")
    r = item["r"]
    if r is not None and not _positive_int(r):
        raise CostBenchmarkError(f"{where}: r must be a positive integer or null, got {r!r}")
    relative = None if item["relative_to_nano"] is None else _positive(item["relative_to_nano"], f"{where}.relative_to_nano")
    spread = item.get("relative_to_nano_range")
    if spread is not None and not isinstance(spread, dict):
        raise CostBenchmarkError(f"{where}: relative_to_nano_range is {{min, max}}, got {spread!r}")
    pairs = item.get("pairs")
    if pairs is not None and not _positive_int(pairs):
        raise CostBenchmarkError(f"{where}: pairs must be a positive integer, got {pairs!r}")

    def optional(key: str) -> float | None:
        return None if item.get(key) is None else _number(item[key], f"{where}.{key}")

    return CostRow(model=str(item["model"]), shape=str(item["shape"]), r=r, device=str(item["device"]),
                   dtype=str(item["dtype"]), ms_median=median, ms_min=low, ms_max=high, relative_to_nano=relative,
                   pairs=pairs, gflops=optional("gflops"),
                   relative_range=None if spread is None else (
                       _positive(spread.get("min"), f"{where}.relative_to_nano_range.min"),
                       _positive(spread.get("max"), f"{where}.relative_to_nano_range.max")),
                   flop_model_relative=optional("flop_model_relative_to_nano"),
                   fraction_of_ceiling=optional("fraction_of_ceiling"), mfu=optional("mfu"),
                   paper_relative_cost=optional("paper_relative_cost"),
                   extra={k: v for k, v in item.items() if k not in REQUIRED and k not in OPTIONAL})


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise CostBenchmarkError(f"{where}: a finite number >= 0 is required, got {value!r}")
    return value


def _positive(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise CostBenchmarkError(f"{where}: a positive number is required, got {value!r}")
    return float(value)
