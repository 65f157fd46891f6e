"""PNG plots (matplotlib, Agg), per benchmark: nDCG@10 vs r per model, quality vs online latency (Pareto), and
ROC-AUC vs r per model. Each takes the rows its table is built from (sweep_table / latency_table / roc_table)."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import pandas as pd

from kalm_eval.report.aggregate import NAME_ORDER, is_missing
from kalm_eval.report.paper import Paper


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> Path:
    """Atomic: render to a temporary file in the target folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
        _pyplot().close(fig)
    return path


def series_labels(rows: pd.DataFrame) -> pd.Series:
    """The model label, plus the first stage and the rerank depth when the plotted rows mix them."""
    labels = rows["label"].astype(str)
    if rows["first_stage"].nunique() > 1:
        labels = labels + " (" + rows["first_stage"].astype(str) + ")"
    if rows["rerank_depth"].nunique() > 1:
        labels = labels + " top-" + rows["rerank_depth"].astype(str)
    return labels


def label_key(label: str) -> tuple:
    head = label.split(" ", 1)[0].lower()
    return (NAME_ORDER.index(head) if head in NAME_ORDER else len(NAME_ORDER), label)


def _grid(plt, panels: int):
    cols = min(3, panels)
    fig, axes = plt.subplots(math.ceil(panels / cols), cols, figsize=(5.0 * cols, 3.8 * math.ceil(panels / cols)),
                             squeeze=False)
    for ax in list(axes.flat)[panels:]:
        ax.axis("off")
    return fig, list(axes.flat)[:panels]


