"""Latency and quality across sizes: one row per reranked condition and dataset, measured online cost beside the
paper's analytic relative cost and, when a cost-benchmark file is given, its measured relative cost on its device."""

from __future__ import annotations

import pandas as pd

from kalm_eval.catalogue import preset
from kalm_eval.metrics import MAIN_MEASURE
from kalm_eval.report.aggregate import RERANKED, aggregate_subsets, condition_rows, condition_sort_key, is_missing, model_labels
from kalm_eval.report.cost_benchmark import CostBenchmark
from kalm_eval.report.matching import paper_row_for
from kalm_eval.report.options import ReportOptions
from kalm_eval.report.paper import Paper
from kalm_eval.report.paper_table import ratio_text
from kalm_eval.report.render import MISSING, Section, Table, num, pts, text_frame

NANO = preset("nano").paper_row  # measured cost is relative to this row (kalm_eval.catalogue)
HEADERS = ["Dataset", "Model", "r", "Device", "Dtype", "nDCG@10", "ms/pair p50", "ms/pair p95", "pairs/s",
           "encode ms/passage (offline)", "stored bytes/passage", "measured rel. online cost (p50)",
           "paper rel. online cost (analytic)"]
TAIL_HEADERS = ["online ms/query", "warm-up batches", "whole-run ms/pair (cold)"]
BENCHMARK_HEADER = "benchmark rel. online cost (measured, device)"
NOTES = [
    "ms/pair, pairs/s: the warm, separately timed scoring phase recorded in timings.latency (warm-up batches excluded). "
    "'missing' = the record has no such measurement (never shown as 0).",
    "encode ms/passage: the offline passage encoding (pooled states are cached and reused at every r).",
    "measured rel. online cost: ms/pair p50 divided by the Nano row's (else the fastest row's) at the same dataset, r, "
    "device and dtype.",
    "paper rel. online cost: the paper's ANALYTIC compute estimate (formula, lengths and r not published); shown beside "
    "the measurements, never compared with them.",
    "online ms/query: timings.online_ms_per_query = Σ over the rerank steps of depth × ms/pair p50 (a cascade: each step).",
    "whole-run ms/pair (cold): online scoring seconds of the whole run / pairs, including warm-up and I/O; a coarse fallback.",
]


def latency_rows(frame: pd.DataFrame, paper: Paper | None, opts: ReportOptions) -> pd.DataFrame:
    """Aggregated reranked rows with `label`, `paper_row`, `r` and the measured relative cost (`relative`, `relative_to`)."""
    rows = aggregate_subsets(condition_rows(frame, MAIN_MEASURE, stages=(RERANKED,)))
    if rows.empty:
        return rows
    labels = model_labels(rows)
    rows["label"] = rows["condition"].map(labels)
    rows["paper_row"] = [paper_row_for(row, row["label"], paper, opts)[0] for _, row in rows.iterrows()]
    rows["r"] = [ratio_text(row) for _, row in rows.iterrows()]
    order = sorted(range(len(rows)), key=lambda i: (rows["unit"].iat[i], condition_sort_key(rows.iloc[i])))
    rows = rows.iloc[order].reset_index(drop=True)
    rows["relative"], rows["relative_to"] = None, None
    for _, group in rows.groupby(["unit", "r", "latency_device", "latency_dtype"], dropna=False, sort=False):
        timed = group[group["latency_p50"].notna()]
        if timed.empty:
            continue
        nano = timed[timed["paper_row"] == NANO]
        reference = nano.iloc[0] if len(nano) else timed.loc[timed["latency_p50"].idxmin()]
        rows.loc[timed.index, "relative"] = timed["latency_p50"] / reference["latency_p50"]
        rows.loc[timed.index, "relative_to"] = reference["label"]
    return rows


def latency_section(frame: pd.DataFrame, paper: Paper | None, opts: ReportOptions,
                    benchmark: CostBenchmark | None = None) -> Section | None:
    rows = latency_rows(frame, paper, opts)
    if rows.empty:
        return None
    headers = HEADERS + ([BENCHMARK_HEADER] if benchmark else []) + TAIL_HEADERS
    table_rows = [latency_cells(row, paper, benchmark) for _, row in rows.iterrows()]
    notes = list(NOTES)
    untimed = int(rows["latency_p50"].isna().sum())
    if untimed:
        notes.append(f"{untimed} of {len(rows)} rows have no warm latency phase (timings.latency) recorded.")
    if benchmark:
        notes.append(f"benchmark rel. online cost: relative_to_nano of the cost-benchmark file {benchmark.describe()}, "
                     "matched by model shape (preset name) or paper row and r; its device may differ from the rows'.")
    table = Table(title=f"Latency and quality across sizes ({opts.measure} ×100)",
                  frame=text_frame(table_rows, headers), notes=notes, label_cols=5)
    tables = [table] + ([cost_benchmark_table(benchmark, paper)] if benchmark else [])
    return Section(name="latency", title="Latency vs quality", tables=tables, records=latency_records(rows, paper))


