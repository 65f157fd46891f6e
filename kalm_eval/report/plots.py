"""PNG plots (matplotlib, Agg): nDCG@10 vs r per size, and quality vs online latency (Pareto), per benchmark."""

from __future__ import annotations

import logging
import math
import os
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

from kalm_eval.report.results import MAIN_MEASURE, ResultRecord
from kalm_eval.report.tables import label_conditions, reranked_condition

log = logging.getLogger(__name__)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Atomic: render to a temp file in the target folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
        _plt().close(fig)
    return path


def _reranked(records: list[ResultRecord], bench: str) -> list[ResultRecord]:
    return [r for r in records if r.benchmark == bench and r.reranked and r.stage("reranked")
            and r.value("reranked") is not None and r.ratio is not None]


def _labels(recs: list[ResultRecord]) -> dict[Path, str]:
    conds = {r.path: reranked_condition(r) for r in recs}
    labels = label_conditions(list(set(conds.values())))
    fs_labels = {c.first_stage for c in conds.values()}
    out = {}
    for p, c in conds.items():
        lab = labels[c]
        if len(fs_labels) > 1:
            lab += f" ({c.first_stage})"
        if len({cc.depth for cc in conds.values()}) > 1:
            lab += f" top-{c.depth}"
        out[p] = lab
    return out


def _label_key(label: str) -> tuple:
    order = ("tiny", "nano", "small", "large")
    head = label.split(" ", 1)[0].lower()
    return (order.index(head) if head in order else len(order), label)


def plot_ndcg_vs_r(records: list[ResultRecord], bench: str, out_dir: Path, measure: str = MAIN_MEASURE) -> Path | None:
    recs = _reranked(records, bench)
    if not recs:
        return None
    labels = _labels(recs)
    datasets = sorted({r.dataset for r in recs})
    series: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))  # dataset -> label -> r -> v
    first_stage: dict[str, dict[str, float]] = defaultdict(dict)  # dataset -> fs label -> value
    for r in sorted(recs, key=lambda r: r.finished_at):
        series[r.dataset][labels[r.path]][r.ratio] = r.value("reranked", measure)
        fs = r.value("first_stage", measure)
        if fs is not None:
            first_stage[r.dataset][r.first_stage_label] = fs
    panels = list(datasets)
    if len(datasets) > 1:  # mean over datasets where a (label, r) exists everywhere
        mean: dict[str, dict[int, float]] = defaultdict(dict)
        for lab in {lab for ds in datasets for lab in series[ds]}:
            ratios = set.intersection(*(set(series[ds].get(lab, {})) for ds in datasets))
            for ratio in ratios:
                mean[lab][ratio] = statistics.fmean(series[ds][lab][ratio] for ds in datasets)
        if mean:
            series[f"mean of {len(datasets)}"] = mean
            fs_common = set.intersection(*(set(first_stage[ds]) for ds in datasets))
            first_stage[f"mean of {len(datasets)}"] = {f: statistics.fmean(first_stage[ds][f] for ds in datasets) for f in fs_common}
            panels.append(f"mean of {len(datasets)}")

    plt = _plt()
    n = len(panels)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 3.8 * rows), squeeze=False)
    all_ratios = sorted({r.ratio for r in recs})
    for ax, panel in zip(axes.flat, panels):
        for lab in sorted(series[panel], key=_label_key):
            pts = sorted(series[panel][lab].items())
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", label=lab)
        for fs_label, v in sorted(first_stage.get(panel, {}).items()):
            ax.axhline(100 * v, linestyle="--", linewidth=1, color="grey")
            ax.annotate(f"first stage: {fs_label}", (all_ratios[0], 100 * v), fontsize=7, color="grey",
                        xytext=(2, 2), textcoords="offset points")
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_ratios)
        ax.set_xticklabels([str(x) for x in all_ratios])
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("compression ratio r")
        ax.set_ylabel(f"{measure} ×100")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"{bench.upper()}: {measure} vs compression ratio r, per model size")
    return _save(fig, out_dir / f"ndcg_vs_r.{bench}.png")


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated by another (lower latency x and higher quality y is better), by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_pareto(records: list[ResultRecord], bench: str, out_dir: Path, measure: str = MAIN_MEASURE) -> tuple[Path | None, str]:
    """Quality vs warm online latency (ms/pair p50). Points are (size, r), averaged over the datasets that every
    plotted point has; records without a warm latency phase are left out. Returns (path or None, note)."""
    recs = [r for r in _reranked(records, bench) if r.latency.ms_per_pair_p50]
    if not recs:
        return None, f"{bench}: no warm latency (timings.latency.ms_per_pair_p50) recorded; Pareto plot skipped"
    labels = _labels(recs)
    cells: dict[tuple[str, int], dict[str, ResultRecord]] = defaultdict(dict)
    for r in sorted(recs, key=lambda r: r.finished_at):
        cells[(labels[r.path], r.ratio)][r.dataset] = r
    common = set.intersection(*(set(v) for v in cells.values()))
    if not common:
        # no dataset shared by all points: plot the dataset with the most points
        counts = defaultdict(int)
        for v in cells.values():
            for ds in v:
                counts[ds] += 1
        best = max(sorted(counts), key=lambda ds: counts[ds])
        cells = {k: {best: v[best]} for k, v in cells.items() if best in v}
        common = {best}
    keys = sorted(cells, key=lambda k: (k[0], k[1]))
    xs = [statistics.fmean(cells[k][ds].latency.ms_per_pair_p50 for ds in common) for k in keys]
    ys = [100 * statistics.fmean(cells[k][ds].value("reranked", measure) for ds in common) for k in keys]
    devices = sorted({f"{cells[k][ds].latency.device or '?'} {cells[k][ds].latency.dtype or '?'}" for k in keys for ds in common})

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    hardware = {k: " / ".join(sorted({f"{cells[k][ds].latency.device or '?'} {cells[k][ds].latency.dtype or '?'}" for ds in common}))
                for k in keys}
    markers = {hw: m for hw, m in zip(sorted(set(hardware.values())), "osD^vP*X")}
    by_model = defaultdict(list)
    for i, k in enumerate(keys):
        by_model[(k[0], hardware[k])].append(i)
    for (lab, hw), idx in sorted(by_model.items(), key=lambda kv: _label_key(kv[0][0]) + (kv[0][1],)):
        name = lab if len(markers) == 1 else f"{lab} ({hw})"
        ax.scatter([xs[i] for i in idx], [ys[i] for i in idx], label=name, marker=markers[hw], zorder=3)
        for i in idx:
            ax.annotate(f"r={keys[i][1]}", (xs[i], ys[i]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = pareto_front(list(zip(xs, ys)))
    ax.step([xs[i] for i in front], [ys[i] for i in front], where="post", color="black", linewidth=1, alpha=0.6,
            label="Pareto front", zorder=2)
    ax.set_xscale("log")
    ax.set_xlabel("online latency, ms per (query, passage) pair, p50 (warm)")
    ax.set_ylabel(f"{measure} ×100")
    ds_note = ", ".join(sorted(common)) if len(common) <= 4 else f"{len(common)} datasets"
    ax.set_title(f"{bench.upper()}: quality vs online latency ({ds_note}; {'; '.join(devices)})", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    skipped = len(_reranked(records, bench)) - len(recs)
    note = f"{bench}: Pareto over {len(keys)} points on {ds_note}" + (f"; {skipped} record(s) without warm latency left out" if skipped else "")
    return _save(fig, out_dir / f"pareto.{bench}.png"), note
