"""The report's tables: paper table (ours vs published, Δ, verdict), compression sweep, latency vs quality.

Conventions (all stated in the generated notes):
- values are nDCG@10 × 100, printed with the paper's 2 decimals; raw fractions go to the CSV;
- a cell we have no result for is "missing"; a paper value that is not published is "unknown"; neither is ever 0;
- a row is a *condition*: first stage (+ depth) and, when reranked, model identity × ratio r × rerank depth × tail.
  Instructions differ per dataset by design and are not part of the row.
- the average column compares with the paper only when every dataset of the paper's suite is present; otherwise it
  reads "partial: k/N" (the mean of the k present datasets is shown in parentheses, never compared)."""

from __future__ import annotations

import logging
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from kalm_eval.storage import canonical_json, sha256_text, signature_of
from kalm_eval.report.paper import AVERAGE, Paper, PaperCell, PaperTable, verdict
from kalm_eval.report.render import MISSING, Section, Table, latex_escape
from kalm_eval.report.results import MAIN_MEASURE, ResultRecord

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
SIZE_ORDER = ("KaLM-Reranker-V1-Nano", "KaLM-Reranker-V1-Small", "KaLM-Reranker-V1-Large")
NAME_ORDER = ("tiny", "nano", "small", "large")


@dataclass
class ReportOptions:
    paper_row: str | None = None  # fallback paper row for reranked results that match none (tiny, a local path)
    paper_rows: dict[str, str] = field(default_factory=dict)  # our model label -> paper row (explicit, wins)
    compare_to: str = "dataset"  # dataset | average
    columns: str = "present"  # present | suite
    measure: str = MAIN_MEASURE

    def __post_init__(self):
        if self.compare_to not in ("dataset", "average"):
            raise ValueError(f"compare_to must be 'dataset' or 'average', got {self.compare_to!r}")
        if self.columns not in ("present", "suite"):
            raise ValueError(f"columns must be 'present' or 'suite', got {self.columns!r}")
        if self.measure != MAIN_MEASURE:
            log.warning("paper values are %s; comparing %s against them is not like-for-like", MAIN_MEASURE, self.measure)


# ---- conditions (table rows) ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Condition:
    kind: str  # first_stage | reranked
    first_stage: str  # display label
    first_stage_key: str
    first_stage_depth: int | None
    model: str | None = None  # display label of our model
    model_key: str | None = None
    ratio: int | None = None
    depth: int | None = None
    tail: str | None = None

    def sort_key(self, paper_row: str | None) -> tuple:
        if self.kind == "first_stage":
            return (0, self.first_stage, 0, "", 0)
        size = SIZE_ORDER.index(paper_row) if paper_row in SIZE_ORDER else len(SIZE_ORDER)
        name = NAME_ORDER.index(self.model) if self.model in NAME_ORDER else len(NAME_ORDER)
        return (1, self.first_stage, size * 10 + name, self.model or "", self.ratio or 0, self.depth or 0)


# per-dataset parts of a first-stage source (the dataset's instruction, a given run file's path and hash): a row of the
# paper table is the same first stage across datasets, so they are left out of the row key
FS_PER_DATASET = ("instruction", "path", "sha256")


def first_stage_condition(rec: ResultRecord) -> Condition:
    source = rec.first_stage.get("source")
    if isinstance(source, dict):
        source = {k: v for k, v in source.items() if k not in FS_PER_DATASET}
    key = canonical_json({"source": source, "depth": rec.first_stage_depth})
    return Condition("first_stage", rec.first_stage_label, key, rec.first_stage_depth)


def reranked_condition(rec: ResultRecord) -> Condition:
    fs = first_stage_condition(rec)
    model = rec.model
    ident = {k: v for k, v in (model.identity if model else {}).items()}
    return Condition("reranked", fs.first_stage, fs.first_stage_key, fs.first_stage_depth, model=model.label if model else "unknown",
                     model_key=canonical_json(ident), ratio=rec.ratio, depth=rec.rerank_depth,
                     tail=(rec.reranker or {}).get("tail"))


def unit_of(dataset: str) -> str:
    """Evaluated unit -> reported dataset: `lmeb/<Dataset>/<subset>` -> `lmeb/<Dataset>` (LMEB scores a dataset as the
    mean over its subsets); two-part names are datasets already."""
    parts = dataset.split("/")
    return "/".join(parts[:2]) if len(parts) >= 3 else dataset


