"""The baselines table (the paper's main comparison): every reranker we ran — KaLM sizes at each r and the baseline
families (Qwen3-Reranker, cross-encoders, bge-reranker-v2-gemma) — with its parameters, its BEIR / MIRACL / LMEB
nDCG@10 beside the paper's, its measured online ms/pair and the paper's analytic relative online cost; then the
published rows no result here covers. Each benchmark value is marked with its difference from the reference KaLM row
(Nano at r = 4 when present, else the first KaLM row; same first stage) and the gate's paired test, Holm-adjusted
over the table (significance.py)."""

from __future__ import annotations

import pandas as pd

from kalm_eval.catalogue import preset
from kalm_eval.report.aggregate import FIRST_STAGE, RERANKED, RERANKER_CONDITION, condition_sort_key, mean_over, model_labels
from kalm_eval.report.matching import paper_row_for
from kalm_eval.report.options import ReportOptions
from kalm_eval.report.paper import AVERAGE, Paper
from kalm_eval.report.paper_table import ratio_text, suite_value
from kalm_eval.report.render import MISSING, Section, Table, pts, text_frame
from kalm_eval.report.significance import difference, holm_adjusted, mark, unit_paths
from kalm_eval.report.significance import note as significance_note

BENCHMARKS = ("beir", "miracl", "lmeb")
REFERENCE = (preset("nano").paper_row, 4)  # measured cost is relative to Nano at r = 4 (v3 states r = 4) when present
MODEL_KEY = RERANKER_CONDITION + ["first_stage_key"]


def baselines_section(rows: pd.DataFrame, paper: Paper | None, opts: ReportOptions,
                      units: pd.DataFrame | None = None) -> Section | None:
    """`rows`: aggregated condition rows (aggregate.condition_rows + aggregate_subsets) of the report's measure;
    `units`: the same rows before aggregation (condition_rows), for the significance marks (None: no marks)."""
    reranked = rows[rows["kind"] == RERANKED].copy()
    if reranked.empty:
        return None
    labels = model_labels(rows)
    reranked["label"] = reranked["condition"].map(labels)
    reranked["paper_row"] = [paper_row_for(row, row["label"], paper, opts)[0] for _, row in reranked.iterrows()]
    benchmarks = list(BENCHMARKS) + sorted(set(reranked["benchmark"]) - set(BENCHMARKS))
    models = [group for _, group in reranked.groupby(MODEL_KEY, dropna=False, sort=False)]
    order = tuple(paper.table("beir").model_names()) if paper and paper.table("beir") else ()
    models.sort(key=lambda g: condition_sort_key(g.iloc[0], order, g["paper_row"].iloc[0]))
    reference = reference_latency(reranked)
    tests, references = versus_reference(models, benchmarks, units, opts.measure)
    table_rows = [model_cells(group, benchmarks, reference, paper, tests, references) for group in models]
    table_rows += published_only_rows({g["paper_row"].iloc[0] for g in models}, benchmarks, paper)
    headers = ["Model", "Family", "r", "Params"] + [f"{b.upper()} {who}" for b in benchmarks for who in ("ours", "paper")]
    headers += ["ms/pair p50 (measured)", "measured rel. online cost", "paper rel. online cost (analytic)"]
    notes = [f"{opts.measure} ×100. A benchmark cell is the suite average when every dataset of the paper's suite is "
             "present, else 'partial: k/N (mean of present)'; without a paper table, the mean of the datasets present.",
             "ms/pair p50: the warm scoring phase (timings.latency), mean over this model's datasets; "
             f"measured rel. cost: divided by {REFERENCE[0]} at r={REFERENCE[1]} on the same device (else by the "
             "fastest row on that device).",
             "Paper columns: the paper's own runs on its candidates (v1: KaLM-Embedding-V2.5 top-100); the analytic cost "
             "column's formula is not published. Rows marked '(paper only)' have no result here."]
    tested = [t for t in tests.values() if t is not None]
    if tests:
        notes.append(significance_note("the reference KaLM row of the same first stage (marked 'ref': "
                                       f"{REFERENCE[0]} at r={REFERENCE[1]} when present, else the first KaLM row)",
                                       len(tested)) + " Over a benchmark the test is stratified by dataset (datasets "
                     "both rows have).")
    table = Table(title="Rerankers compared: quality and online cost", frame=text_frame(table_rows, headers),
                  notes=notes, label_cols=4)
    return Section(name="baselines", title="Baselines", tables=[table])


def reference_row(groups: list[pd.DataFrame]) -> pd.DataFrame | None:
    """The KaLM row every other row of one first stage is tested against."""
    kalm = [g for g in groups if g["reranker"].iloc[0] == "kalm"]
    preferred = [g for g in kalm if g["paper_row"].iloc[0] == REFERENCE[0] and g["compression"].iloc[0] == REFERENCE[1]]
    return (preferred or kalm or [None])[0]


