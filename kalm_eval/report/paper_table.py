"""The paper table per benchmark: our value · the paper's · Δ · verdict per cell, rows = conditions.

Conventions (all stated in the table's notes):
- values are nDCG@10 × 100 with the paper's printed decimals; raw fractions go to the CSV;
- a cell we have no result for is "missing"; a paper value that is not published is "unknown"; neither is ever 0;
- the average column compares with the paper only when every dataset of the paper's suite is present (for LMEB
  every subset of each dataset); otherwise it reads "partial: k/N" (the mean of what is present in parentheses,
  never compared)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from kalm_eval.report.aggregate import FIRST_STAGE, RERANKED, condition_sort_key, is_missing, mean_over, model_labels
from kalm_eval.report.matching import EXPLICIT, FALLBACK, paper_row_for
from kalm_eval.report.options import ReportOptions
from kalm_eval.report.paper import AVERAGE, Paper, PaperCell, PaperColumn, PaperRow, PaperTable, verdict
from kalm_eval.report.render import MISSING, Section, Table, latex_escape, pts, text_frame

UNKNOWN = "unknown"
CSV_COLUMNS = ["benchmark", "model", "paper_row", "paper_row_chosen_by", "ratio", "plan", "first_stage", "rerank_depth",
               "dataset", "column", "ours", "ours_x100", "queries", "subsets", "paper", "paper_status", "paper_ratio",
               "delta", "tolerance", "okish_factor", "verdict", "vs_suite_average", "paper_version", "paper_source",
               "note"]

INT_CSV_COLUMNS = ["ratio", "rerank_depth", "queries", "subsets", "paper_ratio"]


@dataclass(frozen=True)
class RowSpec:
    """One row of the paper table: a condition, how it is labelled and which published row it is compared with."""

    condition: str
    kind: str
    label: str
    ratio_text: str
    first_stage_text: str
    paper_row: str | None
    chosen_by: str
    published: PaperRow | None
    paper_ratio: int | None
    compression: int | None
    plan: str | None
    depth: int | None


@dataclass
class Cell:
    md: str
    tex: str
    record: dict
    long: list[str] | None = None  # a row of the "cells compared with the paper" table


@dataclass
class Context:
    bench: str
    table: PaperTable | None
    paper: Paper | None
    opts: ReportOptions
    precision: int = 2
    rows: list[RowSpec] = field(default_factory=list)

    @property
    def version(self) -> str | None:
        return self.paper.version if self.paper else None


def paper_sections(rows: pd.DataFrame, paper: Paper | None, opts: ReportOptions) -> list[Section]:
    """One section per benchmark of the aggregated condition rows (aggregate.condition_rows + aggregate_subsets)."""
    return [paper_section(bench, rows[rows["benchmark"] == bench], paper, opts) for bench in sorted(rows["benchmark"].unique())]


def paper_section(bench: str, rows: pd.DataFrame, paper: Paper | None, opts: ReportOptions) -> Section:
    table = paper.table(bench) if paper else None
    ctx = Context(bench, table, paper, opts, precision=table.precision if table else 2)
    ctx.rows = row_specs(rows, ctx)
    columns = suite_columns(table, set(rows["unit"]), opts)
    values = {(r["condition"], r["unit"]): r for _, r in rows.iterrows()}
    average_header = f"Average ({len(table.columns)})" if table else "Mean"
    md_rows, tex_rows, long_rows, records = [], [], [], []
    for spec in ctx.rows:
        cells = [dataset_cell(spec, unit, header, values.get((spec.condition, unit)), ctx) for unit, header in columns]
        mine = {unit: row for (condition, unit), row in values.items() if condition == spec.condition}
        cells.append(average_cell(spec, mine, average_header, ctx))
        head = [spec.label, spec.ratio_text, spec.first_stage_text]
        md_rows.append(head + [c.md for c in cells])
        tex_rows.append([latex_escape(h) for h in head] + [c.tex for c in cells])
        long_rows += [c.long for c in cells if c.long]
        records += [c.record for c in cells]
    headers = ["Model", "r", "First stage"] + [h for _, h in columns] + [average_header]
    records_frame = pd.DataFrame(records, columns=CSV_COLUMNS).astype({c: "Int64" for c in INT_CSV_COLUMNS})
    wide = Table(title=_title(ctx), frame=text_frame(md_rows, headers), notes=paper_notes(records_frame, ctx),
                 latex_frame=text_frame(tex_rows, headers), label_cols=3)
    section = Section(name=f"paper_table.{bench}", title=f"Paper table: {bench.upper()}", tables=[wide],
                      records=records_frame)
    if long_rows:
        section.tables.append(Table(title=f"{bench.upper()} — cells compared with the paper", in_latex=False,
                                    frame=text_frame(long_rows, LONG_HEADERS)))
    others = unmatched_published_rows(ctx)
    if others is not None:
        section.tables.append(others)
    return section


LONG_HEADERS = ["Model", "r", "Dataset", "Ours", "Paper", "paper r", "Δ", "Tolerance", "Verdict", "Source / note"]


def _title(ctx: Context) -> str:
    title = f"{ctx.bench.upper()} — {ctx.opts.measure} ×100"
    return title + (f", ours vs paper {ctx.version} ({ctx.table.paper_id}{ctx.version})" if ctx.table else "")


# ---- rows -----------------------------------------------------------------------------------------------------------

def row_specs(rows: pd.DataFrame, ctx: Context) -> list[RowSpec]:
    labels = model_labels(rows)
    firsts = rows.drop_duplicates("condition")
    specs = [row_spec(row, labels.get(row["condition"], ""), ctx) for _, row in firsts.iterrows()]
    order = tuple(ctx.table.model_names()) if ctx.table else ()
    keyed = {spec.condition: condition_sort_key(row, order, spec.paper_row) for spec, (_, row) in zip(specs, firsts.iterrows())}
    return sorted(specs, key=lambda s: keyed[s.condition])


def row_spec(row: pd.Series, label: str, ctx: Context) -> RowSpec:
    reranked = row["kind"] == RERANKED
    name, how = paper_row_for(row, label, ctx.paper, ctx.opts)
    compression = None if is_missing(row["compression"]) else int(row["compression"])
    published, paper_ratio = None, None
    if ctx.table is not None and name:
        matches = ctx.table.rows_for(name, compression if reranked else None)
        if matches:
            published, paper_ratio = matches[0]
    shown = label if reranked else f"{row['first_stage']} (first stage)"
    if name and name != shown:
        shown += f" → {name}" + (" (chosen)" if how in (EXPLICIT, FALLBACK) else "")
    elif not name:
        shown += " (ours only)"
    return RowSpec(condition=row["condition"], kind=row["kind"], label=shown, ratio_text=ratio_text(row),
                   first_stage_text=first_stage_text(row), paper_row=name, chosen_by=how, published=published,
                   paper_ratio=paper_ratio, compression=compression, plan=None if is_missing(row["plan"]) else row["plan"],
                   depth=None if is_missing(row["rerank_depth"]) else int(row["rerank_depth"]))


def ratio_text(row: pd.Series) -> str:
    """The r column: the ratio; a cascade's ratios (32→2); "–" for a first stage or a family without MEP."""
    if row["kind"] == FIRST_STAGE:
        return "–"
    if not is_missing(row["cascade"]):
        return "→".join(step.rsplit("r=", 1)[-1] for step in str(row["cascade"]).split(" → "))
    return "–" if is_missing(row["compression"]) else str(int(row["compression"]))


