"""Console entry points (Hydra apps; configs kalm_eval.conf: report.yaml and compare.yaml):

    kalm-eval-report  [results=DIR|[DIR,...]] [output_dir=DIR] [paper_version=v1] [paper_row=...] [compare_to=dataset|average]
                      [cost_benchmark=FILE.json] [export=mteb]
    kalm-eval-compare baseline=DIR candidate=DIR [margin=0.01] [alpha=0.05] [test=randomization|bootstrap]
                      [n_resamples=10000] [seed=0] [allow_protocol_diff=[reranker.compression]] [drilldown=10]

`python -m kalm_eval.report report ...` / `python -m kalm_eval.report compare ...` are the same."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from kalm_eval.storage import atomic_open, write_json_atomic

CONF = "pkg://kalm_eval.conf"
log = logging.getLogger("kalm_eval.report")
FORMATS = ("md", "csv", "tex")
EXPORTS = ("mteb",)


def existing_roots(value) -> list[str]:
    """The `results=` directories as given (none: the defaults); a given one that does not exist is an error, not an
    empty report."""
    roots = as_paths(value)
    absent = [p for p in roots if not Path(p).exists()]
    if absent:
        raise ValueError(f"results={absent[0]}: no such results directory")
    return roots


def as_paths(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, ListConfig)):
        return [str(v) for v in value]
    return [str(value)]


@hydra.main(version_base="1.3", config_path=CONF, config_name="report")
def report_main(cfg: DictConfig) -> None:
    from kalm_eval.report.cost_benchmark import CostBenchmarkError
    from kalm_eval.report.paper import PaperSpecError

    try:
        if cfg.get("export"):
            export(cfg)
            return
        out = report(cfg)
    except (PaperSpecError, CostBenchmarkError, ValueError) as err:
        log.error("%s", err)
        sys.exit(2)
    for warning in out.warnings:
        log.warning("%s", warning)
    print(f"{len(out.records)} result record(s) -> {out.report_md}")
    for path in out.files[1:] + out.plots:
        print(f"  {path}")


def report(cfg: DictConfig):
    from kalm_eval.report.build import build_report
    from kalm_eval.report.cost_benchmark import load_cost_benchmark
    from kalm_eval.report.options import ReportOptions

    paper_rows = OmegaConf.to_container(cfg.paper_rows) if cfg.paper_rows else {}
    options = ReportOptions(paper_row=cfg.paper_row, paper_rows=dict(paper_rows), compare_to=cfg.compare_to,
                            columns=cfg.columns, measure=cfg.measure)
    formats = tuple(as_paths(cfg.formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"formats must be among {', '.join(FORMATS)}; got {bad}")
    benchmark = load_cost_benchmark(cfg.cost_benchmark) if cfg.get("cost_benchmark") else None
    return build_report(existing_roots(cfg.results) or None, cfg.output_dir, paper_version=cfg.paper_version,
                        paper_dir=cfg.paper_dir, options=options, formats=formats, plots=bool(cfg.plots),
                        cost_benchmark=benchmark)


def export(cfg: DictConfig) -> None:
    from kalm_eval.report.build import DEFAULT_ROOTS
    from kalm_eval.report.mteb_export import export_mteb
    from kalm_eval.result import discover

    if cfg.export not in EXPORTS:
        raise ValueError(f"export must be one of {', '.join(EXPORTS)}, got {cfg.export!r}")
    roots = existing_roots(cfg.results) or list(DEFAULT_ROOTS)
    result = export_mteb(discover(roots).records, cfg.output_dir)
    print(f"mteb export: {len(result.files) // 2} task file(s) -> {cfg.output_dir}")
    for path in result.files:
        print(f"  {path}")
    for message in result.skipped:
        print(f"  skipped: {message}")


@hydra.main(version_base="1.3", config_path=CONF, config_name="compare")
def compare_main(cfg: DictConfig) -> None:
    from kalm_eval.report.compare import REFUSED, CompareOptions, compare_records
    from kalm_eval.report.compare_render import to_console, to_html, to_json, to_markdown
    from kalm_eval.result import discover

    missing = [k for k in ("baseline", "candidate") if OmegaConf.is_missing(cfg, k) or not cfg[k]]
    if missing:
        log.error("usage: kalm-eval-compare baseline=<results dir> candidate=<results dir> [margin=.. alpha=.. test=..]; "
                  "missing: %s", ", ".join(missing))
        sys.exit(REFUSED)
    try:
        options = CompareOptions(margin=float(cfg.margin), alpha=float(cfg.alpha), test=str(cfg.test),
                                 n_resamples=int(cfg.n_resamples), seed=int(cfg.seed), measure=str(cfg.measure),
                                 stage=str(cfg.stage), allow_protocol_diff=tuple(as_paths(cfg.allow_protocol_diff)),
                                 require_all=bool(cfg.get("require_all", False)), drilldown=cfg.get("drilldown", 10))
    except ValueError as err:
        log.error("%s", err)
        sys.exit(REFUSED)
    baseline_roots, candidate_roots = as_paths(cfg.baseline), as_paths(cfg.candidate)
    absent = [p for p in baseline_roots + candidate_roots if not Path(p).exists()]
    if absent:
        log.error("no such results directory: %s", ", ".join(absent))
        sys.exit(REFUSED)
    result = compare_records(discover(baseline_roots).records, discover(candidate_roots).records, options)
    print(to_console(result))
    if cfg.output_dir:
        out_dir = Path(cfg.output_dir)
        with atomic_open(out_dir / "compare.md") as fh:
            fh.write(to_markdown(result, baseline_roots, candidate_roots))
        with atomic_open(out_dir / "compare.html") as fh:
            fh.write(to_html(result, baseline_roots, candidate_roots))
        write_json_atomic(out_dir / "compare.json", {**to_json(result), "baseline": baseline_roots,
                                                     "candidate": candidate_roots})
        print(f"-> {out_dir / 'compare.md'} (+ compare.json, compare.html)")
    sys.exit(result.exit_code)


def main(argv: list[str] | None = None) -> None:
    """`python -m kalm_eval.report {report|compare} key=value ...`"""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("report", "compare"):
        print(__doc__)
        sys.exit(2)
    command = argv.pop(0)
    sys.argv = [f"kalm-eval-{command}", *argv]
    (report_main if command == "report" else compare_main)()
