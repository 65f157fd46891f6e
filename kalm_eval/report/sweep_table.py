"""The compression sweep: quality per MEP ratio r and model size, per dataset (pivot r × model), with the first
stage and the recall ceiling beside it, a mean over datasets, and what the paper publishes per r. Each value at r > 1
is marked with its difference from r = 1 of the same model and the gate's paired test, Holm-adjusted per table
(significance.py)."""

from __future__ import annotations

import pandas as pd

from kalm_eval.report.aggregate import (RERANKED, aggregate_subsets, condition_rows, condition_sort_key, is_missing,
                                        mean_over, model_labels)
from kalm_eval.report.options import ReportOptions
from kalm_eval.report.paper import AVERAGE, Paper
from kalm_eval.report.render import MISSING, Section, Table, pts, text_frame
from kalm_eval.report.significance import difference, holm_adjusted, mark, unit_paths
from kalm_eval.report.significance import note as significance_note

FAMILY = ["first_stage_key", "first_stage", "first_stage_depth", "rerank_depth"]
SWEEP_NOTE = ("'missing' = no result for this size and r. The recall ceiling is the first stage's recall at the rerank "
              "depth: no reranking of that head can recall more.")


def sweep_rows(frame: pd.DataFrame, measure: str) -> pd.DataFrame:
    """Aggregated reranked rows of single-ratio MEP runs (cascades and families without r are not sweeps), with
    `label` (model) and `first_value` (the first stage's value on the same unit)."""
    rows = aggregate_subsets(condition_rows(frame, measure))
    sweep = rows[(rows["kind"] == RERANKED) & rows["compression"].notna() & rows["cascade"].isna()].copy()
    labels = model_labels(rows)
    sweep["label"] = sweep["condition"].map(labels)
    first = rows[rows["kind"] != RERANKED].set_index(["first_stage_key", "unit"])["value"]
    sweep["first_value"] = [first.get((k, u)) for k, u in zip(sweep["first_stage_key"], sweep["unit"])]
    return sweep


def model_order(sweep: pd.DataFrame) -> list[str]:
    firsts = sweep.drop_duplicates("label")
    return [row["label"] for _, row in sorted(firsts.iterrows(), key=lambda item: condition_sort_key(item[1]))]


def sweep_sections(frame: pd.DataFrame, paper: Paper | None, opts: ReportOptions) -> list[Section]:
    sweep = sweep_rows(frame, opts.measure)
    raw = condition_rows(frame, opts.measure, stages=(RERANKED,))
    ceilings = aggregate_subsets(condition_rows(frame, "recall_ceiling", stages=(RERANKED,)))
    ceiling = ceilings.set_index(["condition", "unit"])["value"]
    sections = []
    for bench in sorted(sweep["benchmark"].unique()):
        rows = sweep[sweep["benchmark"] == bench]
        section = Section(name=f"compression_sweep.{bench}",
                          title=f"Compression sweep: {bench.upper()} ({opts.measure} ×100 per ratio r)")
        records = []
        for _, group in rows.groupby(["unit"] + FAMILY, sort=True, dropna=False):
            table, table_records = dataset_sweep(group, ceiling, opts, raw)
            section.tables.append(table)
            records += table_records
        mean = mean_sweep(bench, rows)
        if mean is not None:
            section.tables.append(mean[0])
            records += mean[1]
        section.tables += published_sweep_tables(bench, paper)
        section.records = pd.DataFrame(records, columns=SWEEP_CSV).astype({"ratio": "Int64", "queries": "Int64"})
        sections.append(section)
    return sections


SWEEP_CSV = ["dataset", "row", "model", "ratio", "measure", "value", "queries", "record", "delta_vs_r1", "p_holm"]


def versus_r1(group: pd.DataFrame, raw: pd.DataFrame | None, measure: str) -> dict:
    """(model label, r) -> Difference from r = 1 of the same model on this table's unit, Holm-adjusted over the table."""
    if raw is None:
        return {}
    unit = group["unit"].iloc[0]
    references = {row["label"]: row["condition"] for _, row in group.iterrows() if row["compression"] == 1}
    found = {}
    for _, row in group.iterrows():
        if row["compression"] != 1 and row["label"] in references:
            found[(row["label"], int(row["compression"]))] = difference(
                unit_paths(raw, references[row["label"]], {unit}), unit_paths(raw, row["condition"], {unit}), measure)
    return holm_adjusted(found)


