"""Regression gate: paired per-query comparison of two sets of result records.

For each dataset both sides have, per-query values of one measure (default nDCG@10) are paired on the same query
ids; Δ = mean(candidate − baseline); a two-sided paired test (sign-flip randomisation, equivalent to
scipy.stats.permutation_test(permutation_type='samples'), or a paired bootstrap) gives p; Holm's step-down method
adjusts p across datasets. The gate fails when any dataset has Δ < −margin AND Holm-adjusted p < alpha, or when the
macro average over datasets (the paper's kind of average) does: Δ_avg < −margin and its own stratified test p < alpha.

Before any number is compared, the protocols must agree on everything except the reranker model: dataset (name,
split, file hashes = revision, quirks, joiner), first stage (signature, source, depth, tie break), metric definitions,
and reranker ratio, depth, instruction, tail, tie break, score. Any difference is refused and named."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kalm_eval.storage import canonical_json
from kalm_eval.report.results import MAIN_MEASURE, ResultRecord

PASS, REGRESSION, REFUSED = 0, 1, 2
# protocol paths that may legitimately differ between a baseline and a candidate checkpoint
ALWAYS_IGNORED = ("reranker.model", "harness_version")


class ProtocolMismatch(ValueError):
    """Baseline and candidate were not produced under the same protocol; the message names each difference."""


# ---- statistics -----------------------------------------------------------------------------------------------------

def _sign_matrix_exact(n: int) -> np.ndarray:
    return np.array(list(itertools.product((1.0, -1.0), repeat=n)), dtype=float)


def _null_means(d: np.ndarray, n_resamples: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Null distribution of mean(d) under random sign flips; exact enumeration when 2**n <= n_resamples (as scipy)."""
    n = d.size
    if n <= 30 and 2 ** n <= n_resamples:
        return _sign_matrix_exact(n) @ d / n, True
    return _random_sign_means(d, n_resamples, rng), False


def _random_sign_means(d: np.ndarray, n_resamples: int, rng: np.random.Generator, chunk: int = 2000) -> np.ndarray:
    n = d.size
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, chunk):
        k = min(chunk, n_resamples - start)
        signs = rng.integers(0, 2, size=(k, n), dtype=np.int8).astype(float) * 2.0 - 1.0
        out[start:start + k] = signs @ d / n
    return out


def _two_sided(null: np.ndarray, observed: float, exact: bool) -> float:
    """scipy.stats.permutation_test's two-sided p: 2 × min(P(null ≤ obs), P(null ≥ obs)), with its +1 adjustment
    for randomised (non-exact) nulls and its relative tolerance for numerically equal values."""
    adjustment = 0 if exact else 1
    gamma = abs(np.finfo(float).eps * 100 * observed)
    less = (np.count_nonzero(null <= observed + gamma) + adjustment) / (null.size + adjustment)
    greater = (np.count_nonzero(null >= observed - gamma) + adjustment) / (null.size + adjustment)
    return float(min(1.0, max(0.0, 2 * min(less, greater))))


def randomization_test(diff: np.ndarray | list[float], n_resamples: int = 10000, seed: int = 0) -> float:
    """Two-sided paired sign-flip randomisation test of mean(diff) = 0."""
    d = np.asarray(diff, dtype=float)
    if d.size == 0:
        return float("nan")
    if not np.any(d):
        return 1.0
    null, exact = _null_means(d, n_resamples, np.random.default_rng(seed))
    return _two_sided(null, float(d.mean()), exact)


def bootstrap_test(diff: np.ndarray | list[float], n_resamples: int = 10000, seed: int = 0) -> float:
    """Two-sided paired bootstrap test of mean(diff) = 0: resample the centred differences (the null imposed by
    shifting, Efron & Tibshirani §16.4); p = (#{|mean*| ≥ |obs|} + 1) / (B + 1)."""
    d = np.asarray(diff, dtype=float)
    if d.size == 0:
        return float("nan")
    if not np.any(d):
        return 1.0
    obs = float(d.mean())
    means = _bootstrap_means(d - obs, n_resamples, np.random.default_rng(seed))
    gamma = abs(np.finfo(float).eps * 100 * obs)
    return float((np.count_nonzero(np.abs(means) >= abs(obs) - gamma) + 1) / (n_resamples + 1))


