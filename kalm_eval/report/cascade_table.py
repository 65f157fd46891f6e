"""Cascades (issue 14.2): rerank plans of one model over one first stage — single-ratio runs (top-100 @ r=4) and
cascades (top-100 @ r=32 → top-20 @ r=2) — side by side: quality and relative online cost, as in the paper's
cascade comparison. Cost = timings.online_ms_per_query (Σ over the plan's steps of depth × measured ms/pair p50),
relative to the cheapest plan shown."""

from __future__ import annotations

import pandas as pd

from kalm_eval.report.aggregate import RERANKED, is_missing, mean_over, model_labels
from kalm_eval.report.paper import AVERAGE, Paper
from kalm_eval.report.render import MISSING, Section, Table, num, pts, text_frame

GROUP = ["benchmark", "model_key", "first_stage_key", "first_stage_depth", "tail"]


def cascade_section(rows: pd.DataFrame, paper: Paper | None) -> Section | None:
    """`rows`: aggregated condition rows. One table per (benchmark, model, first stage) that has a cascade."""
    reranked = rows[rows["kind"] == RERANKED].copy()
    reranked["label"] = reranked["condition"].map(model_labels(rows))
    tables = [plan_table(group) for _, group in reranked.groupby(GROUP, dropna=False, sort=True)
              if group["cascade"].notna().any()]
    tables += published_cascades(paper)
    if not any(t.in_latex for t in tables):
        return None
    return Section(name="cascade", title="Cascades: quality vs online cost", tables=tables)


def plan_table(group: pd.DataFrame) -> Table:
    units = sorted(group["unit"].unique())
    values = group.pivot_table(index="plan", columns="unit", values="value", aggfunc="first").reindex(columns=units)
    costs = group.groupby("plan")["online_ms_per_query"].apply(lambda s: s.mean() if s.notna().all() else None)
    common = [u for u in units if values[u].notna().all()]
    plans = sorted(values.index, key=lambda plan: (_cost_or_inf(costs.get(plan)), plan))
    cheapest = next((p for p in plans if not is_missing(costs.get(p))), None)
    table_rows = []
    for plan in plans:
        mean = mean_over(values.at[plan, u] for u in common)
        cost = costs.get(plan)
        relative = MISSING if is_missing(cost) or cheapest is None else f"{cost / costs[cheapest]:.2f}x"
        table_rows.append([plan] + [pts(values.at[plan, u]) for u in units] + [pts(mean.mean), num(cost, "{:.2f}"),
                                                                                 relative])
    first = group.iloc[0]
    headers = ["Plan"] + [u.split("/", 1)[-1] for u in units] + [f"Mean ({len(common)})", "online ms/query",
                                                                   "relative online cost"]
    notes = [f"Relative online cost: online ms/query ÷ that of the cheapest plan shown ({cheapest or 'none timed'}); "
             "online ms/query = Σ over the plan's steps of depth × ms/pair p50 (timings.online_ms_per_query), mean "
             "over the datasets.",
             f"Mean over the {len(common)} dataset(s) every plan has."]
    title = f"{first['benchmark'].upper()} — {first['label']}, first stage {first['first_stage']}" + (
        "" if is_missing(first["first_stage_depth"]) else f" top-{int(first['first_stage_depth'])}")
    return Table(title=title, frame=text_frame(table_rows, headers), notes=notes)


def _cost_or_inf(cost) -> float:
    return float("inf") if is_missing(cost) else float(cost)


def published_cascades(paper: Paper | None) -> list[Table]:
    """The paper's own cascade rows (v3 only), for orientation."""
    if paper is None:
        return []
    rows = [[table.benchmark, r.model, r.variant or "", f"{r.cells[AVERAGE].value:.{r.cells[AVERAGE].precision}f}",
             r.note or ""] for table in paper.tables.values() for r in table.rows if r.role == "cascade" and AVERAGE in r.cells]
    if not rows:
        return []
    return [Table(title=f"Published cascade comparison, paper {paper.version}", in_latex=False,
                  frame=text_frame(rows, ["Benchmark", "Paper row", "Plan", "Average", "Note"]))]