def _ratio_axis(ax, ratios: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(ratios)
    ax.set_xticklabels([str(r) for r in ratios])
    ax.set_xlabel("compression ratio r")
    ax.grid(alpha=0.3)


def plot_ndcg_vs_r(sweep: pd.DataFrame, bench: str, out_dir: Path, measure: str) -> Path | None:
    """One panel per dataset (plus the mean over datasets where a (model, r) exists everywhere); first stage dashed."""
    rows = sweep[sweep["benchmark"] == bench].assign(series=lambda f: series_labels(f))
    if rows.empty:
        return None
    panels = {unit: group for unit, group in rows.groupby("unit")}
    if len(panels) > 1:
        wide = rows.pivot_table(index=["series", "compression"], columns="unit", values="value", aggfunc="first").dropna()
        if len(wide):
            mean = wide.mean(axis=1).rename("value").reset_index()
            mean["first_value"] = rows.groupby("unit")["first_value"].first().mean()
            panels[f"mean of {len(wide.columns)}"] = mean.assign(first_stage=rows["first_stage"].iloc[0])
    plt = _pyplot()
    fig, axes = _grid(plt, len(panels))
    ratios = sorted(int(r) for r in rows["compression"].unique())
    for ax, (panel, group) in zip(axes, panels.items()):
        for series in sorted(group["series"].unique(), key=label_key):
            points = group[group["series"] == series].sort_values("compression")
            ax.plot(points["compression"].astype(int), 100 * points["value"], marker="o", label=series)
        first = group["first_value"].dropna()
        if len(first):
            ax.axhline(100 * first.iloc[0], linestyle="--", linewidth=1, color="grey")
            ax.annotate(f"first stage: {group['first_stage'].iloc[0]}", (ratios[0], 100 * first.iloc[0]), fontsize=7,
                        color="grey", xytext=(2, 2), textcoords="offset points")
        _ratio_axis(ax, ratios)
        ax.set_title(panel, fontsize=10)
        ax.set_ylabel(f"{measure} ×100")
        ax.legend(fontsize=7)
    fig.suptitle(f"{bench.upper()}: {measure} vs compression ratio r, per model")
    return save(fig, out_dir / f"ndcg_vs_r.{bench}.png")


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated by another (lower latency x and higher quality y is better), by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def pareto_points(rows: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """(model, r) points averaged over the datasets every point has (else the dataset with the most points)."""
    wide = rows.pivot_table(index=["series", "r", "hardware"], columns="unit", values=["value", "latency_p50"],
                            aggfunc="first")
    complete = [u for u in wide["value"].columns if wide["value"][u].notna().all()]
    if not complete:
        counts = wide["value"].notna().sum()
        complete = [counts.idxmax()]
        wide = wide[wide["value"][complete[0]].notna()]
    points = pd.DataFrame({"x": wide["latency_p50"][complete].mean(axis=1),
                           "y": 100 * wide["value"][complete].mean(axis=1)}).reset_index()
    return points, complete


def plot_pareto(latency: pd.DataFrame, bench: str, out_dir: Path, measure: str) -> tuple[Path | None, str]:
    """Quality vs warm online latency (ms/pair p50); records without a warm latency phase are left out."""
    rows = latency[(latency["benchmark"] == bench)]
    timed = rows[rows["latency_p50"].notna()].copy()
    if timed.empty:
        return None, f"{bench}: no warm latency (timings.latency.ms_per_pair_p50) recorded; Pareto plot skipped"
    timed["series"] = series_labels(timed)
    timed["hardware"] = timed["latency_device"].fillna("?").astype(str) + " " + timed["latency_dtype"].fillna("?").astype(str)
    points, units = pareto_points(timed)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    markers = {hw: m for hw, m in zip(sorted(points["hardware"].unique()), "osD^vP*X")}
    for (series, hardware), group in sorted(points.groupby(["series", "hardware"]), key=lambda kv: label_key(kv[0][0])):
        name = series if len(markers) == 1 else f"{series} ({hardware})"
        ax.scatter(group["x"], group["y"], label=name, marker=markers[hardware], zorder=3)
        for _, p in group[group["r"] != "–"].iterrows():  # "–": a family without MEP has no r to print
            ax.annotate(f"r={p['r']}", (p["x"], p["y"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = pareto_front(list(zip(points["x"], points["y"])))
    ax.step(points["x"].iloc[front], points["y"].iloc[front], where="post", color="black", linewidth=1, alpha=0.6,
            label="Pareto front", zorder=2)
    ax.set_xscale("log")
    ax.set_xlabel("online latency, ms per (query, passage) pair, p50 (warm)")
    ax.set_ylabel(f"{measure} ×100")
    shown = ", ".join(units) if len(units) <= 4 else f"{len(units)} datasets"
    ax.set_title(f"{bench.upper()}: quality vs online latency ({shown}; {'; '.join(markers)})", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    skipped = len(rows) - len(timed)
    note = f"{bench}: Pareto over {len(points)} points on {shown}" + (
        f"; {skipped} record(s) without warm latency left out" if skipped else "")
    return save(fig, out_dir / f"pareto.{bench}.png"), note


def plot_roc_auc(roc: pd.DataFrame, out_dir: Path, paper: Paper | None) -> Path | None:
    """ROC-AUC vs r per model and dataset: pooled (solid), per-query mean (dashed), the paper's figures (crosses)."""
    rows = roc[roc["compression"].notna() & roc["cascade"].isna()]
    if rows.empty:
        return None
    rows = rows.assign(series=series_labels(rows))
    plt = _pyplot()
    fig, axes = _grid(plt, rows["unit"].nunique())
    ratios = sorted(int(r) for r in rows["compression"].unique())
    for ax, (unit, group) in zip(axes, rows.groupby("unit")):
        for series in sorted(group["series"].unique(), key=label_key):
            points = group[group["series"] == series].sort_values("compression")
            line, = ax.plot(points["compression"].astype(int), points["roc_auc"], marker="o", label=f"{series} pooled")
            if points["roc_auc_query_mean"].notna().any():
                ax.plot(points["compression"].astype(int), points["roc_auc_query_mean"], marker=".", linestyle="--",
                        color=line.get_color(), label=f"{series} per-query mean")
        _paper_points(ax, paper, unit)
        _ratio_axis(ax, ratios)
        ax.set_title(unit, fontsize=10)
        ax.set_ylabel("ROC-AUC")
        ax.legend(fontsize=6)
    fig.suptitle("ROC-AUC vs compression ratio r (pooled over reranked pairs; per-query mean dashed)")
    return save(fig, out_dir / "roc_auc_vs_r.png")


def _paper_points(ax, paper: Paper | None, unit: str) -> None:
    items = [f for fs in (paper.figures if paper else []) for f in fs.items if f.metric == "ROC-AUC" and f.dataset == unit]
    for model in sorted({f.model for f in items}):
        mine = sorted((f for f in items if f.model == model and not is_missing(f.ratio)), key=lambda f: f.ratio)
        ax.scatter([f.ratio for f in mine], [f.cell.value for f in mine], marker="x", color="black", zorder=4)
        for f in mine:
            ax.annotate(f"paper {model.rsplit('-', 1)[-1]}", (f.ratio, f.cell.value), fontsize=6, xytext=(3, -8),
                        textcoords="offset points")