def aggregate_subsets(records: list[ResultRecord]) -> list[ResultRecord]:
    """Replace the subset records of one (dataset, condition) by one record whose stage values are the mean over its
    subsets (LMEB's summary rule), latency numbers the mean, per-query values the union (ids prefixed by subset).
    `raw["aggregate"]` lists the subsets; records of two-part datasets pass through unchanged."""
    out: list[ResultRecord] = []
    groups: dict[tuple, list[ResultRecord]] = defaultdict(list)
    for rec in records:
        if unit_of(rec.dataset) == rec.dataset:
            out.append(rec)
            continue
        cond = reranked_condition(rec) if rec.reranked else first_stage_condition(rec)
        groups[(unit_of(rec.dataset), cond)].append(rec)
    for (unit, _), recs in groups.items():
        newest: dict[str, ResultRecord] = {}
        for r in sorted(recs, key=lambda r: r.finished_at):
            newest[r.dataset] = r
        recs = [newest[k] for k in sorted(newest)]
        out.append(_merge(unit, recs))
    return sorted(out, key=lambda r: (r.dataset, str(r.path)))


def _mean_dicts(dicts: list[dict]) -> dict:
    keys = [k for k in dicts[0] if all(isinstance(d.get(k), (int, float)) and not isinstance(d.get(k), bool) for d in dicts)]
    merged = {k: statistics.fmean(float(d[k]) for d in dicts) for k in keys}
    for k, v in dicts[0].items():  # non-numeric fields shared by all (device, dtype)
        if k not in merged and all(d.get(k) == v for d in dicts):
            merged[k] = v
    return merged


def _merge(unit: str, recs: list[ResultRecord]) -> ResultRecord:
    first = recs[0]
    stages = {}
    for name in ("first_stage", "reranked"):
        if all(r.stage(name) for r in recs):
            stages[name] = _mean_dicts([r.stage(name) for r in recs])
            stages[name]["queries"] = sum(int(r.stage(name).get("queries") or 0) for r in recs)
    timings = {}
    lats = [r.timings.get("latency") for r in recs]
    if all(isinstance(x, dict) for x in lats):
        timings["latency"] = _mean_dicts(lats)
    bytes_pp = [r.stored_bytes_per_passage for r in recs]
    counts = {"queries": sum(int(r.counts.get("queries") or 0) for r in recs)}
    if all(b is not None for b in bytes_pp) and first.ratio is not None:
        counts["stored_bytes_per_passage"] = {str(first.ratio): statistics.fmean(bytes_pp)}
    protocol = dict(first.protocol)
    protocol["dataset"] = {**(protocol.get("dataset") or {}), "name": unit, "subsets": [r.dataset for r in recs]}
    raw = {"dataset": unit, "split": first.split, "signature": signature_of(sorted(r.signature or str(r.path) for r in recs)),
           "stages": stages, "protocol": protocol, "timings": timings, "counts": counts,
           "provenance": {**(first.raw.get("provenance") or {}), "finished_at": max(r.finished_at for r in recs)},
           "aggregate": {"subsets": len(recs), "of": [r.dataset for r in recs], "rule": "mean over subsets"}}
    merged = ResultRecord(path=first.path.parent, raw=raw)
    rows = []
    for r in recs:
        sub = r.dataset.split("/", 2)[-1]
        rows += [(st, m, f"{sub}::{q}", v) for st, m, q, v in r._per_query_rows]
    merged.__dict__["_per_query_rows"] = rows  # cached_property slot
    return merged


@dataclass
class Cell:
    """Our value for one (condition, dataset) plus the records behind it."""

    value: float | None
    records: list[ResultRecord]
    queries: int | None = None
    subsets: int | None = None  # for a dataset aggregated over its subsets (LMEB)


def collect(records: list[ResultRecord], measure: str = MAIN_MEASURE) -> dict[Condition, dict[str, Cell]]:
    """condition -> dataset -> our value. Several records for one cell (e.g. another instruction or data revision):
    the most recently finished is shown and a warning names the others."""
    grid: dict[Condition, dict[str, list[ResultRecord]]] = defaultdict(lambda: defaultdict(list))
    for rec in records:
        if rec.stage("first_stage"):
            grid[first_stage_condition(rec)][rec.dataset].append(rec)
        if rec.reranked and rec.stage("reranked"):
            grid[reranked_condition(rec)][rec.dataset].append(rec)
    out: dict[Condition, dict[str, Cell]] = {}
    for cond, by_ds in grid.items():
        out[cond] = {}
        for ds, recs in by_ds.items():
            stage = "first_stage" if cond.kind == "first_stage" else "reranked"
            recs = sorted(recs, key=lambda r: r.finished_at, reverse=True)
            values = {round(v, 12) for r in recs if (v := r.value(stage, measure)) is not None}
            if cond.kind == "reranked" and len(recs) > 1:
                log.warning("%s / %s r=%s: %d results with different signatures; showing the newest (%s), others: %s",
                            ds, cond.model, cond.ratio, len(recs), recs[0].path, ", ".join(str(r.path) for r in recs[1:]))
            elif cond.kind == "first_stage" and len(values) > 1:
                log.warning("%s / first stage %s: records disagree (%s); showing the newest (%s)",
                            ds, cond.first_stage, sorted(values), recs[0].path)
            queries = recs[0].stage(stage).get("queries")
            subsets = (recs[0].raw.get("aggregate") or {}).get("subsets")
            out[cond][ds] = Cell(recs[0].value(stage, measure), recs, queries if isinstance(queries, int) else None, subsets)
    return out


