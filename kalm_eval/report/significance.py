"""Which differences in a table are real: a row's nDCG@10 difference from its reference row (r = 1 in a compression
sweep, the reference KaLM row in the baselines table), tested with the regression gate's own statistics (stats.py:
two-sided paired randomization test over queries, its default resamples and seed; the stratified test when the
difference is a mean over several evaluated units), Holm-adjusted across every comparison of one table.

Per-query values come from each record's per_query.tsv; queries are paired by id within an evaluated unit (a dataset,
or an LMEB subset, which is its own stratum). A pair without per-query values on both sides is not tested ("n/a")."""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from kalm_eval.errors import KalmEvalError
from kalm_eval.report import stats
from kalm_eval.report.aggregate import RERANKED, is_missing
from kalm_eval.report.compare import CompareOptions
from kalm_eval.result import ResultRecord

GATE = CompareOptions()  # the gate's defaults: test, resamples, seed, alpha


@dataclass(frozen=True)
class Difference:
    delta: float  # mean paired difference (fraction), row − reference
    p: float  # two-sided paired p (randomization; stratified over units when several)
    n: int  # paired queries
    units: int  # evaluated units (strata)
    p_holm: float = float("nan")

    @property
    def significant(self) -> bool:
        return not math.isnan(self.p_holm) and self.p_holm < GATE.alpha


def per_query(path: str, measure: str) -> dict[str, float]:
    """Per-query values of the reranked stage of one record (empty when it stores none or cannot be read)."""
    try:
        stamp = (Path(path) / "metrics.json").stat().st_mtime_ns
    except OSError:
        return {}
    return _per_query(str(path), stamp, measure)


@lru_cache(maxsize=4096)
def _per_query(path: str, stamp: int, measure: str) -> dict[str, float]:
    try:
        return ResultRecord.load(path).per_query(RERANKED, measure)
    except (KalmEvalError, OSError, ValueError):  # an unreadable record only costs its test, never the table
        return {}


def unit_paths(raw_rows: pd.DataFrame, condition: str, units: set[str] | None = None) -> dict[str, str]:
    """unit -> record path of one condition in the unaggregated condition rows (aggregate.condition_rows), optionally
    only the units of `units` datasets (an LMEB dataset's subset units count as its own)."""
    rows = raw_rows[(raw_rows["condition"] == condition) & (raw_rows["kind"] == RERANKED)]
    if units is not None:
        rows = rows[rows["dataset"].isin(units) | rows["unit"].isin(units)]
    return {row["unit"]: row["path"] for _, row in rows.iterrows() if not is_missing(row["path"])}


def difference(reference: dict[str, str], other: dict[str, str], measure: str) -> Difference | None:
    """other − reference over the units both have, queries paired by id; None when nothing can be paired."""
    strata = []
    for unit in sorted(set(reference) & set(other)):
        ref, row = per_query(reference[unit], measure), per_query(other[unit], measure)
        common = sorted(set(ref) & set(row))
        if common:
            strata.append(np.array([row[q] - ref[q] for q in common]))
    if not strata:
        return None
    if len(strata) == 1:
        p = stats.randomization_test(strata[0], GATE.n_resamples, GATE.seed)
    else:
        p = stats.stratified_test(strata, GATE.test, GATE.n_resamples, GATE.seed)
    delta = float(np.mean([d.mean() for d in strata]))
    return Difference(delta=delta, p=float(p), n=sum(len(d) for d in strata), units=len(strata))


def holm_adjusted(differences: dict[Hashable, Difference | None]) -> dict[Hashable, Difference | None]:
    """The same differences with Holm-adjusted p across all of them (one table = one family of tests)."""
    keys = [k for k, d in differences.items() if d is not None]
    adjusted = stats.holm([differences[k].p for k in keys])
    out = dict(differences)
    for key, p_holm in zip(keys, adjusted):
        d = differences[key]
        out[key] = Difference(delta=d.delta, p=d.p, n=d.n, units=d.units, p_holm=p_holm)
    return out


def mark(d: Difference | None, precision: int = 2) -> str:
    """" (Δ −1.23, p 0.0120*)": Δ ×100 at `precision` decimals, Holm-adjusted p, * when below the gate's alpha."""
    if d is None:
        return " (Δ n/a)"
    p = "nan" if math.isnan(d.p_holm) else (f"{d.p_holm:.4f}" if d.p_holm >= 1e-4 else f"{d.p_holm:.1e}")
    return f" (Δ {100 * d.delta:+.{precision}f}, p {p}{'*' if d.significant else ''})"


def note(reference: str, count: int) -> str:
    return (f"(Δ, p) beside a value: its difference from {reference} (×100, mean over paired queries), "
            f"and the two-sided paired {GATE.test} test's p over queries ({GATE.n_resamples} resamples, seed "
            f"{GATE.seed}; stratified by dataset when several: the regression gate's statistics), Holm-adjusted across "
            f"the {count} comparison(s) of this table; * = p_Holm < {GATE.alpha:g}. 'ref' = the reference itself.")