def first_stage_text(row: pd.Series) -> str:
    depth = row["first_stage_depth"]
    text = str(row["first_stage"]) + ("" if is_missing(depth) else f" top-{int(depth)}")
    if row["kind"] == RERANKED and not is_missing(row["cascade"]):
        return text + f" (cascade {row['cascade']})"
    if row["kind"] == RERANKED and not is_missing(row["rerank_depth"]) and row["rerank_depth"] != depth:
        text += f" (rerank top-{int(row['rerank_depth'])})"
    return text


def suite_columns(table: PaperTable | None, present: set[str], opts: ReportOptions) -> list[tuple[str, str]]:
    """(our dataset, header) in the paper's column order; datasets outside the suite come last."""
    columns: list[tuple[str, str]] = []
    seen: set[str] = set()
    for col in table.columns if table is not None else ():
        ours = sorted(unit for unit in present if table.column_for(unit) == col)
        columns += [(unit, col.name) for unit in ours]
        seen.update(ours)
        if not ours and opts.columns == "suite":
            columns.append((col.id, col.name))
    for unit in sorted(present - seen):
        columns.append((unit, unit.split("/", 1)[-1] + ("" if table is None else " (not in suite)")))
    return columns


# ---- cells ----------------------------------------------------------------------------------------------------------

def base_record(spec: RowSpec, unit: str, header: str, ours, ctx: Context, **extra) -> dict:
    record = dict.fromkeys(CSV_COLUMNS)
    record.update({"benchmark": ctx.bench, "model": spec.label, "paper_row": spec.paper_row,
                   "paper_row_chosen_by": spec.chosen_by or None, "ratio": spec.compression, "plan": spec.plan,
                   "first_stage": spec.first_stage_text, "rerank_depth": spec.depth, "dataset": unit, "column": header,
                   "ours": ours, "ours_x100": None if ours is None else round(ours * 100, ctx.precision),
                   "paper_version": ctx.version, "vs_suite_average": False})
    record.update(extra)
    return record