def versus_reference(models: list[pd.DataFrame], benchmarks: list[str], units: pd.DataFrame | None,
                     measure: str) -> tuple[dict, set]:
    """((condition, benchmark) -> Difference vs the reference row, Holm-adjusted; the reference conditions)."""
    if units is None:
        return {}, set()
    found, references = {}, set()
    by_first_stage: dict = {}
    for group in models:
        by_first_stage.setdefault(group["first_stage_key"].iloc[0], []).append(group)
    for groups in by_first_stage.values():
        ref = reference_row(groups)
        if ref is None:
            continue
        references.add(ref["condition"].iloc[0])
        for group in groups:
            if group is ref:
                continue
            for bench in benchmarks:
                if bench not in set(group["benchmark"]) or bench not in set(ref["benchmark"]):
                    continue
                in_bench = set(units.loc[units["benchmark"] == bench, "unit"])
                found[(group["condition"].iloc[0], bench)] = difference(
                    unit_paths(units, ref["condition"].iloc[0], in_bench),
                    unit_paths(units, group["condition"].iloc[0], in_bench), measure)
    return holm_adjusted(found), references


def reference_latency(reranked: pd.DataFrame) -> dict[str, tuple[float, str]]:
    """device -> (reference ms/pair p50, its label)."""
    out = {}
    timed = reranked[reranked["latency_p50"].notna()]
    for device, group in timed.groupby("latency_device", dropna=False):
        nano = group[(group["paper_row"] == REFERENCE[0]) & (group["compression"] == REFERENCE[1])]
        pick = nano if len(nano) else group[group["latency_p50"] == group["latency_p50"].min()]
        row = pick.iloc[0]
        out[device] = (float(pick["latency_p50"].mean()), f"{row['label']} r={ratio_text(row)}")
    return out


def model_cells(group: pd.DataFrame, benchmarks: list[str], reference: dict, paper: Paper | None,
                tests: dict | None = None, references: set | None = None) -> list[str]:
    first = group.iloc[0]
    paper_row = first["paper_row"]
    tests, references = tests or {}, references or set()
    cells = [first["label"] + (f" → {paper_row}" if paper_row else ""), first["reranker"], ratio_text(first),
             (paper.size_of(paper_row) if paper and paper_row else None) or "unknown"]
    for bench in benchmarks:
        value = benchmark_value(group[group["benchmark"] == bench], bench, paper)
        if (first["condition"], bench) in tests:
            value += mark(tests[(first["condition"], bench)])
        elif first["condition"] in references and value != MISSING and any(b == bench for _, b in tests):
            value += " (ref)"
        cells += [value, published(paper, bench, paper_row)]
    timed = group[group["latency_p50"].notna()]
    if timed.empty:
        return cells + [MISSING, MISSING, cost_text(paper, paper_row)]
    device = timed["latency_device"].iloc[0]
    ms = float(timed["latency_p50"].mean())
    ref = reference.get(device)
    relative = f"{ms / ref[0]:.2f}x (vs {ref[1]})" if ref else MISSING
    return cells + [f"{ms:.3f} ({device})", relative, cost_text(paper, paper_row)]


def benchmark_value(rows: pd.DataFrame, bench: str, paper: Paper | None) -> str:
    if rows.empty:
        return MISSING
    table = paper.table(bench) if paper else None
    by_unit = {row["unit"]: row for _, row in rows.iterrows()}
    if table is None:
        mean = mean_over(rows["value"])
        return f"{pts(mean.mean)} (mean of {mean.n})"
    mean = mean_over(suite_value(column, by_unit, table) for column in table.columns)
    if mean.complete:
        return pts(mean.mean, table.precision)
    return f"partial: {mean.n}/{mean.of}" + (f" ({pts(mean.mean, table.precision)})" if mean.mean is not None else "")


def published(paper: Paper | None, bench: str, paper_row: str | None) -> str:
    table = paper.table(bench) if paper else None
    if table is None or not paper_row:
        return ""
    cells = [r.cells[AVERAGE] for r in table.rows if r.model == paper_row and not r.variant and AVERAGE in r.cells]
    return f"{cells[0].value:.{cells[0].precision}f}" if cells else ""


def cost_text(paper: Paper | None, paper_row: str | None) -> str:
    cell, _ = paper.relative_cost(paper_row) if paper and paper_row else (None, None)
    return f"{cell.value:g}x" if cell else "n/a"


def published_only_rows(covered: set, benchmarks: list[str], paper: Paper | None) -> list[list[str]]:
    """The paper's rerankers (not the first stage) without a result here, with their published numbers."""
    if paper is None:
        return []
    names = []
    for table in paper.tables.values():
        names += [r.model for r in table.rows if r.role != FIRST_STAGE and not r.variant and r.model not in covered]
    rows = []
    for name in dict.fromkeys(names):
        cells = [f"{name} (paper only)", "", "", paper.size_of(name) or "unknown"]
        for bench in benchmarks:
            cells += ["", published(paper, bench, name)]
        rows.append(cells + ["", "", cost_text(paper, name)])
    return rows

