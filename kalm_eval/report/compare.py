"""Regression gate: pair a baseline's and a candidate's result records, test, decide.

Pairing: per dataset both sides have, records are paired when their protocols agree (protocol.py) — a sweep pairs
ratio with ratio; whatever has no partner is refused and the closest record's differences named. Per pair, the
per-query values of one measure (default nDCG@10) are paired on query id; Δ = mean(candidate − baseline), a
two-sided paired test (stats.py) gives p, Holm adjusts p across pairs. The gate fails when a pair has
Δ < −margin AND Holm-adjusted p < alpha, or when a macro average over datasets (the paper's kind of average) does:
Δ_avg < −margin and its stratified p < alpha. Exit codes: 0 pass, 1 regression, 2 refused.

Then the gate explains itself (drilldown.py): per pair, wins / ties / losses over queries and the `drilldown` (N)
queries with the largest loss and gain, with texts, the relevant documents' ranks and the top passages per side."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kalm_eval.metrics import MAIN_MEASURE
from kalm_eval.report import labels, stats
from kalm_eval.report.drilldown import DatasetDrilldown, DatasetTexts, drilldown
from kalm_eval.report.protocol import pair_key, protocol_differences
from kalm_eval.result import ResultRecord

PASS, REGRESSION, REFUSED = 0, 1, 2


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
    drilldown: int = 10  # queries with the largest loss / gain shown per dataset (0: counts only, no texts read)

    def __post_init__(self):
        if self.test not in ("randomization", "bootstrap"):
            raise ValueError(f"test must be 'randomization' or 'bootstrap', got {self.test!r}")
        if not (0 < self.alpha < 1):
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0 (a drop size in {self.measure} units), got {self.margin}")
        if self.n_resamples < 100:
            raise ValueError(f"n_resamples must be >= 100, got {self.n_resamples}")
        if isinstance(self.drilldown, bool) or not isinstance(self.drilldown, int) or self.drilldown < 0:
            raise ValueError(f"drilldown must be an integer >= 0 (queries shown per dataset), got {self.drilldown!r}")
        if self.stage not in ("auto", "reranked", "first_stage"):
            raise ValueError(f"stage must be auto, reranked or first_stage, got {self.stage!r}")


@dataclass
class DatasetComparison:
    dataset: str
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
    query_ids: tuple[str, ...] = ()  # the order of `diffs` and `baseline_values`
    baseline_values: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    @property
    def group(self) -> tuple:
        """Pairs averaged together: same plan (ratio or cascade), rerank depth, first stage and stage."""
        b = self.baseline
        return (b.compression, labels.cascade_text(b), b.rerank_depth, labels.first_stage_label(b), self.stage)

    @property
    def status(self) -> str:
        return "REGRESSION" if self.regression else "ok"


@dataclass
class AverageComparison:
    label: str
    datasets: list[str]
    compression: int | None
    baseline_mean: float
    candidate_mean: float
    delta: float
    p: float
    regression: bool


@dataclass
class CompareResult:
    options: CompareOptions
    rows: list[DatasetComparison] = field(default_factory=list)
    averages: list[AverageComparison] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    only_baseline: list[str] = field(default_factory=list)
    only_candidate: list[str] = field(default_factory=list)
    drilldowns: list[DatasetDrilldown] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.refused:
            return REFUSED
        if any(r.regression for r in self.rows) or any(a.regression for a in self.averages):
            return REGRESSION
        return PASS

    @property
    def verdict(self) -> str:
        return {PASS: "PASS", REGRESSION: "FAIL (regression)", REFUSED: "REFUSED"}[self.exit_code]


def compare_records(baseline: list[ResultRecord], candidate: list[ResultRecord], opts: CompareOptions) -> CompareResult:
    result = CompareResult(options=opts)
    pairs = pair_records(baseline, candidate, result)
    if result.refused:
        return result
    for b, c in pairs:
        row = compare_pair(b, c, opts, result)
        if row is not None:
            result.rows.append(row)
    if not result.refused:
        apply_gate(result)
        explain(result)
    return result


def explain(result: CompareResult) -> None:
    """The drill-down of every compared pair (wins / ties / losses always; details for `drilldown` queries)."""
    n = result.options.drilldown
    texts: dict[str, DatasetTexts] = {}
    for row in result.rows:
        if n and row.dataset not in texts:
            texts[row.dataset] = DatasetTexts.from_record(row.baseline)
        source = texts.get(row.dataset) or DatasetTexts()
        result.drilldowns.append(drilldown(row.label or row.dataset, row.baseline, row.candidate, row.stage,
                                           row.query_ids, row.diffs, row.baseline_values, n, source))


# ---- pairing --------------------------------------------------------------------------------------------------------

def pair_records(baseline: list[ResultRecord], candidate: list[ResultRecord],
                 result: CompareResult) -> list[tuple[ResultRecord, ResultRecord]]:
    """(baseline, candidate) pairs of the datasets both sides have; refusals and warnings go into `result`."""
    for side, records in (("baseline", baseline), ("candidate", candidate)):
        if not records:
            result.refused.append(f"{side}: no result records found")
    if result.refused:
        return []
    by_b, by_c = _by_dataset(baseline), _by_dataset(candidate)
    result.only_baseline = sorted(set(by_b) - set(by_c))
    result.only_candidate = sorted(set(by_c) - set(by_b))
    common = sorted(set(by_b) & set(by_c))
    if not common:
        result.refused.append(f"no dataset in common: baseline has {sorted(by_b)}, candidate has {sorted(by_c)}")
        return []
    _note_unpaired_datasets(result)
    pairs = []
    for dataset in common:
        pairs += _pair_dataset(dataset, by_b[dataset], by_c[dataset], result)
    return pairs


def _by_dataset(records: list[ResultRecord]) -> dict[str, list[ResultRecord]]:
    out: dict[str, list[ResultRecord]] = {}
    for record in records:
        out.setdefault(record.dataset, []).append(record)
    return out


def _note_unpaired_datasets(result: CompareResult) -> None:
    for dataset in result.only_baseline:
        if result.options.require_all:
            result.refused.append(f"{dataset}: in baseline but not in candidate (require_all=true)")
        else:
            result.warnings.append(f"{dataset}: only in baseline, not compared")
    for dataset in result.only_candidate:
        result.warnings.append(f"{dataset}: only in candidate, not compared")


def _pair_dataset(dataset: str, bs: list[ResultRecord], cs: list[ResultRecord], result: CompareResult) -> list[tuple]:
    allowed = result.options.allow_protocol_diff
    if len(bs) == 1 and len(cs) == 1:
        differences = protocol_differences(bs[0].protocol, cs[0].protocol, allowed)
        if not differences:
            return [(bs[0], cs[0])]
        result.refused.append(f"{dataset}: protocols differ (baseline {bs[0].path}, candidate {cs[0].path}):\n    "
                              + "\n    ".join(differences))
        return []
    if allowed:
        result.refused.append(f"{dataset}: {len(bs)} baseline and {len(cs)} candidate records; allow_protocol_diff needs "
                              "exactly one record per dataset on each side (pass a single run directory)")
        return []
    return _pair_by_protocol(dataset, bs, cs, result)


def _pair_by_protocol(dataset: str, bs: list[ResultRecord], cs: list[ResultRecord], result: CompareResult) -> list[tuple]:
    """Several records per dataset (e.g. a ratio sweep): pair by protocol, name whatever has no partner."""
    by_key: dict[str, list[ResultRecord]] = {}
    for c in cs:
        by_key.setdefault(pair_key(c), []).append(c)
    pairs, refused_before = [], len(result.refused)
    for b in bs:
        match = by_key.get(pair_key(b), [])
        if len(match) == 1:
            pairs.append((b, match[0]))
        elif match:
            result.refused.append(f"{dataset}: {len(match)} candidate records share the protocol of baseline {b.path}: "
                                  + ", ".join(str(m.path) for m in match))
        else:
            closest = min(cs, key=lambda c: len(protocol_differences(b.protocol, c.protocol)))
            result.refused.append(f"{dataset}: baseline {describe(b)} has no candidate with the same protocol; closest "
                                  f"{closest.path} differs in:\n    "
                                  + "\n    ".join(protocol_differences(b.protocol, closest.protocol)))
    if len(result.refused) == refused_before:
        paired = {id(c) for _, c in pairs}
        result.warnings += [f"{dataset}: candidate {describe(c)} has no baseline with the same protocol; not compared"
                            for c in cs if id(c) not in paired]
    return pairs


def describe(record: ResultRecord) -> str:
    bits = [record.dataset]
    if record.reranked:
        bits.append(labels.plan_text(record) or "")
    bits.append(f"first stage {labels.first_stage_label(record)}")
    return " ".join(bits) + f" ({record.path})"


# ---- testing a pair -------------------------------------------------------------------------------------------------

def stage_of(record: ResultRecord, opts: CompareOptions) -> str:
    return record.main_stage if opts.stage == "auto" else opts.stage


def compare_pair(b: ResultRecord, c: ResultRecord, opts: CompareOptions, result: CompareResult) -> DatasetComparison | None:
    stage = stage_of(b, opts)
    if stage_of(c, opts) != stage:
        result.refused.append(f"{b.dataset}: baseline stage {stage} vs candidate stage {stage_of(c, opts)}")
        return None
    qb, qc = b.per_query(stage, opts.measure), c.per_query(stage, opts.measure)
    if not qb or not qc:
        side, record = ("baseline", b) if not qb else ("candidate", c)
        result.refused.append(f"{b.dataset}: {side} {record.path} has no per-query {opts.measure} values for stage "
                              f"{stage} (per_query.tsv missing or empty)")
        return None
    if set(qb) != set(qc):
        only_b, only_c = sorted(set(qb) - set(qc)), sorted(set(qc) - set(qb))
        result.refused.append(f"{b.dataset}: the query sets differ ({len(only_b)} only in baseline e.g. {only_b[:3]}, "
                              f"{len(only_c)} only in candidate e.g. {only_c[:3]})")
        return None
    qids = sorted(qb)
    vb, vc = np.array([qb[q] for q in qids]), np.array([qc[q] for q in qids])
    d = vc - vb
    test = stats.randomization_test if opts.test == "randomization" else stats.bootstrap_test
    return DatasetComparison(dataset=b.dataset, baseline=b, candidate=c, stage=stage, n=len(qids),
                             baseline_mean=float(vb.mean()), candidate_mean=float(vc.mean()), delta=float(d.mean()),
                             ci=stats.bootstrap_ci(d, opts.n_resamples, opts.seed),
                             p=test(d, opts.n_resamples, opts.seed), diffs=d, query_ids=tuple(qids),
                             baseline_values=vb)


# ---- the gate -------------------------------------------------------------------------------------------------------

def apply_gate(result: CompareResult) -> None:
    """Holm across pairs, the per-pair rule, labels, and the macro averages of each group of pairs."""
    opts = result.options
    for row, p_holm in zip(result.rows, stats.holm([r.p for r in result.rows])):
        row.p_holm = p_holm
        row.regression = row.delta < -opts.margin and p_holm < opts.alpha
    per_dataset: dict[str, int] = {}
    for row in result.rows:
        per_dataset[row.dataset] = per_dataset.get(row.dataset, 0) + 1
    for row in result.rows:
        plan = labels.plan_text(row.baseline)
        short = f"r={row.baseline.compression}" if row.baseline.compression is not None else plan
        row.label = row.dataset + (f" {short}" if per_dataset[row.dataset] > 1 else "")
    groups: dict[tuple, list[DatasetComparison]] = {}
    for row in result.rows:
        groups.setdefault(row.group, []).append(row)
    result.averages = [_average(rows, len(groups) > 1, opts) for rows in groups.values() if len(rows) >= 2]


def _average(rows: list[DatasetComparison], several_groups: bool, opts: CompareOptions) -> AverageComparison:
    delta = float(np.mean([r.delta for r in rows]))
    p = stats.stratified_test([r.diffs for r in rows], opts.test, opts.n_resamples, opts.seed)
    compression = rows[0].baseline.compression
    label = f"average ({len(rows)} datasets, macro)" + (f" r={compression}" if several_groups else "")
    return AverageComparison(label=label, datasets=[r.dataset for r in rows], compression=compression,
                             baseline_mean=float(np.mean([r.baseline_mean for r in rows])),
                             candidate_mean=float(np.mean([r.candidate_mean for r in rows])), delta=delta, p=p,
                             regression=delta < -opts.margin and p < opts.alpha)
