"""Assemble the whole report from result records: sections -> files (md/csv/tex) + plots + report.md."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path

from kalm_eval.storage import atomic_open
from kalm_eval.report import plots as plotting
from kalm_eval.report.paper import Paper, load_paper
from kalm_eval.report.render import Section, csv_text
from kalm_eval.report.results import DEFAULT_ROOTS, ResultRecord, load_records
from kalm_eval.report.tables import (ReportOptions, aggregate_subsets, latency_section, paper_sections, record_overview,
                                     sweep_sections)

log = logging.getLogger(__name__)


@dataclass
class ReportOutput:
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    records: list[ResultRecord] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)

    @property
    def report_md(self) -> Path:
        return self.out_dir / "report.md"


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def build_report(roots: list[str | Path] | None, out_dir: str | Path, *, paper_version: str | None = "v1",
                 paper_dir: str | Path | None = None, options: ReportOptions | None = None,
                 formats: tuple[str, ...] = ("md", "csv", "tex"), plots: bool = True) -> ReportOutput:
    out_dir = Path(out_dir)
    options = options or ReportOptions()
    roots = list(roots) if roots else list(DEFAULT_ROOTS)
    collector = _Collect()
    logger = logging.getLogger("kalm_eval.report")
    logger.addHandler(collector)
    try:
        out = _build(roots, out_dir, paper_version, paper_dir, options, tuple(formats), plots)
    finally:
        logger.removeHandler(collector)
    out.warnings = list(dict.fromkeys(collector.messages + out.warnings))
    _write_index(out, roots, paper_version, options)
    return out


def _build(roots, out_dir: Path, paper_version, paper_dir, options: ReportOptions, formats, plots: bool) -> ReportOutput:
    out = ReportOutput(out_dir=out_dir)
    paper: Paper | None = load_paper(paper_version, paper_dir) if paper_version else None
    if paper is not None:
        known = {m for t in paper.tables.values() for m in t.model_names()}
        for row in [options.paper_row, *options.paper_rows.values()]:
            if row and row not in known:
                raise ValueError(f"paper row {row!r} is not in paper {paper.version} (rows: {sorted(known)})")
    records = load_records(roots)
    out.records = records
    if not records:
        out.warnings.append(f"no result records under {', '.join(map(str, roots))}")
    for rec in records:
        if rec.duplicates:
            log.info("%s: same signature also at %s (read once)", rec.path, ", ".join(map(str, rec.duplicates)))

    records = aggregate_subsets(records)  # lmeb/<Dataset>/<subset> -> lmeb/<Dataset> (mean over subsets)
    sections: list[Section] = []
    sections += paper_sections(records, paper, options)
    sweeps = sweep_sections(records, paper, options)
    sections += sweeps
    lat = latency_section(records, paper, options)
    if lat is not None:
        sections.append(lat)

    if plots:
        plot_dir = out_dir / "plots"
        by_bench = {s.name.split(".", 1)[1]: s for s in sweeps}
        for bench, sec in by_bench.items():
            try:
                path = plotting.plot_ndcg_vs_r(records, bench, plot_dir, options.measure)
                if path:
                    sec.images.append(path)
                    out.plots.append(path)
                path, note = plotting.plot_pareto(records, bench, plot_dir, options.measure)
                if path:
                    (lat or sec).images.append(path)
                    out.plots.append(path)
                    if lat is not None:
                        lat.intro.append(note)
                else:
                    out.warnings.append(note)
            except Exception as err:  # a plot must never cost the tables
                log.warning("plots for %s failed: %s", bench, err)

    for sec in sections:
        out.files += sec.write(out_dir, formats)
    overview = Section(name="records", title="Result records read", tables=[record_overview(out.records)])
    if "csv" in formats:
        with atomic_open(out_dir / "records.csv") as fh:
            fh.write(csv_text([{"dataset": r.dataset, "stage": r.main_stage, "model": r.model.label if r.model else None,
                                "ratio": r.ratio, "value": r.value(r.main_stage), "signature": r.signature,
                                "path": str(r.path), "duplicates": ";".join(map(str, r.duplicates))} for r in out.records]))
        out.files.append(out_dir / "records.csv")
    out.sections = sections + [overview]
    return out


def _write_index(out: ReportOutput, roots, paper_version, options: ReportOptions) -> None:
    lines = ["# kalm-eval report", "",
             f"- generated: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}",
             f"- results: {', '.join(map(str, roots))} ({len(out.records)} record(s))",
             f"- paper: {paper_version or 'none'} (published numbers: results/paper/{paper_version}/)" if paper_version else "- paper: none",
             f"- measure: {options.measure}; compare_to={options.compare_to}; paper_row={options.paper_row}; columns={options.columns}",
             ""]
    if out.warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in out.warnings] + [""]
    for sec in out.sections:
        lines.append(sec.markdown(level=2, image_base=out.out_dir))
    out.out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_open(out.report_md) as fh:
        fh.write("\n".join(lines))
    out.files.insert(0, out.report_md)


__all__ = ["build_report", "ReportOutput", "ReportOptions"]
