"""The row model of every table, and the aggregation rules, written once.

A table row is a *condition*: the first stage (+ depth), and when reranked the model identity × compression ratio r
(or cascade plan) × rerank depth × tail. Instructions differ per dataset by design and are not part of a row.

Rules (every table, the suite summary and the plots use these functions):
- one value per (condition, evaluated unit): the most recently finished record wins, the others are named in a
  warning (a first stage shared by several reranked records is one value, warned about only when they disagree);
- a dataset evaluated as subsets (LMEB `lmeb/<Dataset>/<subset>`) scores as the mean over its subsets
  (`aggregate_subsets`); whether all of its subsets are present is for the caller to judge against its suite;
- an average over datasets or memory types is the plain mean of what is present (`mean_over`), and says how many
  of how many it covers: a missing value is never counted as 0."""

from __future__ import annotations

import logging
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from kalm_eval.metrics import MAIN_MEASURE
from kalm_eval.storage import canonical_json, sha256_text

log = logging.getLogger(__name__)

FIRST_STAGE, RERANKED = "first_stage", "reranked"
FIRST_STAGE_CONDITION = ["benchmark", "first_stage_key", "first_stage", "first_stage_depth"]
RERANKER_CONDITION = ["reranker", "model_key", "model", "compression", "rerank_depth", "tail", "cascade"]
CONDITION = FIRST_STAGE_CONDITION + RERANKER_CONDITION
# what a first-stage row does not have (cleared so that the reranked records sharing a first stage collapse)
RERANKER_ONLY = RERANKER_CONDITION + ["checkpoint", "revision", "dtype", "weights", "generation", "instruction",
                                      "instruction_sha", "plan", "latency_p50", "latency_p95", "pairs_per_s",
                                      "encode_ms_per_passage", "latency_device", "latency_dtype", "warmup_batches",
                                      "online_ms_per_query", "stored_bytes_per_passage", "pooled_vectors_per_passage",
                                      "pairs", "score_s", "encode_s", "passages_encoded"]
MEAN_OVER_SUBSETS = ["value", "latency_p50", "latency_p95", "pairs_per_s", "encode_ms_per_passage",
                     "online_ms_per_query", "stored_bytes_per_passage", "pooled_vectors_per_passage"]
SUM_OVER_SUBSETS = ["queries", "pairs", "total_s", "score_s", "encode_s", "passages_encoded"]
NAME_ORDER = ("tiny", "nano", "nano_r2", "small", "small_r2", "large", "large_r2")


@dataclass(frozen=True)
class Mean:
    """A mean over what is present: `n` of `of` values."""

    mean: float | None
    n: int
    of: int

    @property
    def complete(self) -> bool:
        return self.of > 0 and self.n == self.of

    def to_dict(self) -> dict:
        return {"mean": self.mean, "n": self.n, "of": self.of, "complete": self.complete}


def is_missing(value) -> bool:
    return value is None or bool(pd.isna(value))


def mean_over(values: Iterable[float | None]) -> Mean:
    values = list(values)
    present = [float(v) for v in values if not is_missing(v)]
    return Mean(statistics.fmean(present) if present else None, len(present), len(values))


def condition_rows(frame: pd.DataFrame, measure: str = MAIN_MEASURE, stages=(FIRST_STAGE, RERANKED)) -> pd.DataFrame:
    """One row per (condition, unit) for `measure`: first-stage rows (from every record, reranked or not) with
    `kind` first_stage, the reranked stage's rows with `kind` reranked; newest record per cell."""
    parts = []
    if FIRST_STAGE in stages:
        first = frame[(frame["stage"] == FIRST_STAGE) & (frame["measure"] == measure)].copy()
        for column in RERANKER_ONLY:
            first[column] = frame[column].iloc[:0].reindex(first.index)  # all missing, same dtype
        parts.append(first.assign(kind=FIRST_STAGE))
    if RERANKED in stages:
        parts.append(frame[(frame["stage"] == RERANKED) & (frame["measure"] == measure)].assign(kind=RERANKED))
    parts = [p for p in parts if len(p)]
    rows = pd.concat(parts, ignore_index=True) if parts else frame.iloc[0:0].assign(kind=pd.Series(dtype=object))
    rows["condition"] = condition_ids(rows)
    return newest_per_unit(rows)


def condition_ids(rows: pd.DataFrame) -> pd.Series:
    def identify(row) -> str:
        return sha256_text(canonical_json([None if is_missing(row[c]) else _plain(row[c]) for c in CONDITION]))[:12]

    return pd.Series([identify(row) for _, row in rows.iterrows()], index=rows.index, dtype=object)