def dataset_cell(spec: RowSpec, unit: str, header: str, row: pd.Series | None, ctx: Context) -> Cell:
    ours = None if row is None else float(row["value"])
    column = ctx.table.column_for(unit) if ctx.table is not None else None
    subsets = None if row is None or is_missing(row["subsets"]) else int(row["subsets"])
    extra = {"queries": None if row is None or is_missing(row["queries"]) else int(row["queries"]), "subsets": subsets}
    if row is not None and column is not None and column.subsets and (subsets or 1) != column.subsets:
        text = f"partial: {subsets or 1}/{column.subsets} subsets ({pts(ours, ctx.precision)})"
        status = f"not compared: {subsets or 1} of {column.subsets} subsets"
        return Cell(text, latex_escape(text), base_record(spec, unit, header, ours, ctx, **extra, paper_status=status))
    published, vs_average = published_cell(spec, column, ctx)
    note = f"mean of {subsets} subsets" if subsets else ""
    return paper_cell(spec, unit, header, ours, published, vs_average, ctx, note, **extra)


def published_cell(spec: RowSpec, column: PaperColumn | None, ctx: Context) -> tuple[PaperCell | None, bool]:
    """The paper's value for this cell: the dataset's own, or (compare_to=average) the suite average, marked †."""
    if spec.published is None or column is None:
        return None, False
    if column.id in spec.published.cells:
        return spec.published.cells[column.id], False
    if ctx.opts.compare_to == "average" and AVERAGE in spec.published.cells:
        return spec.published.cells[AVERAGE], True
    return None, False


def paper_cell(spec: RowSpec, unit: str, header: str, ours: float | None, published: PaperCell | None,
               vs_average: bool, ctx: Context, note: str = "", **extra) -> Cell:
    ours_text = pts(ours, ctx.precision)
    if published is None:
        unknown = UNKNOWN if spec.paper_row and ctx.table is not None else ""
        md = f"{ours_text} · paper {unknown}" if unknown else ours_text
        tex = latex_escape(ours_text) + (r" {\scriptsize(paper unknown)}" if unknown else "")
        return Cell(md, tex, base_record(spec, unit, header, ours, ctx, **extra, paper_status=unknown or "no paper row",
                                         note=note or None))
    return compared_cell(spec, unit, header, ours, published, vs_average, ctx, note, **extra)


def compared_cell(spec: RowSpec, unit: str, header: str, ours: float | None, published: PaperCell, vs_average: bool,
                  ctx: Context, note: str = "", **extra) -> Cell:
    p = published.precision
    paper_text = f"{published.value:.{p}f}" + ("†" if vs_average else "")
    ratio_note = "" if spec.paper_ratio is not None or spec.kind == FIRST_STAGE else "paper r unknown"
    notes = "; ".join(n for n in (note, "vs paper suite average (not like-for-like)" if vs_average else "", ratio_note) if n)
    delta, result = verdict(ours, published) if ours is not None else (None, None)
    record = base_record(spec, unit, header, ours, ctx, **extra, paper=published.value, paper_status="published",
                         paper_ratio=spec.paper_ratio, delta=delta, tolerance=published.tol,
                         okish_factor=published.okish_factor, verdict=result, vs_suite_average=vs_average,
                         paper_source=ctx.table.citation, note=notes or None)
    if ours is None:
        md = f"{MISSING} · paper {paper_text}"
        return Cell(md, latex_escape(md), record)
    md = f"{pts(ours, ctx.precision)} · {paper_text} · Δ {delta:+.{p}f} · {result or 'n/a'}"
    dagger = r"$^\dagger$" if vs_average else ""
    tex = rf"{pts(ours, ctx.precision)}\,{{\scriptsize {published.value:.{p}f}{dagger} / ${delta:+.{p}f}$ / {result or 'n/a'}}}"
    tolerance = f"±{published.tol:g} (OKish ×{published.okish_factor:g})" if published.tol is not None else "display only"
    long = [spec.label, spec.ratio_text, header, pts(ours, ctx.precision), paper_text,
            UNKNOWN if spec.paper_ratio is None else str(spec.paper_ratio), f"{delta:+.{p}f}", tolerance,
            result or "n/a", ctx.table.citation + (f" — {notes}" if notes else "")]
    return Cell(md, tex, record, long)


