"""The records overview: every result record read (one row per record, its main stage's value)."""

from __future__ import annotations

import pandas as pd

from kalm_eval.metrics import MAIN_MEASURE
from kalm_eval.report.aggregate import is_missing
from kalm_eval.report.render import MISSING, Section, Table, pts, text_frame
from kalm_eval.result import Discovered

HEADERS = ["Dataset", "Stage", "Model", "Plan", "nDCG@10", "Signature", "Path"]


def record_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per record: its main stage (reranked when present) and that stage's nDCG@10."""
    main = frame[frame["measure"] == MAIN_MEASURE].copy()
    main["rank"] = (main["stage"] == "reranked").astype(int)
    main = main.sort_values("rank", ascending=False, kind="stable").drop_duplicates("path")
    return main.sort_values(["unit", "path"]).reset_index(drop=True)


def overview_section(frame: pd.DataFrame, discovered: Discovered) -> Section:
    rows = record_rows(frame)
    duplicates = {str(p): sig for sig, paths in discovered.duplicates.items() for p in paths}
    by_signature = {}
    for path, signature in duplicates.items():
        by_signature.setdefault(signature, []).append(path)
    table_rows = []
    for _, r in rows.iterrows():
        extra = by_signature.get(r["signature"], [])
        table_rows.append([r["unit"], r["stage"], "–" if is_missing(r["model"]) else r["model"],
                           "–" if is_missing(r["plan"]) else r["plan"], pts(r["value"]), (r["signature"] or MISSING)[:12],
                           r["path"] + (f" (+{len(extra)} duplicate)" if extra else "")])
    records = rows[["unit", "stage", "model", "compression", "plan", "value", "signature", "path"]].rename(
        columns={"unit": "dataset", "compression": "ratio"})
    records["duplicates"] = [";".join(by_signature.get(s, [])) for s in records["signature"]]
    notes = [f"Skipped: {message}" for message in discovered.skipped]
    table = Table(title="Result records read", frame=text_frame(table_rows, HEADERS), notes=notes, in_latex=False)
    return Section(name="records", title="Result records read", tables=[table], records=records)