def newest_per_unit(rows: pd.DataFrame) -> pd.DataFrame:
    """Keep the most recently finished row per (condition, unit); warn about the others."""
    rows = rows.sort_values("finished_at", ascending=False, kind="stable")
    for (_, unit), group in rows.groupby(["condition", "unit"], sort=False):
        if len(group) > 1:
            _warn_duplicates(unit, group)
    return rows.drop_duplicates(["condition", "unit"], keep="first").sort_values(["unit", "path"]).reset_index(drop=True)


def _warn_duplicates(unit: str, group: pd.DataFrame) -> None:
    newest = group.iloc[0]
    others = ", ".join(str(p) for p in group["path"].iloc[1:])
    if newest["kind"] == RERANKED:
        log.warning("%s / %s %s: %d results with different signatures; showing the newest (%s), others: %s", unit,
                    newest["model"], newest["plan"], len(group), newest["path"], others)
    elif group["value"].round(12).nunique() > 1:
        log.warning("%s / first stage %s: records disagree (%s); showing the newest (%s)", unit, newest["first_stage"],
                    sorted(group["value"].round(12).unique()), newest["path"])


def aggregate_subsets(rows: pd.DataFrame) -> pd.DataFrame:
    """Subset units (`lmeb/<Dataset>/<subset>`) -> one row per (condition, dataset): value = mean over the subsets
    present (`subsets` = how many, `subset_units` = which); costs averaged, query counts summed. Rows of datasets
    that are their own unit pass through with `subsets` NA."""
    if "subsets" not in rows.columns:
        rows = rows.assign(subsets=pd.NA, subset_units=None)
    parts = rows[rows["subset"].notna()]  # units not yet merged (so applying this twice changes nothing)
    whole = rows[rows["subset"].isna()]
    if parts.empty:
        return whole.reset_index(drop=True)
    how = {c: "first" for c in rows.columns if c not in ("condition", "dataset", "subsets", "subset_units")}
    how.update({c: _mean_if_all for c in MEAN_OVER_SUBSETS})
    how.update({c: _sum_if_all for c in SUM_OVER_SUBSETS})
    how.update({"finished_at": "max", "unit": "count", "subset": lambda s: ", ".join(sorted(s))})
    merged = parts.groupby(["condition", "dataset"], sort=False, dropna=False).agg(how).reset_index()
    merged = merged.rename(columns={"unit": "subsets", "subset": "subset_units"})
    merged["unit"] = merged["dataset"]
    merged["subset"] = None
    out = pd.concat([whole, merged[whole.columns]], ignore_index=True)
    return out.sort_values(["unit", "path"]).reset_index(drop=True)


def _mean_if_all(values: pd.Series):
    return values.mean() if len(values) and values.notna().all() else pd.NA


def _sum_if_all(values: pd.Series):
    return values.sum() if len(values) and values.notna().all() else pd.NA


def model_labels(rows: pd.DataFrame) -> dict[str, str]:
    """condition -> model label; two different identities sharing a label get their identity hash appended."""
    reranked = rows[rows["kind"] == RERANKED].drop_duplicates("condition")
    keys_per_label = reranked.groupby("model")["model_key"].nunique()
    labels = {}
    for _, row in reranked.iterrows():
        ambiguous = keys_per_label.get(row["model"], 1) > 1
        labels[row["condition"]] = f"{row['model']} [{row['model_key'][:6]}]" if ambiguous else row["model"]
    return labels


def condition_sort_key(row, paper_order: tuple[str, ...] = (), paper_row: str | None = None) -> tuple:
    """First stages first, then models by paper-row size order, then by name (tiny < nano < small < large),
    then ratio and depth."""
    if row["kind"] == FIRST_STAGE:
        return (0, str(row["first_stage"]), 0, "", 0, 0)
    size = paper_order.index(paper_row) if paper_row in paper_order else len(paper_order)
    name = NAME_ORDER.index(row["model"]) if row["model"] in NAME_ORDER else len(NAME_ORDER)
    return (1, str(row["first_stage"]), size * 10 + name, str(row["model"]), _int(row["compression"]),
            _int(row["rerank_depth"]), "" if is_missing(row["cascade"]) else str(row["cascade"]))


def _int(value) -> int:
    return -1 if is_missing(value) else int(value)


def _plain(value):
    return value.item() if hasattr(value, "item") else value