def _paper_row_for(cond: Condition, cells: dict[str, Cell], paper: Paper | None, opts: ReportOptions) -> tuple[str | None, str]:
    """(paper row name, how it was chosen: auto | explicit | fallback | '')."""
    if paper is None:
        return None, ""
    any_rec = next(iter(cells.values())).records[0]
    if cond.kind == "first_stage":
        row = paper.match_first_stage(any_rec.first_stage.get("source") if isinstance(any_rec.first_stage.get("source"), dict) else None)
        return (row, "auto") if row else (None, "")
    if cond.model in opts.paper_rows:
        return opts.paper_rows[cond.model], "explicit"
    auto = paper.match_model(any_rec.model)
    if auto:
        return auto, "auto"
    if opts.paper_row:
        return opts.paper_row, "fallback"
    return None, ""


def label_conditions(conds: list[Condition]) -> dict[Condition, str]:
    """Model labels, disambiguated when two different model identities share a name."""
    labels = {c: (c.model or "") for c in conds}
    by_label: dict[str, set[str | None]] = defaultdict(set)
    for c in conds:
        if c.kind == "reranked":
            by_label[c.model or ""].add(c.model_key)
    for c in conds:
        if c.kind == "reranked" and len(by_label[c.model or ""]) > 1:
            labels[c] = f"{c.model} [{sha256_text(c.model_key or '')[:6]}]"
    return labels


# ---- formatting -----------------------------------------------------------------------------------------------------

def pts(fraction: float | None, precision: int = 2) -> str:
    return MISSING if fraction is None else f"{fraction * 100:.{precision}f}"


def num(value: float | None, fmt: str = "{:.2f}") -> str:
    return MISSING if value is None else fmt.format(value)


def _benchmarks(records: list[ResultRecord]) -> list[str]:
    return sorted({r.benchmark for r in records})


# ---- 1. paper table -------------------------------------------------------------------------------------------------

def paper_sections(records: list[ResultRecord], paper: Paper | None, opts: ReportOptions) -> list[Section]:
    grid = collect(records, opts.measure)
    sections = []
    for bench in _benchmarks(records):
        conds = {c: cells for c, cells in grid.items() if any(ds.split("/", 1)[0] == bench for ds in cells)}
        conds = {c: {ds: cell for ds, cell in cells.items() if ds.split("/", 1)[0] == bench} for c, cells in conds.items()}
        if conds:
            sections.append(_paper_section(bench, conds, paper.table(bench) if paper else None, paper, opts))
    return sections


def _columns(table: PaperTable | None, present: set[str], opts: ReportOptions) -> list[tuple[str, str]]:
    """(our dataset name, header) in the paper's column order; datasets outside the suite come last."""
    cols: list[tuple[str, str]] = []
    seen: set[str] = set()
    if table is not None:
        for col in table.columns:
            ours = [ds for ds in present if table.column_for(ds) == col]
            for ds in sorted(ours):
                cols.append((ds, col.name))
                seen.add(ds)
            if not ours and opts.columns == "suite":
                cols.append((col.id, col.name))
    for ds in sorted(present - seen):
        cols.append((ds, ds.split("/", 1)[-1] + ("" if table is None else " (not in suite)")))
    return cols


