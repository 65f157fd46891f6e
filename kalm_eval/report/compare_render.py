"""The regression gate's outputs: compare.md (pandas Markdown table + the per-query drill-down), the console text and
compare.json, and compare.html (the same on one self-contained page, with html.py's pieces)."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import pandas as pd

from kalm_eval.report import drilldown, html, labels
from kalm_eval.report.compare import CompareResult
from kalm_eval.report.render import Table, text_frame
from kalm_eval.result import ResultRecord


def format_p(p: float) -> str:
    return "nan" if math.isnan(p) else (f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}")


def result_frame(result: CompareResult) -> pd.DataFrame:
    o = result.options
    rows = [[r.label or r.dataset, r.stage, str(r.n), f"{r.baseline_mean:.4f}", f"{r.candidate_mean:.4f}",
             f"{r.delta:+.4f}", f"[{r.ci[0]:+.4f}, {r.ci[1]:+.4f}]", format_p(r.p), format_p(r.p_holm), r.status]
            for r in result.rows]
    rows += [[a.label, "", "", f"{a.baseline_mean:.4f}", f"{a.candidate_mean:.4f}", f"{a.delta:+.4f}", "",
              format_p(a.p) + " (stratified)", "", "REGRESSION" if a.regression else "ok"] for a in result.averages]
    headers = ["Dataset", "Stage", "Queries", f"Baseline {o.measure}", f"Candidate {o.measure}", "Δ",
               "95% CI (bootstrap)", f"p ({o.test})", "p (Holm)", "Status"]
    return pd.DataFrame(rows, columns=headers, dtype=object)


def model_description(record: ResultRecord) -> str:
    model = labels.model_identity(record)
    if model is None:
        return f"{labels.first_stage_label(record)} (first stage)"
    shown = model.label + (f" [{model.checkpoint}]" if model.checkpoint and model.checkpoint != model.label else "")
    shown += f" generation {model.generation}" if model.generation else ""
    return shown + (f" {model.dtype}" if model.dtype else "")


def to_markdown(result: CompareResult, baseline_roots: list[str], candidate_roots: list[str]) -> str:
    o = result.options
    lines = [f"# Regression gate: {result.verdict}", "",
             f"- baseline: {', '.join(map(str, baseline_roots))}", f"- candidate: {', '.join(map(str, candidate_roots))}",
             f"- rule: a dataset fails when Δ < −{o.margin:g} ({o.measure}) and its Holm-adjusted p < {o.alpha:g}; "
             f"the macro average fails when Δ_avg < −{o.margin:g} and its stratified p < {o.alpha:g}",
             f"- test: two-sided paired {o.test}, {o.n_resamples} resamples, seed {o.seed}; "
             f"Holm across {len(result.rows)} dataset(s)", ""]
    if result.refused:
        lines += ["## Refused", "", "The runs were not produced under the same protocol (or cannot be paired):", ""]
        lines += [f"- {reason}" for reason in result.refused] + [""]
    if result.rows:
        table = result_frame(result).map(lambda cell: str(cell).replace("|", "\\|"))
        lines += ["## Per dataset", "", table.to_markdown(index=False, disable_numparse=True), "", "## Models", ""]
        lines += [f"- {r.dataset}: baseline {model_description(r.baseline)} ({r.baseline.path}); "
                  f"candidate {model_description(r.candidate)} ({r.candidate.path})" for r in result.rows]
        lines.append("")
    if result.drilldowns:
        lines += ["## Per-query drill-down", "",
                  f"Wins / ties / losses: queries where the candidate's {o.measure} is higher / equal / lower."
                  + (f" Then the {o.drilldown} queries with the largest loss and gain: the query text, each relevant "
                     "document's rank in the baseline run → in the candidate run (— = not in the run), and the top "
                     "passages of each run (id and first words)." if o.drilldown else ""), ""]
        for d in result.drilldowns:
            lines += drilldown.to_markdown(d, o.measure, details=bool(o.drilldown))
    if result.warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in result.warnings] + [""]
    return "\n".join(lines)


def to_console(result: CompareResult) -> str:
    out = [f"regression gate: {result.verdict}"] + [f"REFUSED  {reason}" for reason in result.refused]
    if result.rows:
        out.append(result_frame(result).to_string(index=False))
    for d in result.drilldowns:
        worst = d.losses_top[0] if d.losses_top else None
        out.append(f"{d.label}: {d.wins} wins / {d.ties} ties / {d.losses} losses"
                   + (f"; largest loss {worst.query_id} Δ {worst.delta:+.4f}" if worst else ""))
    return "\n".join(out + [f"warning: {w}" for w in result.warnings])


def to_json(result: CompareResult) -> dict[str, Any]:
    options = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(result.options).items()}
    datasets = [{"dataset": r.dataset, "label": r.label, "ratio": r.baseline.compression,
                 "plan": labels.plan_text(r.baseline), "stage": r.stage, "queries": r.n, "baseline": r.baseline_mean,
                 "candidate": r.candidate_mean, "delta": r.delta, "ci95": list(r.ci), "p": r.p, "p_holm": r.p_holm,
                 "regression": r.regression, "baseline_record": str(r.baseline.path),
                 "candidate_record": str(r.candidate.path)} for r in result.rows]
    return {"verdict": result.verdict, "exit_code": result.exit_code, "options": options, "refused": result.refused,
            "warnings": result.warnings, "datasets": datasets, "averages": [asdict(a) for a in result.averages],
            "drilldown": [drilldown.to_dict(d) for d in result.drilldowns]}


DRILL_HEADERS = ["#", "Query", "Δ", "Before → after", "Query text", "Relevant: rank before → after", "Baseline top-3",
                 "Candidate top-3"]


def drilldown_table(title: str, changes: list[drilldown.QueryChange]) -> Table:
    def passages(top) -> str:
        return " | ".join(f"{p.doc_id}: {p.words}" if p.words else p.doc_id for p in top)

    rows = [[str(i), c.query_id, f"{c.delta:+.4f}", f"{c.baseline:.4f} → {c.candidate:.4f}",
             "(text unavailable)" if c.text is None else c.text,
             "; ".join(f"{r.doc_id}: {drilldown.rank_text(r.before)} → {drilldown.rank_text(r.after)}" for r in c.relevant),
             passages(c.top_baseline), passages(c.top_candidate)] for i, c in enumerate(changes, 1)]
    return Table(title=title, frame=text_frame(rows, DRILL_HEADERS), label_cols=len(DRILL_HEADERS))


def to_html(result: CompareResult, baseline_roots: list[str], candidate_roots: list[str]) -> str:
    """compare.html: verdict, rule, per-dataset table, models, the drill-down of every pair, refusals, warnings."""
    o = result.options
    kind = {0: "pass", 1: "fail", 2: "refused"}[result.exit_code]
    meta = [f"baseline: {', '.join(map(str, baseline_roots))}", f"candidate: {', '.join(map(str, candidate_roots))}",
            f"rule: a dataset fails when Δ < −{o.margin:g} ({o.measure}) and its Holm-adjusted p < {o.alpha:g}; "
            f"the macro average fails when Δ_avg < −{o.margin:g} and its stratified p < {o.alpha:g}",
            f"test: two-sided paired {o.test}, {o.n_resamples} resamples, seed {o.seed}; Holm across "
            f"{len(result.rows)} dataset(s)"]
    body = [f'<h1>Regression gate: <span class="verdict {kind}">{html.esc(result.verdict)}</span></h1>',
            html.meta_list(meta)]
    if result.refused:
        body.append('<section id="refused" data-section="refused"><h2>Refused</h2>' + html.meta_list(result.refused)
                    + "</section>")
    if result.rows:
        body.append('<section id="per-dataset" data-section="per-dataset"><h2>Per dataset</h2>'
                    + html.table_html(Table(title="", frame=result_frame(result), label_cols=2)) + "<h3>Models</h3>"
                    + html.meta_list(f"{r.label or r.dataset}: baseline {model_description(r.baseline)}; candidate "
                                     f"{model_description(r.candidate)}" for r in result.rows) + "</section>")
    if result.drilldowns:
        parts = ['<section id="drilldown" data-section="drilldown"><h2>Per-query drill-down</h2>',
                 f"<p>Wins / ties / losses: queries where the candidate's {html.esc(o.measure)} is higher / equal / "
                 f"lower; then the {o.drilldown} queries with the largest loss and gain (— = not in the run).</p>"]
        for d in result.drilldowns:
            parts.append(f'<h3 data-dataset="{html.esc(d.dataset)}">{html.esc(d.label)}: {d.wins} wins / {d.ties} ties '
                         f"/ {d.losses} losses over {d.queries} queries</h3>")
            if d.note:
                parts.append(f'<p class="warn">{html.esc(d.note)}</p>')
            if o.drilldown:
                parts.append(html.table_html(drilldown_table(f"Largest losses ({o.measure})", d.losses_top), level=4))
                parts.append(html.table_html(drilldown_table(f"Largest gains ({o.measure})", d.gains_top), level=4))
        body.append("".join(parts) + "</section>")
    if result.warnings:
        body.append('<section id="warnings" data-section="warnings"><h2>Warnings</h2>'
                    + html.meta_list(result.warnings) + "</section>")
    return html.page(f"Regression gate: {result.verdict}", "".join(body))