def cost_benchmark_table(benchmark: CostBenchmark, paper: Paper | None) -> Table:
    """The cost-benchmark file's rows: measured relative cost on its device beside the paper's analytic one."""
    rows = []
    for row in benchmark.rows:
        paper_row = row.model if paper and paper.relative_cost(row.model)[0] else (
            paper.match_shape(row.shape) if paper else None)
        rows.append([row.model, row.shape, "–" if row.r is None else str(row.r), row.device, row.dtype,
                     f"{row.ms_median:.4f} [{row.ms_min:.4f}–{row.ms_max:.4f}]",
                     MISSING if row.relative_to_nano is None else f"{row.relative_to_nano:.2f}x",
                     paper_cost_text(paper_row, paper)])
    headers = ["Model", "Shape", "r", "Device", "Dtype", "ms/pair median [min–max]", "measured (device), rel. to Nano",
               "analytic (paper), rel. to Nano"]
    return Table(title="Online cost: measured on a device vs the paper's analytic estimate", frame=text_frame(rows, headers),
                 notes=[f"Measured: {benchmark.describe()}.", "Analytic: the paper's relative online cost column "
                        "(formula not published); the two are shown side by side, never compared."], label_cols=5)


def latency_cells(row: pd.Series, paper: Paper | None, benchmark: CostBenchmark | None) -> list[str]:
    label = row["label"] + (f" → {row['paper_row']}" if row["paper_row"] else "")
    dtype = row["latency_dtype"] if not is_missing(row["latency_dtype"]) else (
        f"{row['dtype']} (model config)" if not is_missing(row["dtype"]) else MISSING)
    relative = MISSING if is_missing(row["relative"]) else f"{row['relative']:.2f}x (vs {row['relative_to']})"
    cells = [row["unit"], label, row["r"], MISSING if is_missing(row["latency_device"]) else row["latency_device"], dtype,
             pts(row["value"]), num(row["latency_p50"], "{:.3f}"), num(row["latency_p95"], "{:.3f}"),
             num(row["pairs_per_s"], "{:.1f}"), encode_text(row),
             num(row["stored_bytes_per_passage"], "{:,.0f}"), relative, paper_cost_text(row["paper_row"], paper)]
    if benchmark:
        cells.append(benchmark_text(row, benchmark))
    return cells + [num(row["online_ms_per_query"], "{:.2f}"), num(row["warmup_batches"], "{:d}"),
                    num(whole_run_ms_per_pair(row), "{:.3f}")]


def encode_text(row: pd.Series) -> str:
    if not is_missing(row["encode_ms_per_passage"]):
        return f"{row['encode_ms_per_passage']:.3f}"
    if not is_missing(row["encode_s"]) and not is_missing(row["passages_encoded"]) and row["passages_encoded"]:
        return f"{1000.0 * row['encode_s'] / row['passages_encoded']:.3f} (whole run, cold)"
    return MISSING


def whole_run_ms_per_pair(row: pd.Series) -> float | None:
    if is_missing(row["score_s"]) or is_missing(row["pairs"]) or not row["pairs"]:
        return None
    return 1000.0 * row["score_s"] / row["pairs"]


def paper_cost_text(paper_row: str | None, paper: Paper | None) -> str:
    cell, cost = paper.relative_cost(paper_row) if paper and paper_row else (None, None)
    if cell is None:
        return "n/a"
    return f"{cell.value:g}x (paper {cost.version}, r {'unknown' if cost.ratio is None else cost.ratio})"


def benchmark_text(row: pd.Series, benchmark: CostBenchmark) -> str:
    r = None if is_missing(row["compression"]) else int(row["compression"])
    found = benchmark.find(r=r, shape=row["model"], model=row["paper_row"])
    if not found or found[0].relative_to_nano is None:
        return MISSING
    hit = found[0]
    return f"{hit.relative_to_nano:.2f}x ({hit.device}, {hit.dtype})"


def latency_records(rows: pd.DataFrame, paper: Paper | None) -> pd.DataFrame:
    out = rows[["unit", "label", "paper_row", "compression", "cascade", "latency_device", "latency_dtype", "dtype",
                "value", "latency_p50", "latency_p95", "pairs_per_s", "encode_ms_per_passage", "stored_bytes_per_passage",
                "online_ms_per_query", "relative", "relative_to", "warmup_batches", "path"]].copy()
    out["paper_relative_cost"] = [paper.relative_cost(p)[0].value if paper and p and paper.relative_cost(p)[0] else None
                                  for p in rows["paper_row"]]
    out["whole_run_ms_per_pair"] = [whole_run_ms_per_pair(row) for _, row in rows.iterrows()]
    return out.rename(columns={"unit": "dataset", "label": "model", "compression": "ratio", "latency_device": "device",
                               "latency_dtype": "latency_dtype", "dtype": "model_dtype", "value": "ndcg@10",
                               "latency_p50": "ms_per_pair_p50", "latency_p95": "ms_per_pair_p95",
                               "relative": "measured_relative_cost", "relative_to": "measured_relative_to",
                               "path": "record"})