def _paper_section(bench: str, conds: dict[Condition, dict[str, Cell]], table: PaperTable | None, paper: Paper | None,
                   opts: ReportOptions) -> Section:
    present = {ds for cells in conds.values() for ds in cells}
    columns = _columns(table, present, opts)
    suite_n = len(table.columns) if table else None
    paper_rows = {c: _paper_row_for(c, cells, paper, opts) for c, cells in conds.items()}
    order = sorted(conds, key=lambda c: c.sort_key(paper_rows[c][0]))
    labels = label_conditions(order)
    prec = table.precision if table else 2
    version = paper.version if paper else None

    headers = ["Model", "r", "First stage"] + [h for _, h in columns] + [f"Average ({suite_n})" if suite_n else "Mean"]
    md_rows, tex_rows, long_rows, csv_records = [], [], [], []
    dagger_used = partial_used = ratio_unknown_used = False

    for cond in order:
        cells = conds[cond]
        row_name, how = paper_rows[cond]
        prow, paper_ratio = None, None
        if table is not None and row_name:
            matches = table.rows_for(row_name, cond.ratio if cond.kind == "reranked" else None)
            if matches:
                prow, paper_ratio = matches[0]
        if cond.kind == "first_stage":
            model_label = f"{cond.first_stage} (first stage)"
        else:
            model_label = labels[cond]
        if row_name and row_name != model_label:
            model_label += f" → {row_name}" + (" (chosen)" if how in ("explicit", "fallback") else "")
        elif not row_name:
            model_label += " (ours only)"
        r_label = "–" if cond.kind == "first_stage" else str(cond.ratio if cond.ratio is not None else MISSING)
        fs_label = f"{cond.first_stage} top-{cond.first_stage_depth}" if cond.first_stage_depth else cond.first_stage
        if cond.kind == "reranked" and cond.depth and cond.depth != cond.first_stage_depth:
            fs_label += f" (rerank top-{cond.depth})"
        md_row, tex_row = [model_label, r_label, fs_label], [latex_escape(model_label), r_label, latex_escape(fs_label)]

        def emit(ds_key: str, ds_header: str, ours: float | None, pcell: PaperCell | None, dagger: bool, n_queries, note: str = ""):
            nonlocal dagger_used, ratio_unknown_used
            ours_s = pts(ours, prec)
            base = {"benchmark": bench, "model": model_label, "paper_row": row_name, "paper_row_chosen_by": how or None,
                    "ratio": cond.ratio, "first_stage": fs_label, "rerank_depth": cond.depth, "dataset": ds_key,
                    "column": ds_header, "ours": ours, "ours_x100": None if ours is None else round(ours * 100, prec),
                    "queries": n_queries, "paper_version": version}
            if pcell is None:
                paper_s = UNKNOWN if row_name and table is not None else ""
                cell_md = ours_s if not paper_s else f"{ours_s} · paper {paper_s}"
                cell_tex = latex_escape(ours_s) + (r" {\scriptsize(paper unknown)}" if paper_s else "")
                rec = {**base, "paper": None, "paper_status": paper_s or "no paper row", "delta": None, "tolerance": None,
                       "verdict": None, "note": note or None}
                long = None
            else:
                dagger_used |= dagger
                mark = "†" if dagger else ""
                ratio_note = "" if paper_ratio is not None or cond.kind == "first_stage" else "paper r unknown"
                ratio_unknown_used |= bool(ratio_note)
                if ours is None:
                    delta, ver = None, None
                    cell_md = f"{MISSING} · paper {pcell.value:.{pcell.precision}f}{mark}"
                    cell_tex = latex_escape(cell_md)
                else:
                    delta, ver = verdict(ours, pcell)
                    ver_s = ver or "n/a"
                    cell_md = f"{ours_s} · {pcell.value:.{pcell.precision}f}{mark} · Δ {delta:+.{pcell.precision}f} · {ver_s}"
                    dag_tex = r"$^\dagger$" if dagger else ""
                    cell_tex = (rf"{ours_s}\,{{\scriptsize {pcell.value:.{pcell.precision}f}{dag_tex}"
                                rf" / ${delta:+.{pcell.precision}f}$ / {ver_s}}}")
                src = f"{table.citation}" if table else ""
                notes = "; ".join(n for n in (note, "vs paper suite average (not like-for-like)" if dagger else "", ratio_note) if n)
                rec = {**base, "paper": pcell.value, "paper_status": "published", "paper_ratio": paper_ratio,
                       "delta": delta, "tolerance": pcell.tol, "okish_factor": pcell.okish_factor, "verdict": ver,
                       "paper_source": src, "note": notes or None}
                long = [model_label, r_label, ds_header, ours_s, f"{pcell.value:.{pcell.precision}f}{mark}",
                        "unknown" if paper_ratio is None else str(paper_ratio),
                        MISSING if delta is None else f"{delta:+.{pcell.precision}f}",
                        f"±{pcell.tol:g} (OKish ×{pcell.okish_factor:g})" if pcell.tol is not None else "display only",
                        (ver or "n/a") if delta is not None else MISSING, src + (f" — {notes}" if notes else "")]
            md_row.append(cell_md)
            tex_row.append(cell_tex)
            csv_records.append(rec)
            if long:
                long_rows.append(long)

        for ds, header in columns:
            cell = cells.get(ds)
            ours = cell.value if cell else None
            col = table.column_for(ds) if table is not None else None
            if cell is not None and col is not None and col.subsets and (cell.subsets or 1) != col.subsets:
                partial_used = True
                text = f"partial: {cell.subsets or 1}/{col.subsets} subsets ({pts(ours, prec)})"
                md_row.append(text)
                tex_row.append(latex_escape(text))
                csv_records.append({"benchmark": bench, "model": model_label, "paper_row": row_name, "ratio": cond.ratio,
                                    "first_stage": fs_label, "dataset": ds, "column": header, "ours": ours,
                                    "paper_status": f"not compared: {cell.subsets or 1} of {col.subsets} subsets",
                                    "paper_version": version})
                continue
            pcell, dagger = None, False
            if prow is not None and col is not None:
                if col.id in prow.cells:
                    pcell = prow.cells[col.id]
                elif opts.compare_to == "average" and AVERAGE in prow.cells:
                    pcell, dagger = prow.cells[AVERAGE], True
            emit(ds, header, ours, pcell, dagger, cell.queries if cell else None,
                 note=f"mean of {cell.subsets} subsets" if cell is not None and cell.subsets else "")

        # average column
        if table is not None:
            suite_vals = {col.id: cells[ds].value for ds in cells for col in [table.column_for(ds)] if col is not None
                          and cells[ds].value is not None and (not col.subsets or (cells[ds].subsets or 1) == col.subsets)}
            k = len(suite_vals)
            if k == suite_n:
                mean = statistics.fmean(suite_vals.values())
                pcell = prow.cells.get(AVERAGE) if prow is not None else None
                emit(AVERAGE, headers[-1], mean, pcell, False, None, note=f"mean of {k} datasets")
            else:
                partial_used = True
                mean = statistics.fmean(suite_vals.values()) if suite_vals else None
                text = f"partial: {k}/{suite_n}" + (f" ({pts(mean, prec)})" if mean is not None else "")
                md_row.append(text)
                tex_row.append(latex_escape(text))
                csv_records.append({"benchmark": bench, "model": model_label, "paper_row": row_name, "ratio": cond.ratio,
                                    "first_stage": fs_label, "dataset": AVERAGE, "column": headers[-1], "ours": mean,
                                    "paper": prow.cells[AVERAGE].value if prow is not None and AVERAGE in prow.cells else None,
                                    "paper_status": f"not compared: partial {k}/{suite_n}", "verdict": None,
                                    "paper_version": version})
        else:
            vals = [c.value for c in cells.values() if c.value is not None]
            mean = statistics.fmean(vals) if vals else None
            text = f"{pts(mean, prec)} (mean of {len(vals)})" if vals else MISSING
            md_row.append(text)
            tex_row.append(latex_escape(text))
            csv_records.append({"benchmark": bench, "model": model_label, "ratio": cond.ratio, "first_stage": fs_label,
                                "dataset": "mean", "ours": mean, "paper_status": "no paper table"})
        md_rows.append(md_row)
        tex_rows.append(tex_row)

    metric = table.metric if table else opts.measure
    title = f"{bench.upper()} — {opts.measure} ×100" + (f", ours vs paper {version} ({table.paper_id}{version})" if table else "")
    notes = ["Cell: ours · paper · Δ (ours − paper, at the paper's printed precision) · verdict. "
             "OK: |Δ| ≤ tol; OKish: |Δ| ≤ tol × okish_factor; FAIL otherwise (symmetric, pyserini 2CR style)."
             if table else "No published table for this benchmark: ours only."]
    if table is not None:
        if not any(col.id in r.cells for r in table.rows for col in table.columns):
            notes.append(f"Paper {version} publishes no per-dataset values for {bench.upper()}: dataset cells read "
                         f"'paper unknown' (compare_to=average compares them with the suite average instead, marked †).")
        if dagger_used:
            notes.append("† = the paper's suite AVERAGE used as the reference for a single dataset (compare_to=average): "
                         "a coarse sanity check, not a like-for-like comparison.")
        if partial_used:
            notes.append(f"partial: k/{suite_n} = only k of the paper's {suite_n} datasets present (k/N subsets: only k of a "
                         "dataset's N subsets); the mean of what is present is shown in parentheses and is not compared.")
        if ratio_unknown_used:
            notes.append(f"The ratio r of the paper {version} table is unknown; our rows at every r are compared with it.")
        if metric != opts.measure:
            notes.append(f"Paper metric is {metric}; table measure is {opts.measure}.")
        notes.append(f"Source: {table.source}")
    if any(paper_rows[c][1] == "fallback" for c in order):
        notes.append(f"'(chosen)': our model matches no paper row; compared with {opts.paper_row} as requested (paper_row=).")

    wide = Table(title=title, headers=headers, rows=md_rows, notes=notes, latex_rows=tex_rows, label_cols=3)
    sec = Section(name=f"paper_table.{bench}", title=f"Paper table: {bench.upper()}", tables=[wide], csv_records=csv_records)
    if long_rows:
        sec.tables.append(Table(title=f"{bench.upper()} — cells compared with the paper", latex=False,
                                headers=["Model", "r", "Dataset", "Ours", "Paper", "paper r", "Δ", "Tolerance", "Verdict", "Source / note"],
                                rows=long_rows))
    if table is not None and paper is not None:
        ours_rows = {paper_rows[c][0] for c in order}
        others = [r for r in table.rows if r.model not in ours_rows and not r.variant and AVERAGE in r.cells]
        if others:
            rows = []
            for r in others:
                cost, _ = paper.relative_cost(r.model)
                rows.append([r.model, r.size or "", r.role, "unknown" if (r.ratio or table.ratio) is None else str(r.ratio or table.ratio),
                             f"{r.cells[AVERAGE].value:.{r.cells[AVERAGE].precision}f}",
                             f"{cost.value:g}x" if cost else ""])
            sec.tables.append(Table(title=f"Published {bench.upper()} rows without a result here (paper {version})",
                                    headers=["Paper row", "Size", "Role", "r", f"Average ({suite_n})", "Relative online cost (analytic)"],
                                    rows=rows, latex=False))
    return sec


