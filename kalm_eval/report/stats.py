"""Paired significance tests on per-query differences d = candidate − baseline (all two-sided, H0: mean(d) = 0).

- `randomization_test`: sign-flip randomisation, scipy.stats.permutation_test(permutation_type='samples'): exact
  enumeration when 2**n <= n_resamples, Monte Carlo otherwise;
- `bootstrap_ci`: percentile CI of mean(d), scipy.stats.bootstrap;
- `bootstrap_test`: paired bootstrap p-value on centred differences (resampled with scipy.stats.bootstrap);
- `stratified_test`: the macro average over datasets (mean of per-dataset mean differences), resampled within
  each dataset;
- `holm`: Holm–Bonferroni step-down adjusted p-values."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

BATCH = 2000  # resamples per vectorised batch: bounds memory at BATCH × n floats


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def _prepared(diff) -> np.ndarray | float:
    """The differences as an array, or the p-value when there is nothing to test (NaN: no data; 1: all zero)."""
    d = np.asarray(diff, dtype=float)
    if d.size == 0:
        return float("nan")
    if not np.any(d):
        return 1.0
    return d


def _tolerance(observed: float) -> float:
    # scipy's relative tolerance for null values numerically equal to the observed statistic
    return abs(np.finfo(float).eps * 100 * observed)


def randomization_test(diff: Sequence[float] | np.ndarray, n_resamples: int = 10000, seed: int = 0) -> float:
    d = _prepared(diff)
    if not isinstance(d, np.ndarray):
        return d
    result = stats.permutation_test((d,), _mean, permutation_type="samples", vectorized=True, n_resamples=n_resamples,
                                    batch=BATCH, alternative="two-sided", rng=seed)
    return float(result.pvalue)


def _bootstrap_means(d: np.ndarray, n_resamples: int, seed) -> np.ndarray:
    if np.ptp(d) == 0:  # scipy refuses a degenerate sample; every resample of it has the same mean
        return np.full(n_resamples, float(d[0]))
    result = stats.bootstrap((d,), _mean, n_resamples=n_resamples, batch=BATCH, vectorized=True, method="percentile",
                             rng=seed)
    return result.bootstrap_distribution


def bootstrap_ci(diff, n_resamples: int = 10000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of mean(diff)."""
    d = np.asarray(diff, dtype=float)
    if d.size == 0:
        return float("nan"), float("nan")
    if np.ptp(d) == 0:
        return float(d[0]), float(d[0])
    result = stats.bootstrap((d,), _mean, n_resamples=n_resamples, batch=BATCH, vectorized=True, method="percentile",
                             confidence_level=level, rng=seed + 1)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def bootstrap_test(diff, n_resamples: int = 10000, seed: int = 0) -> float:
    """p = (#{|mean*| ≥ |mean(d)|} + 1) / (B + 1) over bootstrap means of the centred differences d − mean(d)."""
    d = _prepared(diff)
    if not isinstance(d, np.ndarray):
        return d
    observed = float(d.mean())
    # scipy.stats.bootstrap gives intervals, not a test: impose H0 by centring (Efron & Tibshirani §16.4), then count
    null = _bootstrap_means(d - observed, n_resamples, seed)
    return float((np.count_nonzero(np.abs(null) >= abs(observed) - _tolerance(observed)) + 1) / (n_resamples + 1))


def stratified_test(diffs: Sequence[np.ndarray], test: str, n_resamples: int = 10000, seed: int = 0) -> float:
    """Two-sided test of the macro average = 0, resampling within each dataset (sign flips, or bootstrap of the
    centred differences)."""
    # hand-written: scipy resamples whole samples, and the macro mean's null needs every dataset resampled per draw
    diffs = [np.asarray(d, dtype=float) for d in diffs if len(d)]
    if not diffs:
        return float("nan")
    if not any(np.any(d) for d in diffs):
        return 1.0
    observed = float(np.mean([d.mean() for d in diffs]))
    rng = np.random.default_rng(seed)
    null = np.zeros(n_resamples)
    for d in diffs:
        null += _stratum_means(d, test, n_resamples, rng) / len(diffs)
    gamma = _tolerance(observed)
    if test == "randomization":  # scipy.stats.permutation_test's two-sided p with its +1 for random resamples
        less = (np.count_nonzero(null <= observed + gamma) + 1) / (n_resamples + 1)
        greater = (np.count_nonzero(null >= observed - gamma) + 1) / (n_resamples + 1)
        return float(min(1.0, 2 * min(less, greater)))
    return float((np.count_nonzero(np.abs(null) >= abs(observed) - gamma) + 1) / (n_resamples + 1))


def _stratum_means(d: np.ndarray, test: str, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, BATCH):
        k = min(BATCH, n_resamples - start)
        if test == "randomization":
            signs = rng.integers(0, 2, size=(k, d.size)).astype(float) * 2.0 - 1.0
            out[start:start + k] = signs @ d / d.size
        else:
            centred = d - d.mean()
            out[start:start + k] = centred[rng.integers(0, d.size, size=(k, d.size))].mean(axis=1)
    return out


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni step-down adjusted p-values (same order as given); NaN stays NaN and does not count."""
    # hand-written: scipy.stats.false_discovery_control has Benjamini–Hochberg/Yekutieli only, no Holm
    indices = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    adjusted = [float("nan")] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(indices, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (len(indices) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted
