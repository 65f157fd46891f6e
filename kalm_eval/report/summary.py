"""The suite summary (summary.json + summary.md) that the suite runner writes after its units, built from the tidy
results frame with the report's own aggregation rules (aggregate.py):

- per unit: the measure per column ("first_stage", "reranked r=<r>"; a family without MEP: "reranked"; a cascade:
  "reranked <plan>");
- per dataset: the mean over its units (LMEB subsets; `aggregate_subsets`), given only when every unit is present —
  otherwise null, with the missing units listed (never a partial or zero score);
- per memory type (LMEB): the mean over its datasets; averages: mean over datasets and (LMEB) mean over types
  (complete types only). Every mean states n of N and `complete`;
- the Markdown: ×100 with 2 decimals; "—" = missing; "*" = a mean over a partial set.

    summary, markdown = summarize_suite(records, suite="lmeb", units=units, failures={...}, config={...})

`units` are the suite's expected units (anything with `name`, `dataset`, `memory_type`), so missing ones are listed;
without them the units present in the records are taken as the suite."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd

from kalm_eval import __version__
from kalm_eval.metrics import MAIN_MEASURE
from kalm_eval.report.aggregate import RERANKED, aggregate_subsets, condition_rows, is_missing, mean_over
from kalm_eval.report.frame import results_frame
from kalm_eval.result import ResultRecord

AGGREGATION = ("dataset = mean over its subsets/units; memory type = mean over its datasets; mean_over_datasets; "
               "mean_over_types (LMEB). Missing results are listed, never counted as 0.")
MISSING_CELL = "—"


class SuiteUnit(Protocol):
    name: str  # e.g. "lmeb/LoCoMo/multi_hop", "beir/scifact"
    dataset: str  # e.g. "lmeb/LoCoMo", "beir/scifact"
    memory_type: str | None


@dataclass(frozen=True)
class Unit:
    name: str
    dataset: str
    memory_type: str | None = None


def summarize_suite(source: pd.DataFrame | Iterable[ResultRecord], *, suite: str, units: Sequence[SuiteUnit] | None = None,
                    measure: str = MAIN_MEASURE, failures: dict[str, str] | None = None,
                    config: dict[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    """(summary.json content, summary.md text) for one suite run."""
    frame = source if isinstance(source, pd.DataFrame) else results_frame(source)
    rows = condition_rows(frame, measure)
    units = list(units) if units is not None else units_in(rows)
    rows = rows[rows["unit"].isin({u.name for u in units})].copy()
    rows["column"] = column_names(rows)
    columns = sorted(rows["column"].unique(), key=column_order(rows))
    summary: dict[str, Any] = {"suite": suite, "measure": measure, "harness_version": __version__,
                               "aggregation": AGGREGATION, "columns": columns, "config": config or {},
                               "units": unit_entries(rows, units, columns)}
    summary["datasets"] = dataset_entries(rows, units, columns)
    summary["averages"] = {"mean_over_datasets": {c: mean_over(d["scores"].get(c) for d in summary["datasets"].values())
                                                  .to_dict() for c in columns}}
    summary["missing_units"] = [u.name for u in units if not summary["units"][u.name]["scores"]]
    summary["failures"] = failures or {}
    add_memory_types(summary, columns)
    summary["complete"] = not summary["missing_units"] and all(
        d["scores"].get(c) is not None for d in summary["datasets"].values() for c in columns)
    return summary, render_markdown(summary)


def units_in(rows: pd.DataFrame) -> list[Unit]:
    firsts = rows.drop_duplicates("unit").sort_values("unit")
    return [Unit(r["unit"], r["dataset"], None if is_missing(r["memory_type"]) else r["memory_type"])
            for _, r in firsts.iterrows()]


def column_names(rows: pd.DataFrame) -> list[str]:
    """first_stage | reranked r=<r> | reranked | reranked <cascade plan>; prefixed by the model label when the
    records hold several models."""
    several = rows.loc[rows["kind"] == RERANKED, "model_key"].nunique() > 1
    names = []
    for _, row in rows.iterrows():
        if row["kind"] != RERANKED:
            names.append("first_stage")
            continue
        if not is_missing(row["cascade"]):
            name = f"reranked {row['cascade']}"
        else:
            name = "reranked" if is_missing(row["compression"]) else f"reranked r={int(row['compression'])}"
        names.append(f"{row['model']} {name}" if several else name)
    return names


def column_order(rows: pd.DataFrame):
    """first_stage, then single-ratio columns by r, then cascades."""
    firsts = rows.groupby("column")[["compression", "cascade"]].first()

    def key(column: str) -> tuple:
        r, cascade = firsts.at[column, "compression"], firsts.at[column, "cascade"]
        return (column != "first_stage", not is_missing(cascade), -1 if is_missing(r) else int(r), column)

    return key


def unit_entries(rows: pd.DataFrame, units: list[SuiteUnit], columns: list[str]) -> dict[str, dict]:
    entries = {}
    for unit in units:
        mine = rows[rows["unit"] == unit.name]
        scores = {c: float(v) for c, v in zip(mine["column"], mine["value"])}
        entries[unit.name] = {"dataset": unit.dataset, "memory_type": unit.memory_type,
                              "scores": {c: scores[c] for c in columns if c in scores},
                              "records": sorted(dict.fromkeys(mine["path"].dropna()))}
    return entries


def dataset_entries(rows: pd.DataFrame, units: list[SuiteUnit], columns: list[str]) -> dict[str, dict]:
    """Dataset = mean over its units (aggregate_subsets), null unless every unit of the dataset is present."""
    members: dict[str, list[SuiteUnit]] = {}
    for unit in units:
        members.setdefault(unit.dataset, []).append(unit)
    merged = aggregate_subsets(rows)
    entries = {}
    for dataset, mine in members.items():
        entry = {"memory_type": mine[0].memory_type, "units": len(mine), "scores": {}, "missing_units": {}}
        for column in columns:
            present = set(rows.loc[(rows["dataset"] == dataset) & (rows["column"] == column), "unit"])
            missing = [u.name for u in mine if u.name not in present]
            value = merged.loc[(merged["dataset"] == dataset) & (merged["column"] == column), "value"]
            entry["scores"][column] = None if missing or value.empty else float(value.iloc[0])
            if missing:
                entry["missing_units"][column] = missing
        entries[dataset] = entry
    return entries


def add_memory_types(summary: dict[str, Any], columns: list[str]) -> None:
    datasets = summary["datasets"]
    types = list(dict.fromkeys(d["memory_type"] for d in datasets.values() if d["memory_type"]))
    if not types:
        return
    summary["types"] = {}
    for memory_type in types:
        mine = {name: d for name, d in datasets.items() if d["memory_type"] == memory_type}
        summary["types"][memory_type] = {"datasets": list(mine), "scores": {
            c: mean_over(d["scores"].get(c) for d in mine.values()).to_dict() for c in columns}}
    summary["averages"]["mean_over_types"] = {c: mean_over(
        t["scores"][c]["mean"] if t["scores"][c]["complete"] else None for t in summary["types"].values()).to_dict()
        for c in columns}


# ---- Markdown -------------------------------------------------------------------------------------------------------

def score_cell(value: float | None) -> str:
    return MISSING_CELL if value is None else f"{100 * value:.2f}"


def mean_cell(mean: dict[str, Any]) -> str:
    if mean["mean"] is None:
        return MISSING_CELL
    return f"{100 * mean['mean']:.2f}" + ("" if mean["complete"] else f"* ({mean['n']}/{mean['of']})")


def markdown_table(rows: list[list[str]], first: str, columns: list[str]) -> str:
    frame = pd.DataFrame(rows, columns=[first] + columns, dtype=object)
    return frame.to_markdown(index=False, disable_numparse=True, colalign=["left"] + ["right"] * len(columns))


def render_markdown(summary: dict[str, Any]) -> str:
    columns = summary["columns"]
    lines = [f"# {summary['suite']}: {summary['measure']} (×100)", ""]
    if not columns:
        return "\n".join(lines + ["No results.", ""])
    datasets = [[name + (f" ({d['units']} subsets)" if d["units"] > 1 else "")]
                + [score_cell(d["scores"].get(c)) for c in columns] for name, d in summary["datasets"].items()]
    lines += [markdown_table(datasets, "dataset", columns), ""]
    if "types" in summary:
        types = [[f"{t} ({len(e['datasets'])})"] + [mean_cell(e["scores"][c]) for c in columns]
                 for t, e in summary["types"].items()]
        lines += [markdown_table(types, "memory type", columns), ""]
    averages = [[label.replace("_", " ")] + [mean_cell(v[c]) for c in columns] for label, v in summary["averages"].items()]
    lines += [markdown_table(averages, "average", columns), ""]
    if summary["missing_units"]:
        lines.append(f"Missing ({len(summary['missing_units'])}): " + ", ".join(summary["missing_units"]))
    if any(v["mean"] is not None and not v["complete"] for avg in summary["averages"].values() for v in avg.values()):
        lines.append("`*` = mean over the available datasets only (n/of); not comparable with the paper.")
    subsets = [[name] + [score_cell(u["scores"].get(c)) for c in columns] for name, u in summary["units"].items()
               if summary["datasets"][u["dataset"]]["units"] > 1]
    if subsets:
        lines += ["", markdown_table(subsets, "subset", columns)]
    return "\n".join(lines + [""])