# ---- 2. compression sweep -------------------------------------------------------------------------------------------

def sweep_sections(records: list[ResultRecord], paper: Paper | None, opts: ReportOptions) -> list[Section]:
    reranked = [r for r in records if r.reranked and r.stage("reranked")]
    sections = []
    for bench in _benchmarks(reranked):
        recs = [r for r in reranked if r.benchmark == bench]
        sec = Section(name=f"compression_sweep.{bench}", title=f"Compression sweep: {bench.upper()} ({opts.measure} ×100 per ratio r)")
        conds = {reranked_condition(r) for r in recs}
        labels = label_conditions(sorted(conds, key=lambda c: c.sort_key(None)))
        groups: dict[tuple, list[ResultRecord]] = defaultdict(list)
        for r in recs:
            c = reranked_condition(r)
            groups[(r.dataset, c.first_stage_key, c.first_stage, c.first_stage_depth, c.depth)].append(r)
        for (ds, _, fs_label, fs_depth, depth), grp in sorted(groups.items(), key=lambda kv: kv[0][:1] + kv[0][2:3]):
            table, records_csv = _sweep_table(ds, fs_label, fs_depth, depth, grp, labels, opts)
            sec.tables.append(table)
            sec.csv_records += records_csv
        mean_table = _sweep_mean_table(bench, groups, labels, opts)
        if mean_table is not None:
            sec.tables.append(mean_table[0])
            sec.csv_records += mean_table[1]
        sec.tables += _published_sweep_tables(bench, paper)
        sections.append(sec)
    return sections