def _bootstrap_means(d: np.ndarray, n_resamples: int, rng: np.random.Generator, chunk: int = 2000) -> np.ndarray:
    n = d.size
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, chunk):
        k = min(chunk, n_resamples - start)
        out[start:start + k] = d[rng.integers(0, n, size=(k, n))].mean(axis=1)
    return out


def bootstrap_ci(diff, n_resamples: int = 10000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of mean(diff)."""
    d = np.asarray(diff, dtype=float)
    if d.size == 0:
        return float("nan"), float("nan")
    means = _bootstrap_means(d, n_resamples, np.random.default_rng(seed + 1))
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def stratified_test(diffs: list[np.ndarray], test: str, n_resamples: int = 10000, seed: int = 0) -> float:
    """Two-sided test of the macro average (mean over datasets of per-dataset mean differences) = 0: sign flips
    (or bootstrap resamples of centred differences) drawn within each dataset."""
    diffs = [np.asarray(d, dtype=float) for d in diffs if len(d)]
    if not diffs:
        return float("nan")
    if not any(np.any(d) for d in diffs):
        return 1.0
    obs = float(np.mean([d.mean() for d in diffs]))
    rng = np.random.default_rng(seed)
    if test == "randomization":
        null = np.mean([_random_sign_means(d, n_resamples, rng) for d in diffs], axis=0)
        return _two_sided(null, obs, exact=False)
    null = np.mean([_bootstrap_means(d - d.mean(), n_resamples, rng) for d in diffs], axis=0)
    gamma = abs(np.finfo(float).eps * 100 * obs)
    return float((np.count_nonzero(np.abs(null) >= abs(obs) - gamma) + 1) / (n_resamples + 1))


def holm(pvalues: list[float]) -> list[float]:
    """Holm–Bonferroni step-down adjusted p-values (same order as given); NaN stays NaN and does not count."""
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    m = len(idx)
    adjusted = [float("nan")] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


# ---- protocol check -------------------------------------------------------------------------------------------------

def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        if not obj and prefix:
            out[prefix] = {}
        return out
    return {prefix: obj}


def protocol_differences(baseline: dict, candidate: dict, ignore: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Dotted paths where two protocols differ (reranker.model and harness_version are never compared), each with
    both values, e.g. "reranker.compression: baseline 4, candidate 8"."""
    skip = tuple(ALWAYS_IGNORED) + tuple(ignore)

    def skipped(path: str) -> bool:
        return any(path == s or path.startswith(s + ".") for s in skip)

    if (baseline.get("reranker") is None) != (candidate.get("reranker") is None):
        which = "baseline" if baseline.get("reranker") is None else "candidate"
        if not skipped("reranker"):
            return [f"reranker: {which} is first stage only, the other is reranked"]
    a, b = _flatten(baseline), _flatten(candidate)
    diffs = []
    for path in sorted(set(a) | set(b)):
        if skipped(path):
            continue
        va, vb = a.get(path, "<absent>"), b.get(path, "<absent>")
        if canonical_json(va) != canonical_json(vb):
            diffs.append(f"{path}: baseline {_short(va)}, candidate {_short(vb)}")
    return diffs


def _short(v: Any, n: int = 80) -> str:
    s = canonical_json(v) if not isinstance(v, str) else repr(v)
    return s if len(s) <= n else s[: n - 3] + "..."


# ---- the gate -------------------------------------------------------------------------------------------------------

@dataclass
class CompareOptions:
    margin: float = 0.01
    alpha: float = 0.05
    test: str = "randomization"  # randomization | bootstrap
    n_resamples: int = 10000
    seed: int = 0
    measure: str = MAIN_MEASURE
    stage: str = "auto"  # auto (reranked when present, else first_stage) | reranked | first_stage
    allow_protocol_diff: tuple[str, ...] = ()
    require_all: bool = False  # refuse when the candidate lacks a dataset the baseline has (default: warn)

    def __post_init__(self):
        if self.test not in ("randomization", "bootstrap"):
            raise ValueError(f"test must be 'randomization' or 'bootstrap', got {self.test!r}")
        if not (0 < self.alpha < 1):
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0 (a drop size in {self.measure} units), got {self.margin}")
        if self.n_resamples < 100:
            raise ValueError(f"n_resamples must be >= 100, got {self.n_resamples}")
        if self.stage not in ("auto", "reranked", "first_stage"):
            raise ValueError(f"stage must be auto, reranked or first_stage, got {self.stage!r}")


@dataclass
class DatasetComparison:
    dataset: str
    key: str
    baseline: ResultRecord
    candidate: ResultRecord
    stage: str
    n: int
    baseline_mean: float
    candidate_mean: float
    delta: float
    ci: tuple[float, float]
    p: float
    p_holm: float = float("nan")
    regression: bool = False
    diffs: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    label: str = ""

    @property
    def group(self) -> tuple:
        """Rows averaged together: same ratio, rerank depth and first stage (a sweep gives one group per ratio)."""
        b = self.baseline
        return (b.ratio, b.rerank_depth, b.first_stage_label, self.stage)

    @property
    def status(self) -> str:
        if self.regression:
            return "REGRESSION"
        return "ok"


@dataclass
class CompareResult:
    options: CompareOptions
    rows: list[DatasetComparison] = field(default_factory=list)
    averages: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    only_baseline: list[str] = field(default_factory=list)
    only_candidate: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.refused:
            return REFUSED
        if any(r.regression for r in self.rows) or any(a["regression"] for a in self.averages):
            return REGRESSION
        return PASS

    @property
    def verdict(self) -> str:
        return {PASS: "PASS", REGRESSION: "FAIL (regression)", REFUSED: "REFUSED"}[self.exit_code]


def _pair_key(rec: ResultRecord) -> str:
    """What must match for two records to be compared: dataset + protocol minus the reranker model."""
    proto = {k: v for k, v in rec.protocol.items() if k not in ("harness_version",)}
    if isinstance(proto.get("reranker"), dict):
        proto["reranker"] = {k: v for k, v in proto["reranker"].items() if k != "model"}
    return canonical_json({"dataset": rec.dataset, "protocol": proto})


def _describe(rec: ResultRecord) -> str:
    bits = [rec.dataset]
    if rec.reranked:
        bits.append(f"r={rec.ratio}")
        bits.append(f"depth={rec.rerank_depth}")
    bits.append(f"first stage {rec.first_stage_label}")
    return " ".join(bits) + f" ({rec.path})"


def _stage_of(rec: ResultRecord, opts: CompareOptions) -> str:
    return rec.main_stage if opts.stage == "auto" else opts.stage


def compare_records(baseline: list[ResultRecord], candidate: list[ResultRecord], opts: CompareOptions) -> CompareResult:
    res = CompareResult(options=opts)
    if not baseline:
        res.refused.append("baseline: no result records found")
    if not candidate:
        res.refused.append("candidate: no result records found")
    if res.refused:
        return res

    by_ds_b: dict[str, list[ResultRecord]] = {}
    by_ds_c: dict[str, list[ResultRecord]] = {}
    for rec in baseline:
        by_ds_b.setdefault(rec.dataset, []).append(rec)
    for rec in candidate:
        by_ds_c.setdefault(rec.dataset, []).append(rec)
    res.only_baseline = sorted(set(by_ds_b) - set(by_ds_c))
    res.only_candidate = sorted(set(by_ds_c) - set(by_ds_b))
    common = sorted(set(by_ds_b) & set(by_ds_c))
    if not common:
        res.refused.append(f"no dataset in common: baseline has {sorted(by_ds_b)}, candidate has {sorted(by_ds_c)}")
        return res
    for ds in res.only_baseline:
        if opts.require_all:
            res.refused.append(f"{ds}: in baseline but not in candidate (require_all=true)")
        else:
            res.warnings.append(f"{ds}: only in baseline, not compared")
    for ds in res.only_candidate:
        res.warnings.append(f"{ds}: only in candidate, not compared")

    pairs: list[tuple[ResultRecord, ResultRecord]] = []
    for ds in common:
        bs, cs = by_ds_b[ds], by_ds_c[ds]
        if len(bs) == 1 and len(cs) == 1:
            diffs = protocol_differences(bs[0].protocol, cs[0].protocol, opts.allow_protocol_diff)
            if diffs:
                res.refused.append(f"{ds}: protocols differ (baseline {bs[0].path}, candidate {cs[0].path}):\n    "
                                   + "\n    ".join(diffs))
            else:
                pairs.append((bs[0], cs[0]))
            continue
        # several records per dataset (e.g. a ratio sweep): pair by protocol, name whatever has no partner
        if opts.allow_protocol_diff:
            res.refused.append(f"{ds}: {len(bs)} baseline and {len(cs)} candidate records; allow_protocol_diff needs "
                               "exactly one record per dataset on each side (pass a single run directory)")
            continue
        keyed_c = {}
        for c in cs:
            keyed_c.setdefault(_pair_key(c), []).append(c)
        used = set()
        for b in bs:
            match = keyed_c.get(_pair_key(b))
            if not match:
                closest = min(cs, key=lambda c: len(protocol_differences(b.protocol, c.protocol)))
                res.refused.append(f"{ds}: baseline {_describe(b)} has no candidate with the same protocol; closest "
                                   f"{closest.path} differs in:\n    " + "\n    ".join(protocol_differences(b.protocol, closest.protocol)))
                continue
            if len(match) > 1:
                res.refused.append(f"{ds}: {len(match)} candidate records share the protocol of baseline {b.path}: "
                                   + ", ".join(str(m.path) for m in match))
                continue
            pairs.append((b, match[0]))
            used.add(id(match[0]))
        for c in cs:
            if id(c) not in used and not any(rf.startswith(f"{ds}:") for rf in res.refused):
                res.warnings.append(f"{ds}: candidate {_describe(c)} has no baseline with the same protocol; not compared")
    if res.refused:
        return res

    for b, c in pairs:
        stage_b, stage_c = _stage_of(b, opts), _stage_of(c, opts)
        if stage_b != stage_c:
            res.refused.append(f"{b.dataset}: baseline stage {stage_b} vs candidate stage {stage_c}")
            continue
        qb, qc = b.per_query(stage_b, opts.measure), c.per_query(stage_c, opts.measure)
        if not qb or not qc:
            side = "baseline" if not qb else "candidate"
            rec = b if not qb else c
            res.refused.append(f"{b.dataset}: {side} {rec.path} has no per-query {opts.measure} values for stage {stage_b} "
                               "(per_query.tsv missing or empty)")
            continue
        if set(qb) != set(qc):
            only_b, only_c = sorted(set(qb) - set(qc)), sorted(set(qc) - set(qb))
            res.refused.append(f"{b.dataset}: the query sets differ ({len(only_b)} only in baseline e.g. {only_b[:3]}, "
                               f"{len(only_c)} only in candidate e.g. {only_c[:3]})")
            continue
        qids = sorted(qb)
        vb = np.array([qb[q] for q in qids])
        vc = np.array([qc[q] for q in qids])
        d = vc - vb
        seed = opts.seed
        p = (randomization_test if opts.test == "randomization" else bootstrap_test)(d, opts.n_resamples, seed)
        res.rows.append(DatasetComparison(dataset=b.dataset, key=_pair_key(b), baseline=b, candidate=c, stage=stage_b,
                                          n=len(qids), baseline_mean=float(vb.mean()), candidate_mean=float(vc.mean()),
                                          delta=float(d.mean()), ci=bootstrap_ci(d, opts.n_resamples, seed), p=p, diffs=d))
    if res.refused:
        return res

    adjusted = holm([r.p for r in res.rows])
    for r, pa in zip(res.rows, adjusted):
        r.p_holm = pa
        r.regression = r.delta < -opts.margin and pa < opts.alpha
    per_dataset = {}
    for r in res.rows:
        per_dataset[r.dataset] = per_dataset.get(r.dataset, 0) + 1
    for r in res.rows:
        r.label = r.dataset + (f" r={r.baseline.ratio}" if per_dataset[r.dataset] > 1 else "")
    groups: dict[tuple, list[DatasetComparison]] = {}
    for r in res.rows:
        groups.setdefault(r.group, []).append(r)
    for (ratio, depth, fs, stage), rows in groups.items():
        if len(rows) < 2:
            continue
        delta = float(np.mean([r.delta for r in rows]))
        p = stratified_test([r.diffs for r in rows], opts.test, opts.n_resamples, opts.seed)
        label = f"average ({len(rows)} datasets, macro)" + (f" r={ratio}" if len(groups) > 1 else "")
        res.averages.append({"label": label, "datasets": [r.dataset for r in rows], "ratio": ratio,
                             "baseline_mean": float(np.mean([r.baseline_mean for r in rows])),
                             "candidate_mean": float(np.mean([r.candidate_mean for r in rows])), "delta": delta, "p": p,
                             "regression": delta < -opts.margin and p < opts.alpha})
    return res


# ---- rendering ------------------------------------------------------------------------------------------------------

def _model_desc(rec: ResultRecord) -> str:
    if not rec.model:
        return f"{rec.first_stage_label} (first stage)"
    m = rec.model
    return f"{m.label}" + (f" [{m.checkpoint}]" if m.checkpoint and m.checkpoint != m.label else "") + (f" {m.dtype}" if m.dtype else "")


def _fmt_p(p: float) -> str:
    return "nan" if math.isnan(p) else (f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}")


def result_table(res: CompareResult) -> tuple[list[str], list[list[str]]]:
    o = res.options
    headers = ["Dataset", "Stage", "Queries", f"Baseline {o.measure}", f"Candidate {o.measure}", "Δ", "95% CI (bootstrap)",
               f"p ({o.test})", "p (Holm)", "Status"]
    rows = []
    for r in res.rows:
        rows.append([r.label or r.dataset, r.stage, str(r.n), f"{r.baseline_mean:.4f}", f"{r.candidate_mean:.4f}", f"{r.delta:+.4f}",
                     f"[{r.ci[0]:+.4f}, {r.ci[1]:+.4f}]", _fmt_p(r.p), _fmt_p(r.p_holm), r.status])
    for a in res.averages:
        rows.append([a["label"], "", "", f"{a['baseline_mean']:.4f}", f"{a['candidate_mean']:.4f}",
                     f"{a['delta']:+.4f}", "", _fmt_p(a["p"]) + " (stratified)", "", "REGRESSION" if a["regression"] else "ok"])
    return headers, rows


def to_markdown(res: CompareResult, baseline_roots: list[str], candidate_roots: list[str]) -> str:
    o = res.options
    lines = [f"# Regression gate: {res.verdict}", "",
             f"- baseline: {', '.join(map(str, baseline_roots))}", f"- candidate: {', '.join(map(str, candidate_roots))}",
             f"- rule: a dataset fails when Δ < −{o.margin:g} ({o.measure}) and its Holm-adjusted p < {o.alpha:g}; "
             f"the macro average fails when Δ_avg < −{o.margin:g} and its stratified p < {o.alpha:g}",
             f"- test: two-sided paired {o.test}, {o.n_resamples} resamples, seed {o.seed}; Holm across {len(res.rows)} dataset(s)", ""]
    if res.refused:
        lines += ["## Refused", "", "The runs were not produced under the same protocol (or cannot be paired):", ""]
        lines += [f"- {r}" for r in res.refused]
        lines.append("")
    if res.rows:
        headers, rows = result_table(res)
        lines += ["## Per dataset", "", "| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        lines += ["", "## Models", ""]
        for r in res.rows:
            lines.append(f"- {r.dataset}: baseline {_model_desc(r.baseline)} ({r.baseline.path}); "
                         f"candidate {_model_desc(r.candidate)} ({r.candidate.path})")
        lines.append("")
    if res.warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in res.warnings] + [""]
    return "\n".join(lines)


def to_console(res: CompareResult) -> str:
    out = [f"regression gate: {res.verdict}"]
    for r in res.refused:
        out.append(f"REFUSED  {r}")
    if res.rows:
        headers, rows = result_table(res)
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
        out.append("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
        out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    out += [f"warning: {w}" for w in res.warnings]
    return "\n".join(out)


def to_json(res: CompareResult) -> dict[str, Any]:
    return {
        "verdict": res.verdict, "exit_code": res.exit_code,
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in res.options.__dict__.items()},
        "refused": res.refused, "warnings": res.warnings,
        "datasets": [{"dataset": r.dataset, "label": r.label, "ratio": r.baseline.ratio, "stage": r.stage, "queries": r.n, "baseline": r.baseline_mean,
                      "candidate": r.candidate_mean, "delta": r.delta, "ci95": list(r.ci), "p": r.p, "p_holm": r.p_holm,
                      "regression": r.regression, "baseline_record": str(r.baseline.path),
                      "candidate_record": str(r.candidate.path)} for r in res.rows],
        "averages": res.averages,
    }
