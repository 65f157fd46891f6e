"""Assemble the whole report: result records -> tidy frame -> sections (md/csv/tex) + plots + report.md and
report.html (the same sections on one self-contained page, html.py)."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from kalm_eval.report import html, plots
from kalm_eval.report.aggregate import aggregate_subsets, condition_rows
from kalm_eval.report.baselines_table import baselines_section
from kalm_eval.report.cascade_table import cascade_section
from kalm_eval.report.cost_benchmark import CostBenchmark
from kalm_eval.report.frame import results_frame
from kalm_eval.report.latency_table import latency_rows, latency_section
from kalm_eval.report.options import ReportOptions
from kalm_eval.report.overview import overview_section
from kalm_eval.report.paper import Paper, load_paper
from kalm_eval.report.paper_table import paper_sections
from kalm_eval.report.render import Section, write_text
from kalm_eval.report.roc_table import roc_rows, roc_section
from kalm_eval.report.sweep_table import sweep_rows, sweep_sections
from kalm_eval.result import ResultRecord, discover

log = logging.getLogger(__name__)
DEFAULT_ROOTS = ("results/runs", "results/multirun")


@dataclass
class ReportOutput:
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    records: list[ResultRecord] = field(default_factory=list)
    frame: pd.DataFrame | None = None
    sections: list[Section] = field(default_factory=list)

    @property
    def report_md(self) -> Path:
        return self.out_dir / "report.md"

    @property
    def report_html(self) -> Path:
        return self.out_dir / "report.html"


class WarningCollector(logging.Handler):
    """Keeps the warnings logged while a report is built, for the report's own Warnings list."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def build_report(roots: list[str | Path] | None, out_dir: str | Path, *, paper_version: str | None = "v1",
                 paper_dir: str | Path | None = None, options: ReportOptions | None = None,
                 formats: tuple[str, ...] = ("md", "csv", "tex"), plots: bool = True,
                 cost_benchmark: CostBenchmark | None = None) -> ReportOutput:
    options = options or ReportOptions()
    roots = list(roots) if roots else list(DEFAULT_ROOTS)
    paper = load_paper(paper_version, paper_dir) if paper_version else None
    check_paper_rows(paper, options)
    collector = WarningCollector()
    logger = logging.getLogger("kalm_eval")
    logger.addHandler(collector)
    try:
        out = assemble(roots, Path(out_dir), paper, options, tuple(formats), plots, cost_benchmark)
    finally:
        logger.removeHandler(collector)
    out.warnings = list(dict.fromkeys(collector.messages + out.warnings))
    write_index(out, roots, paper_version, options)
    return out


def check_paper_rows(paper: Paper | None, options: ReportOptions) -> None:
    if paper is None:
        return
    known = {m for table in paper.tables.values() for m in table.model_names()}
    for row in [options.paper_row, *options.paper_rows.values()]:
        if row and row not in known:
            raise ValueError(f"paper row {row!r} is not in paper {paper.version} (rows: {sorted(known)})")


def assemble(roots, out_dir: Path, paper: Paper | None, options: ReportOptions, formats, with_plots: bool,
             cost_benchmark: CostBenchmark | None) -> ReportOutput:
    found = discover(roots)
    out = ReportOutput(out_dir=out_dir, records=found.records)
    if not found.records:
        out.warnings.append(f"no result records under {', '.join(map(str, roots))}")
    frame = out.frame = results_frame(found.records)
    units = condition_rows(frame, options.measure)
    rows = aggregate_subsets(units)
    sections = paper_sections(rows, paper, options)
    sweeps = sweep_sections(frame, paper, options)
    latency = latency_section(frame, paper, options, cost_benchmark)
    roc = roc_section(frame, paper, options)
    extra = [baselines_section(rows, paper, options, units), cascade_section(rows, paper), roc]
    sections += sweeps + [s for s in [latency, *extra] if s is not None]
    if with_plots and not frame.empty:
        add_plots(out, frame, paper, options, sweeps, latency, roc)
    overview = overview_section(frame, found)
    for section in sections + [overview]:
        out.files += section.write(out_dir, formats)
    out.sections = sections + [overview]
    return out


def add_plots(out: ReportOutput, frame: pd.DataFrame, paper: Paper | None, options: ReportOptions,
              sweeps: list[Section], latency: Section | None, roc: Section | None) -> None:
    """nDCG vs r per benchmark (into its sweep section), Pareto (into the latency section), ROC-AUC vs r."""
    plot_dir = out.out_dir / "plots"
    sweep = sweep_rows(frame, options.measure)
    timed = latency_rows(frame, paper, options)
    for section in sweeps:
        bench = section.name.split(".", 1)[1]
        try:
            path = plots.plot_ndcg_vs_r(sweep, bench, plot_dir, options.measure)
            _attach(out, section, path)
            path, note = plots.plot_pareto(timed, bench, plot_dir, options.measure)
            _attach(out, latency or section, path)
            (latency.intro if path and latency else out.warnings).append(note)
        except Exception as err:  # a plot must never cost the tables
            log.warning("plots for %s failed: %s", bench, err)
    if roc is not None:
        _attach(out, roc, plots.plot_roc_auc(roc_rows(frame, paper, options), plot_dir, paper))


def _attach(out: ReportOutput, section: Section, path: Path | None) -> None:
    if path is not None:
        section.images.append(path)
        out.plots.append(path)


def write_index(out: ReportOutput, roots, paper_version, options: ReportOptions) -> None:
    """report.md and report.html: the same header, warnings and sections."""
    meta = [f"generated: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}",
            f"results: {', '.join(map(str, roots))} ({len(out.records)} record(s))",
            f"paper: {paper_version} (published numbers: kalm_eval.paper, results/paper/{paper_version}/)"
            if paper_version else "paper: none",
            f"measure: {options.measure}; compare_to={options.compare_to}; paper_row={options.paper_row}; "
            f"columns={options.columns}"]
    lines = ["# kalm-eval report", ""] + [f"- {m}" for m in meta] + [""]
    if out.warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in out.warnings] + [""]
    lines += [section.markdown(level=2, image_base=out.out_dir) for section in out.sections]
    out.out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out.report_md, "\n".join(lines))
    write_text(out.report_html, html.report_page(out.sections, meta, out.warnings))
    out.files[:0] = [out.report_md, out.report_html]


__all__ = ["build_report", "ReportOutput", "ReportOptions", "DEFAULT_ROOTS"]