def _by_model_ratio(grp: list[ResultRecord], labels) -> dict[tuple[str, int | None], ResultRecord]:
    out: dict[tuple[str, int | None], ResultRecord] = {}
    for r in sorted(grp, key=lambda r: r.finished_at):
        out[(labels[reranked_condition(r)], r.ratio)] = r  # newest wins
    return out


def _model_order(labels_used: set[str], labels: dict[Condition, str]) -> list[str]:
    inv = {v: c for c, v in labels.items()}
    return sorted(labels_used, key=lambda lab: inv[lab].sort_key(None) if lab in inv else (9,))


def _sweep_table(ds, fs_label, fs_depth, depth, grp, labels, opts):
    cells = _by_model_ratio(grp, labels)
    models = _model_order({m for m, _ in cells}, labels)
    ratios = sorted({r for _, r in cells if r is not None}) + ([None] if any(r is None for _, r in cells) else [])
    any_rec = grp[0]
    fs_value = any_rec.value("first_stage", opts.measure)
    ceiling_name, ceiling = any_rec.recall_ceiling
    headers = ["r"] + models
    rows = [[f"first stage ({fs_label})"] + [pts(fs_value)] * len(models)]
    csv_records = [{"dataset": ds, "row": "first_stage", "model": m, "ratio": None, "measure": opts.measure, "value": fs_value} for m in models]
    for ratio in ratios:
        row = [str(ratio) if ratio is not None else MISSING]
        for m in models:
            rec = cells.get((m, ratio))
            v = rec.value("reranked", opts.measure) if rec else None
            row.append(pts(v))
            csv_records.append({"dataset": ds, "row": "reranked", "model": m, "ratio": ratio, "measure": opts.measure, "value": v,
                                "queries": rec.stage("reranked").get("queries") if rec else None,
                                "record": str(rec.path) if rec else None})
        rows.append(row)
    rows.append([f"recall ceiling ({ceiling_name or 'first-stage recall at depth'})"] + [pts(ceiling)] * len(models))
    csv_records += [{"dataset": ds, "row": "recall_ceiling", "model": m, "measure": ceiling_name, "value": ceiling} for m in models]
    title = f"{ds} — first stage {fs_label}" + (f" top-{fs_depth}" if fs_depth else "") + (f", rerank top-{depth}" if depth else "")
    notes = ["'missing' = no result for this size and r. The recall ceiling is the first stage's recall at the rerank depth: "
             "no reranking of that head can recall more."]
    return Table(title=title, headers=headers, rows=rows, notes=notes), csv_records


