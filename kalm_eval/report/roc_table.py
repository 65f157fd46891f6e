"""ROC-AUC vs compression ratio r per model (issue 14.1), from stages.reranked.roc_auc*, with the paper's published
ROC-AUC figures (v1: FiQA, r = 2 and 32) beside the matching rows."""

from __future__ import annotations

import pandas as pd

from kalm_eval.report.aggregate import RERANKED, aggregate_subsets, condition_rows, condition_sort_key, is_missing, model_labels
from kalm_eval.report.matching import paper_row_for
from kalm_eval.report.options import ReportOptions
from kalm_eval.report.paper import Figure, Paper, verdict
from kalm_eval.report.paper_table import ratio_text
from kalm_eval.report.render import MISSING, Section, Table, num, text_frame

POOLED, QUERY_MEAN, QUERIES = "roc_auc", "roc_auc_query_mean", "roc_auc_queries"
DEFINITION = ("ROC-AUC pooled: one AUC over every reranked (query, candidate) pair of the dataset, scored by the "
              "reranker's margin; positive = qrel > 0, every other reranked candidate (judged 0 or unjudged) negative. "
              "Per-query mean: the mean of per-query AUCs over the queries that have both classes (their number shown). "
              "A dataset of subsets shows the mean over its subsets.")
HEADERS = ["Dataset", "Model", "r", "ROC-AUC pooled", "ROC-AUC per-query mean", "queries (both classes)",
           "paper ROC-AUC", "Δ (pooled − paper)", "Verdict"]


def roc_rows(frame: pd.DataFrame, paper: Paper | None, opts: ReportOptions) -> pd.DataFrame:
    """One row per (reranked condition, dataset) with a pooled AUC: `roc_auc`, `roc_auc_query_mean`,
    `roc_auc_queries`, `label`, `paper_row`."""
    rows = aggregate_subsets(condition_rows(frame, POOLED, stages=(RERANKED,)))
    if rows.empty:
        return rows
    rows = rows.rename(columns={"value": POOLED})
    for measure in (QUERY_MEAN, QUERIES):
        extra = aggregate_subsets(condition_rows(frame, measure, stages=(RERANKED,)))
        if measure == QUERIES:  # a count: the subsets' sum, not their mean
            extra["value"] = extra["value"] * extra["subsets"].fillna(1).astype(float)
        values = extra.set_index(["condition", "unit"])["value"]
        rows[measure] = [values.get((c, u)) for c, u in zip(rows["condition"], rows["unit"])]
    labels = model_labels(rows)
    rows["label"] = rows["condition"].map(labels)
    rows["paper_row"] = [paper_row_for(row, row["label"], paper, opts)[0] for _, row in rows.iterrows()]
    order = sorted(range(len(rows)), key=lambda i: (rows["unit"].iat[i], condition_sort_key(rows.iloc[i])))
    return rows.iloc[order].reset_index(drop=True)


def paper_figure(paper: Paper | None, unit: str, paper_row: str | None, compression) -> Figure | None:
    if paper is None or not paper_row or is_missing(compression):
        return None
    for figures in paper.figures:
        for item in figures.items:
            if item.metric == "ROC-AUC" and item.dataset == unit and item.model == paper_row and item.ratio == int(compression):
                return item
    return None


def roc_section(frame: pd.DataFrame, paper: Paper | None, opts: ReportOptions) -> Section | None:
    rows = roc_rows(frame, paper, opts)
    if rows.empty:
        return None
    table_rows, matched = [], set()
    for _, row in rows.iterrows():
        figure = paper_figure(paper, row["unit"], row["paper_row"], row["compression"])
        matched.add(figure)
        table_rows.append(roc_cells(row, figure))
    notes = [DEFINITION]
    figure_sets = paper.figures if paper else []
    unmatched = [f for fs in figure_sets for f in fs.items if f.metric == "ROC-AUC" and f not in matched]
    table_rows += [[f.dataset, f"{f.model} (paper only)", str(f.ratio), "", "", "", f"{f.cell.value:.{f.cell.precision}f}",
                    "", ""] for f in unmatched]
    if figure_sets:
        notes += [f"Paper figures: {fs.source}" for fs in figure_sets]
        notes.append("The paper's ROC-AUC method is not published: its figures are set beside our pooled AUC; the verdict "
                     "(tolerance from the paper spec) is indicative only.")
    table = Table(title="ROC-AUC vs compression ratio r", frame=text_frame(table_rows, HEADERS), notes=notes, label_cols=3)
    records = rows[["unit", "label", "paper_row", "compression", POOLED, QUERY_MEAN, QUERIES, "path"]].rename(
        columns={"unit": "dataset", "label": "model", "compression": "ratio", "path": "record"})
    return Section(name="roc_auc", title="ROC-AUC", tables=[table], records=records)


def roc_cells(row: pd.Series, figure: Figure | None) -> list[str]:
    label = row["label"] + (f" → {row['paper_row']}" if row["paper_row"] else "")
    queries = row[QUERIES]
    cells = [row["unit"], label, ratio_text(row), num(row[POOLED], "{:.3f}"), num(row[QUERY_MEAN], "{:.3f}"),
             MISSING if is_missing(queries) else f"{queries:.0f}"]
    if figure is None:
        return cells + ["", "", ""]
    delta, result = verdict(float(row[POOLED]), figure.cell)
    p = figure.cell.precision
    return cells + [f"{figure.cell.value:.{p}f}", f"{delta:+.{p}f}", result or "n/a"]