def average_cell(spec: RowSpec, by_unit: dict[str, pd.Series], header: str, ctx: Context) -> Cell:
    """The suite average, compared only when complete; without a paper table, the mean of what is present."""
    if ctx.table is None:
        mean = mean_over(float(r["value"]) for r in by_unit.values())
        text = f"{pts(mean.mean, ctx.precision)} (mean of {mean.n})" if mean.n else MISSING
        return Cell(text, latex_escape(text), base_record(spec, "mean", header, mean.mean, ctx,
                                                           paper_status="no paper table"))
    mean = mean_over(suite_value(col, by_unit, ctx.table) for col in ctx.table.columns)
    if mean.complete:
        published = spec.published.cells.get(AVERAGE) if spec.published is not None else None
        return paper_cell(spec, AVERAGE, header, mean.mean, published, False, ctx, note=f"mean of {mean.n} datasets")
    text = f"partial: {mean.n}/{mean.of}" + (f" ({pts(mean.mean, ctx.precision)})" if mean.mean is not None else "")
    published = spec.published.cells.get(AVERAGE) if spec.published is not None else None
    return Cell(text, latex_escape(text), base_record(spec, AVERAGE, header, mean.mean, ctx,
                                                      paper=published.value if published else None,
                                                      paper_status=f"not compared: partial {mean.n}/{mean.of}"))


def suite_value(column: PaperColumn, by_unit: dict[str, pd.Series], table: PaperTable) -> float | None:
    """Our value for one suite column: present, and (a dataset of subsets) complete."""
    for unit, row in by_unit.items():
        if table.column_for(unit) != column:
            continue
        subsets = None if is_missing(row["subsets"]) else int(row["subsets"])
        if not column.subsets or (subsets or 1) == column.subsets:
            return float(row["value"])
    return None


# ---- notes and the published rows without a result ------------------------------------------------------------------

def paper_notes(records: pd.DataFrame, ctx: Context) -> list[str]:
    table, version = ctx.table, ctx.version
    if table is None:
        return ["No published table for this benchmark: ours only."]
    notes = ["Cell: ours · paper · Δ (ours − paper, at the paper's printed precision) · verdict. "
             "OK: |Δ| ≤ tol; OKish: |Δ| ≤ tol × okish_factor; FAIL otherwise (symmetric, pyserini 2CR style)."]
    if not any(col.id in row.cells for row in table.rows for col in table.columns):
        notes.append(f"Paper {version} publishes no per-dataset values for {ctx.bench.upper()}: dataset cells read "
                     f"'paper unknown' (compare_to=average compares them with the suite average instead, marked †).")
    if records["vs_suite_average"].any():
        notes.append("† = the paper's suite AVERAGE used as the reference for a single dataset (compare_to=average): "
                     "a coarse sanity check, not a like-for-like comparison.")
    if records["paper_status"].fillna("").str.startswith("not compared").any():
        notes.append(f"partial: k/{len(table.columns)} = only k of the paper's {len(table.columns)} datasets present (k/N "
                     "subsets: only k of a dataset's N subsets); the mean of what is present is shown in parentheses "
                     "and is not compared.")
    if records["note"].fillna("").str.contains("paper r unknown").any():
        notes.append(f"The ratio r of the paper {version} table is unknown; our rows at every r are compared with it.")
    if table.metric != ctx.opts.measure:
        notes.append(f"Paper metric is {table.metric}; table measure is {ctx.opts.measure}.")
    notes.append(f"Source: {table.source}")
    if any(spec.chosen_by == FALLBACK for spec in ctx.rows):
        notes.append(f"'(chosen)': our model matches no paper row; compared with {ctx.opts.paper_row} as requested "
                     "(paper_row=).")
    return notes


def unmatched_published_rows(ctx: Context) -> Table | None:
    """The paper's rows of this benchmark that no result here is compared with (baselines, other sizes)."""
    if ctx.table is None or ctx.paper is None:
        return None
    ours = {spec.paper_row for spec in ctx.rows}
    others = [r for r in ctx.table.rows if r.model not in ours and not r.variant and AVERAGE in r.cells]
    if not others:
        return None
    rows = []
    for r in others:
        cost, _ = ctx.paper.relative_cost(r.model)
        ratio = r.ratio or ctx.table.ratio
        rows.append([r.model, r.size or "", r.role, UNKNOWN if ratio is None else str(ratio),
                     f"{r.cells[AVERAGE].value:.{r.cells[AVERAGE].precision}f}", f"{cost.value:g}x" if cost else ""])
    headers = ["Paper row", "Size", "Role", "r", f"Average ({len(ctx.table.columns)})", "Relative online cost (analytic)"]
    return Table(title=f"Published {ctx.bench.upper()} rows without a result here (paper {ctx.version})",
                 frame=text_frame(rows, headers), in_latex=False)