def _sweep_mean_table(bench, groups, labels, opts):
    datasets = sorted({k[0] for k in groups})
    if len(datasets) < 2:
        return None
    # per (fs_key, depth) family, cells common to all datasets
    fam: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for (ds, fs_key, fs_label, fs_depth, depth), grp in groups.items():
        fam[(fs_key, fs_label, fs_depth, depth)][ds] = _by_model_ratio(grp, labels)
    tables, records = [], []
    for (fs_key, fs_label, fs_depth, depth), per_ds in fam.items():
        if len(per_ds) < 2:
            continue
        keys = set.intersection(*(set(c) for c in per_ds.values()))
        if not keys:
            continue
        models = _model_order({m for m, _ in keys}, labels)
        ratios = sorted({r for _, r in keys if r is not None})
        rows = []
        for ratio in ratios:
            row = [str(ratio)]
            for m in models:
                vals = [per_ds[ds][(m, ratio)].value("reranked", opts.measure) if (m, ratio) in per_ds[ds] else None for ds in per_ds]
                ok = (m, ratio) in keys and all(v is not None for v in vals)
                mean = statistics.fmean(vals) if ok else None
                row.append(pts(mean))
                records.append({"dataset": f"mean of {len(per_ds)}", "row": "reranked", "model": m, "ratio": ratio, "value": mean})
            rows.append(row)
        tables.append(Table(title=f"{bench.upper()} mean over {len(per_ds)} datasets ({', '.join(sorted(per_ds))}) — first stage {fs_label}",
                            headers=["r"] + models, rows=rows,
                            notes=["Mean over the datasets every shown (size, r) has; not the paper's suite average unless all suite datasets are listed."]))
    return (tables[0], records) if tables else None


def _published_sweep_tables(bench: str, paper: Paper | None) -> list[Table]:
    if paper is None:
        return []
    out = []
    table = paper.table(bench)
    if table is not None:
        rows = [[r.label, str(r.ratio), f"{r.cells[AVERAGE].value:.{r.cells[AVERAGE].precision}f}"]
                for r in table.rows if r.ratio is not None and AVERAGE in r.cells]
        if rows:
            out.append(Table(title=f"Published per-r {table.metric} ({bench.upper()} average), paper {paper.version}",
                             headers=["Paper row", "r", "Average"], rows=rows, latex=False,
                             notes=[f"Source: {table.source}"]))
        else:
            out.append(Table(title=f"Published per-r values ({bench.upper()}), paper {paper.version}", headers=["note"],
                             rows=[[f"Paper {paper.version} publishes no per-r {table.metric} values for {bench.upper()} (unknown)."]],
                             latex=False))
    for figs in paper.figures:
        items = [f for f in figs.items if f.dataset.split("/", 1)[0] == bench]
        if items:
            out.append(Table(title=f"Published compression figures, paper {paper.version}", latex=False,
                             headers=["Metric", "Dataset", "Paper row", "r", "Value", "Tolerance"],
                             rows=[[f.metric, f.dataset, f.model, str(f.ratio), f"{f.cell.value:.{f.cell.precision}f}",
                                    "display only" if f.cell.tol is None else f"±{f.cell.tol:g}"] for f in items],
                             notes=[*figs.claims, f"Source: {figs.source}"]))
    return out


# ---- 3. latency and quality across sizes ----------------------------------------------------------------------------

LATENCY_HEADERS = ["Dataset", "Model", "r", "Device", "Dtype", "nDCG@10", "ms/pair p50", "ms/pair p95", "pairs/s",
                   "encode ms/passage (offline)", "stored bytes/passage", "measured rel. online cost (p50)",
                   "paper rel. online cost (analytic)", "warm-up batches", "whole-run ms/pair (cold)"]


