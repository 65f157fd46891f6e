"""Which published paper row a table row (a condition of aggregate.condition_rows) is compared with, never one of
another checkpoint generation (GenerationMismatch, kalm_eval.errors)."""

from __future__ import annotations

import pandas as pd

from kalm_eval.report.aggregate import FIRST_STAGE, is_missing
from kalm_eval.report.options import ReportOptions
from kalm_eval.report.paper import Paper, check_generation

AUTO, EXPLICIT, FALLBACK = "auto", "explicit", "fallback"


def paper_row_for(row: pd.Series, label: str, paper: Paper | None, opts: ReportOptions) -> tuple[str | None, str]:
    """(paper row name, how it was chosen: auto | explicit | fallback | ""). `label` is the row's model label.

    A first stage matches by its retriever model; a reranker by an explicit `paper_rows` entry for its label, else
    by its pinned hub id (+ revision), else the `paper_row` fallback (e.g. the tiny test model shown against Nano).
    A reranker of a known checkpoint generation is never paired with a row of another generation: GenerationMismatch
    (an unknown generation, e.g. the tiny random model or an unnamed local checkpoint, is not checked)."""
    if paper is None:
        return None, ""
    if row["kind"] == FIRST_STAGE:
        model = None if is_missing(row["first_stage_model"]) else str(row["first_stage_model"])
        found = paper.match_first_stage(model)
        return (found, AUTO) if found else (None, "")
    name, how = _reranker_row(row, label, paper, opts)
    if name:
        check_generation(label, _text(row.get("generation")), name, paper.generation_of(name))
    return name, how


def _reranker_row(row: pd.Series, label: str, paper: Paper, opts: ReportOptions) -> tuple[str | None, str]:
    if label in opts.paper_rows:
        return opts.paper_rows[label], EXPLICIT
    found = paper.match_model(_text(row["checkpoint"]), _text(row["revision"]), _text(row["weights"]) or "hub")
    if found:
        return found, AUTO
    if opts.paper_row:
        return opts.paper_row, FALLBACK
    return None, ""


def _text(value) -> str | None:
    return None if is_missing(value) else str(value)