def dataset_sweep(group: pd.DataFrame, ceiling: pd.Series, opts: ReportOptions,
                  raw: pd.DataFrame | None = None) -> tuple[Table, list[dict]]:
    """`raw`: the unaggregated reranked condition rows (aggregate.condition_rows), for the marks vs r = 1."""
    first = group.iloc[0]
    unit, models = first["unit"], model_order(group)
    tests = versus_r1(group, raw, opts.measure)
    tested = {label for label, _ in tests}

    def cell(r, m) -> str:
        if m not in values.columns or pd.isna(values.at[r, m]):
            return MISSING
        text = pts(values.at[r, m])
        if (m, int(r)) in tests:
            return text + mark(tests[(m, int(r))])
        return text + (" (ref)" if r == 1 and m in tested else "")

    values = group.pivot_table(index="compression", columns="label", values="value", aggfunc="first")
    depth = None if is_missing(first["rerank_depth"]) else int(first["rerank_depth"])
    ceiling_value = next((ceiling.get((c, unit)) for c in group["condition"] if (c, unit) in ceiling.index), None)
    ceiling_name = f"R@{depth}" if depth else "first-stage recall at depth"
    rows = [[f"first stage ({first['first_stage']})"] + [pts(first["first_value"])] * len(models)]
    rows += [[str(r)] + [cell(r, m) for m in models] for r in values.index]
    rows.append([f"recall ceiling ({ceiling_name})"] + [pts(ceiling_value)] * len(models))
    records = [_record(unit, "first_stage", m, None, opts.measure, first["first_value"]) for m in models]
    records += [_record(unit, RERANKED, r["label"], r["compression"], opts.measure, r["value"], r["queries"], r["path"],
                        tests.get((r["label"], int(r["compression"]))))
                for _, r in group.iterrows()]
    records += [_record(unit, "recall_ceiling", m, None, ceiling_name, ceiling_value) for m in models]
    title = (f"{unit} — first stage {first['first_stage']}"
             + ("" if is_missing(first["first_stage_depth"]) else f" top-{int(first['first_stage_depth'])}")
             + (f", rerank top-{depth}" if depth else ""))
    notes = [SWEEP_NOTE] + ([significance_note("r = 1 of the same model", len(tests))] if tests else [])
    return Table(title=title, frame=text_frame(rows, ["r"] + models), notes=notes), records


def _record(unit, row, model, ratio, measure, value, queries=None, path=None, test=None) -> dict:
    return {"dataset": unit, "row": row, "model": model, "ratio": None if is_missing(ratio) else int(ratio),
            "measure": measure, "value": None if is_missing(value) else float(value),
            "queries": None if is_missing(queries) else int(queries), "record": path,
            "delta_vs_r1": None if test is None else test.delta, "p_holm": None if test is None else test.p_holm}


def mean_sweep(bench: str, rows: pd.DataFrame) -> tuple[Table, list[dict]] | None:
    """Mean over datasets per (model, r), only over (model, r) cells every dataset has (first family with ≥ 2)."""
    for _, family in rows.groupby(FAMILY, sort=False, dropna=False):
        units = sorted(family["unit"].unique())
        cells = family.pivot_table(index=["label", "compression"], columns="unit", values="value", aggfunc="first")
        cells = cells.reindex(columns=units).dropna()
        if len(units) < 2 or cells.empty:
            continue
        models = [m for m in model_order(family) if m in cells.index.get_level_values("label")]
        ratios = sorted(cells.index.get_level_values("compression").unique())
        means = {key: mean_over(cells.loc[key]).mean for key in cells.index}
        table_rows = [[str(r)] + [pts(means.get((m, r))) for m in models] for r in ratios]
        records = [_record(f"mean of {len(units)}", RERANKED, m, r, "mean", means.get((m, r))) for r in ratios for m in models]
        title = (f"{bench.upper()} mean over {len(units)} datasets ({', '.join(units)}) — "
                 f"first stage {family['first_stage'].iloc[0]}")
        note = ("Mean over the datasets every shown (size, r) has; not the paper's suite average unless all suite "
                "datasets are listed.")
        return Table(title=title, frame=text_frame(table_rows, ["r"] + models), notes=[note]), records
    return None


def published_sweep_tables(bench: str, paper: Paper | None) -> list[Table]:
    """What the paper publishes per r: a table's per-r rows (v3), else a note that it publishes none (v1), and the
    compression figures (ROC-AUC end points) of this benchmark."""
    if paper is None:
        return []
    out = []
    table = paper.table(bench)
    if table is not None:
        rows = [[r.label, str(r.ratio), f"{r.cells[AVERAGE].value:.{r.cells[AVERAGE].precision}f}"]
                for r in table.rows if r.ratio is not None and AVERAGE in r.cells]
        if rows:
            out.append(Table(title=f"Published per-r {table.metric} ({bench.upper()} average), paper {paper.version}",
                             frame=text_frame(rows, ["Paper row", "r", "Average"]), in_latex=False,
                             notes=[f"Source: {table.source}"]))
        else:
            text = f"Paper {paper.version} publishes no per-r {table.metric} values for {bench.upper()} (unknown)."
            out.append(Table(title=f"Published per-r values ({bench.upper()}), paper {paper.version}",
                             frame=text_frame([[text]], ["note"]), in_latex=False))
    for figures in paper.figures:
        items = [f for f in figures.items if f.dataset.split("/", 1)[0] == bench]
        if items:
            rows = [[f.metric, f.dataset, f.model, str(f.ratio), f"{f.cell.value:.{f.cell.precision}f}",
                     "display only" if f.cell.tol is None else f"±{f.cell.tol:g}"] for f in items]
            out.append(Table(title=f"Published compression figures, paper {paper.version}", in_latex=False,
                             frame=text_frame(rows, ["Metric", "Dataset", "Paper row", "r", "Value", "Tolerance"]),
                             notes=[*figures.claims, f"Source: {figures.source}"]))
    return out