def latency_section(records: list[ResultRecord], paper: Paper | None, opts: ReportOptions) -> Section | None:
    recs = [r for r in records if r.reranked and r.stage("reranked")]
    if not recs:
        return None
    conds = {r.path: reranked_condition(r) for r in recs}
    labels = label_conditions(list(set(conds.values())))
    prow = {r.path: opts.paper_rows.get(labels[conds[r.path]]) or (paper.match_model(r.model) if paper else None)
            for r in recs}
    recs.sort(key=lambda r: (r.dataset, conds[r.path].sort_key(prow[r.path]), r.ratio or 0))

    # reference for the measured relative cost: within (dataset, r, device, dtype), the Nano row, else the fastest
    groups: dict[tuple, list[ResultRecord]] = defaultdict(list)
    for r in recs:
        groups[(r.dataset, r.ratio, r.latency.device, r.latency.dtype)].append(r)
    reference: dict[tuple, ResultRecord | None] = {}
    for key, grp in groups.items():
        timed = [r for r in grp if r.latency.ms_per_pair_p50]
        nano = [r for r in timed if prow[r.path] == "KaLM-Reranker-V1-Nano"]
        reference[key] = nano[0] if nano else (min(timed, key=lambda r: r.latency.ms_per_pair_p50) if timed else None)

    rows, csv_records = [], []
    missing_latency = 0
    for r in recs:
        lat = r.latency
        missing_latency += not lat.recorded
        ref = reference[(r.dataset, r.ratio, lat.device, lat.dtype)]
        if lat.ms_per_pair_p50 and ref is not None and ref.latency.ms_per_pair_p50:
            rel = lat.ms_per_pair_p50 / ref.latency.ms_per_pair_p50
            rel_s = f"{rel:.2f}x (vs {labels[conds[ref.path]]})"
        else:
            rel, rel_s = None, MISSING
        cost_cell, cost_table = paper.relative_cost(prow[r.path]) if paper and prow[r.path] else (None, None)
        cost_s = (f"{cost_cell.value:g}x (paper {cost_table.version}, r {'unknown' if cost_table.ratio is None else cost_table.ratio})"
                  if cost_cell else "n/a")
        label = labels[conds[r.path]] + (f" → {prow[r.path]}" if prow[r.path] else "")
        dtype = lat.dtype or (r.model.dtype if r.model else None)
        bytes_pp = r.stored_bytes_per_passage
        row = [r.dataset, label, str(r.ratio), lat.device or MISSING, lat.dtype or (f"{dtype} (model config)" if dtype else MISSING),
               pts(r.value("reranked", opts.measure)), num(lat.ms_per_pair_p50, "{:.3f}"), num(lat.ms_per_pair_p95, "{:.3f}"),
               num(lat.pairs_per_s, "{:.1f}"),
               num(lat.encode_ms_per_passage, "{:.3f}") if lat.encode_ms_per_passage is not None
               else (f"{r.whole_run_encode_ms_per_passage:.3f} (whole run, cold)" if r.whole_run_encode_ms_per_passage else MISSING),
               MISSING if bytes_pp is None else f"{bytes_pp:,.0f}", rel_s, cost_s,
               MISSING if lat.warmup_batches is None else str(lat.warmup_batches), num(r.whole_run_ms_per_pair, "{:.3f}")]
        rows.append(row)
        csv_records.append({"dataset": r.dataset, "model": labels[conds[r.path]], "paper_row": prow[r.path], "ratio": r.ratio,
                            "device": lat.device, "dtype": lat.dtype, "model_dtype": r.model.dtype if r.model else None,
                            "ndcg@10": r.value("reranked", MAIN_MEASURE), "ms_per_pair_p50": lat.ms_per_pair_p50,
                            "ms_per_pair_p95": lat.ms_per_pair_p95, "pairs_per_s": lat.pairs_per_s,
                            "encode_ms_per_passage": lat.encode_ms_per_passage,
                            "whole_run_encode_ms_per_passage": r.whole_run_encode_ms_per_passage, "stored_bytes_per_passage": bytes_pp,
                            "measured_relative_cost": rel, "measured_relative_to": labels[conds[ref.path]] if rel is not None else None,
                            "paper_relative_cost": cost_cell.value if cost_cell else None,
                            "paper_cost_version": cost_table.version if cost_table else None,
                            "warmup_batches": lat.warmup_batches, "whole_run_ms_per_pair": r.whole_run_ms_per_pair,
                            "record": str(r.path)})
    notes = ["ms/pair, pairs/s: the warm, separately timed scoring phase recorded in timings.latency (warm-up batches excluded). "
             "'missing' = the record has no such measurement (never shown as 0).",
             "encode ms/passage: the offline passage encoding (pooled states are cached and reused at every r).",
             "measured rel. online cost: ms/pair p50 divided by the Nano row's (else the fastest row's) at the same dataset, r, "
             "device and dtype.",
             "paper rel. online cost: the paper's ANALYTIC compute estimate (formula, lengths and r not published); shown beside "
             "the measurement, never compared with it.",
             "whole-run ms/pair (cold): online scoring seconds of the whole run / pairs, including warm-up and I/O; a coarse fallback."]
    if missing_latency:
        notes.append(f"{missing_latency} of {len(recs)} rows have no warm latency phase (timings.latency) recorded.")
    table = Table(title=f"Latency and quality across sizes ({opts.measure} ×100)", headers=LATENCY_HEADERS, rows=rows, notes=notes,
                  label_cols=5)
    return Section(name="latency", title="Latency vs quality", tables=[table], csv_records=csv_records)


def record_overview(records: list[ResultRecord]) -> Table:
    rows = []
    for r in records:
        rows.append([r.dataset, r.main_stage, r.model.label if r.model else "–", "–" if r.ratio is None else str(r.ratio),
                     pts(r.value(r.main_stage)), (r.signature or MISSING)[:12], str(r.path) + (f" (+{len(r.duplicates)} duplicate)" if r.duplicates else "")])
    return Table(title="Result records read", headers=["Dataset", "Stage", "Model", "r", "nDCG@10", "Signature", "Path"],
                 rows=rows, latex=False)
