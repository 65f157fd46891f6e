"""Benchmark suites: run every dataset of a suite (and every LMEB subset) in sequence, then write one summary.

A suite config (conf/benchmark/{beir,miracl,lmeb,lmeb_dialogue}.yaml) holds its datasets under `datasets:`; an
LMEB dataset config (conf/benchmark/lmeb/<Dataset>.yaml) with `subset: null` is a suite of its own subsets. Each
evaluated unit runs through `kalm_eval.pipeline.run` with the job's retriever / reranker / model / compression, so
its result record lands in the usual signature-named directory and is shared with any other suite or single run
of the same configuration (e.g. lmeb and lmeb_dialogue).

Outputs, in the suite directory (`output_dir`, default results/runs/suite__<name>/<label>-<signature>):
- units.json    ledger: unit -> config key + result directories (lets a rerun skip finished units);
- summary.json  per unit, per dataset (mean over its subsets), per memory type (LMEB: mean over its datasets),
                and averages (mean over datasets; LMEB also mean over types), for the first stage and for each
                reranked ratio. A unit without a result is listed as missing (never scored 0); averages over
                incomplete sets say so (`complete: false`, `n` of `of`);
- summary.md    the same as a table (×100, 2 decimals as in the paper)."""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from kalm_eval import __version__
from kalm_eval.config import RunConfig
from kalm_eval.errors import DataError, ResultError
from kalm_eval.result import ResultRecord, default_directory
from kalm_eval.storage import atomic_open, read_json, signature_of, write_json_atomic

log = logging.getLogger(__name__)


@dataclass
class Unit:
    """One evaluated dataset of a suite: its own job config (built on first use) and the dataset it averages into."""

    name: str  # e.g. "beir/scifact", "miracl/sw", "lmeb/LoCoMo/multi_hop"
    dataset: str  # e.g. "beir/scifact", "lmeb/LoCoMo"
    memory_type: str | None  # LMEB only
    spec: dict[str, Any] = field(default_factory=dict, repr=False)  # plain job config with this unit's benchmark
    _config: DictConfig | None = field(default=None, repr=False)

    @property
    def config(self) -> DictConfig:
        """The whole job config with `benchmark` = this unit (interpolations live, resolved on access)."""
        if self._config is None:
            self._config = OmegaConf.create(self.spec)  # create() copies: units share nothing
        return self._config

    @property
    def benchmark(self) -> dict[str, Any]:
        return OmegaConf.to_container(self.config.benchmark, resolve=True)


def is_suite(benchmark: DictConfig | dict) -> bool:
    """True for a suite (`datasets:`) or an LMEB dataset whose subsets are not narrowed to one."""
    return "datasets" in benchmark or ("subsets" in benchmark and benchmark.get("subset") is None)


def expand_units(cfg: DictConfig) -> list[Unit]:
    """The units of the job's benchmark (one unit for a plain dataset config), each with a complete job config.

    Interpolations stay live: a unit's `${benchmark.instruction}` (retriever, reranker) resolves to that unit's
    instruction. A suite-level `instruction` (not null) overrides every unit's."""
    root = OmegaConf.to_container(cfg, resolve=False)
    bench = root["benchmark"]
    rest = {k: v for k, v in root.items() if k != "benchmark"}
    entries = list(bench["datasets"].values()) if "datasets" in bench else [bench]
    override = OmegaConf.select(cfg, "benchmark.instruction") if "datasets" in bench else None
    keys = list(bench["datasets"]) if "datasets" in bench else [None]
    units: list[Unit] = []
    for key, node in zip(keys, entries):
        where = "benchmark" if key is None else f"benchmark.datasets.{key}"
        dataset = str(OmegaConf.select(cfg, f"{where}.name"))  # resolved once per dataset, not per unit
        memory_type = OmegaConf.select(cfg, f"{where}.memory_type", default=None)
        subsets = list(node.get("subsets") or {})
        chosen = [node["subset"]] if node.get("subset") is not None else subsets or [None]
        for subset in chosen:
            unit_bench = copy.deepcopy(node)
            if subset is not None:
                unit_bench["subset"] = subset
                # a unit carries only its own subset's entry (smaller records, signatures independent of siblings)
                unit_bench["subsets"] = {subset: node["subsets"][subset]}
            if override is not None:
                unit_bench["instruction"] = override
            units.append(Unit(name=f"{dataset}/{subset}" if subset is not None else dataset, dataset=dataset,
                              memory_type=memory_type, spec={**rest, "benchmark": unit_bench}))
    names = [u.name for u in units]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"suite {bench.get('name')!r} lists unit(s) twice: {sorted(duplicates)}")
    return units


def run_suite(cfg: DictConfig, *, runner: Callable | None = None,
              make_run_config: Callable[[DictConfig], Any] | None = None) -> Path:
    """Run every unit of `cfg.benchmark` in sequence and write units.json, summary.json and summary.md.

    `cfg` is the composed job config (as given to the Hydra app, unresolved). Units already done with the same
    config key and existing records are skipped (force=true recomputes). A unit whose data is missing or invalid
    (DataError) is logged, recorded under `failures` and listed as missing; other errors propagate.
    `runner` (default kalm_eval.pipeline.run) and `make_run_config` (default RunConfig.from_hydra) are injectable
    for tests. Every unit's config is validated before the first unit runs. Returns the suite directory."""
    if runner is None:
        from kalm_eval.pipeline import run as runner
    make_run_config = make_run_config or RunConfig.from_hydra

    units = expand_units(cfg)
    # Validate every unit up front: a bad knob must not surface after hours of earlier units.
    run_configs = [dataclasses.replace(make_run_config(unit.config), output_dir=None) for unit in units]
    suite = str(cfg.benchmark.get("name"))
    _warn_if_not_paper_retriever(cfg)
    out = suite_dir(cfg, units)
    ledger_path = out / "units.json"
    ledger: dict[str, Any] = read_json(ledger_path) if ledger_path.exists() else {}
    force = bool(cfg.get("force", False))
    results: dict[str, list[Path]] = {}
    failures: dict[str, str] = {}
    for i, (unit, run_cfg) in enumerate(zip(units, run_configs), start=1):
        key = signature_of(run_cfg.key())  # every unit gets its own signature-named record directory
        done = ledger.get(unit.name)
        finished = done and done.get("key") == key and all((Path(p) / "metrics.json").exists() for p in done["records"])
        if finished and not force:
            log.info("[%d/%d] %s: already done (same config), skipping", i, len(units), unit.name)
            results[unit.name] = [Path(p) for p in done["records"]]
            continue
        log.info("[%d/%d] %s", i, len(units), unit.name)
        try:
            records = [Path(p) for p in runner(run_cfg)]
        except DataError as err:
            log.error("%s: %s", unit.name, err)
            failures[unit.name] = str(err)
            ledger.pop(unit.name, None)
            continue
        results[unit.name] = records
        ledger[unit.name] = {"key": key, "records": [str(p) for p in records]}
        write_json_atomic(ledger_path, ledger)  # after every unit, so an interrupted suite resumes
    write_json_atomic(ledger_path, ledger)
    summary = summarize(suite, units, results, measure=str(cfg.benchmark.get("measure", "nDCG@10")),
                        failures=failures, config=_config_identity(cfg))
    write_summary(out, summary)
    log.info("suite %s: %d/%d units done, summary in %s", suite, len(results), len(units), out / "summary.md")
    return out


def suite_dir(cfg: DictConfig, units: list[Unit]) -> Path:
    if cfg.get("output_dir"):
        return Path(cfg.output_dir)
    identity = {"suite": str(cfg.benchmark.get("name")), "units": [u.name for u in units], **_config_identity(cfg)}
    reranker = str(cfg.reranker.get("name", "none"))
    label = f"{cfg.retriever.name}-{cfg.model.name}" if reranker != "none" else str(cfg.retriever.name)
    return default_directory(cfg.results_dir, "suite__" + str(cfg.benchmark.get("name")), label,
                             signature_of(identity))


def _config_identity(cfg: DictConfig) -> dict[str, Any]:
    def plain(node) -> Any:
        return OmegaConf.to_container(node, resolve=False) if isinstance(node, (DictConfig, ListConfig)) else node

    ident = {"retriever": plain(cfg.retriever), "reranker": plain(cfg.reranker)}
    if str(cfg.reranker.get("name", "none")) != "none":
        ident["model"] = plain(cfg.model)
    return ident


def _warn_if_not_paper_retriever(cfg: DictConfig) -> None:
    wanted = cfg.benchmark.get("paper_retriever")
    try:
        from hydra.core.hydra_config import HydraConfig

        chosen = HydraConfig.get().runtime.choices.get("retriever")
    except (ImportError, ValueError):  # not inside a Hydra app (tests, API use)
        return
    if wanted and chosen != wanted:
        log.warning("suite %s: retriever=%s, but the paper's first stage is retriever=%s (+experiment=paper_%s sets it)",
                    cfg.benchmark.get("name"), chosen, wanted, cfg.benchmark.get("name"))


# ---------------------------------------------------------------------------------------------------------------
# Summary


def summarize(suite: str, units: list[Unit], results: dict[str, list[Path]], *, measure: str = "nDCG@10",
              failures: dict[str, str] | None = None, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Collect each unit's metrics.json and aggregate: dataset = mean over its units, type = mean over its
    datasets, overall = mean over datasets (and over types when units carry a memory type)."""
    unit_rows: dict[str, dict[str, Any]] = {}
    columns: list[str] = []
    for unit in units:
        scores: dict[str, float] = {}
        for record_dir in results.get(unit.name, []):
            for column, value in _record_scores(Path(record_dir) / "metrics.json", measure).items():
                scores.setdefault(column, value)
        for column in scores:
            if column not in columns:
                columns.append(column)
        unit_rows[unit.name] = {"dataset": unit.dataset, "memory_type": unit.memory_type, "scores": scores,
                                "records": [str(p) for p in results.get(unit.name, [])]}
    columns.sort(key=lambda c: (c != "first_stage", _ratio_of(c)))

    by_dataset: dict[str, list[str]] = {}
    for unit in units:
        by_dataset.setdefault(unit.dataset, []).append(unit.name)
    datasets: dict[str, dict[str, Any]] = {}
    for name, members in by_dataset.items():
        memory_type = unit_rows[members[0]]["memory_type"]
        entry: dict[str, Any] = {"memory_type": memory_type, "units": len(members), "scores": {}, "missing_units": {}}
        for column in columns:
            values = [unit_rows[m]["scores"].get(column) for m in members]
            missing = [m for m, v in zip(members, values) if v is None]
            entry["scores"][column] = None if missing else sum(values) / len(values)
            if missing:
                entry["missing_units"][column] = missing
        datasets[name] = entry

    summary: dict[str, Any] = {
        "suite": suite,
        "measure": measure,
        "harness_version": __version__,
        "aggregation": "dataset = mean over its subsets/units; memory type = mean over its datasets; "
                       "mean_over_datasets; mean_over_types (LMEB). Missing results are listed, never counted as 0.",
        "columns": columns,
        "config": config or {},
        "units": unit_rows,
        "datasets": datasets,
        "averages": {"mean_over_datasets": {c: _mean([d["scores"].get(c) for d in datasets.values()]) for c in columns}},
        "missing_units": [u.name for u in units if not unit_rows[u.name]["scores"]],
        "failures": failures or {},
    }
    types = list(dict.fromkeys(d["memory_type"] for d in datasets.values() if d["memory_type"]))
    if types:
        summary["types"] = {}
        for memory_type in types:
            members = [d for d in datasets.values() if d["memory_type"] == memory_type]
            summary["types"][memory_type] = {
                "datasets": [n for n, d in datasets.items() if d["memory_type"] == memory_type],
                "scores": {c: _mean([d["scores"].get(c) for d in members]) for c in columns},
            }
        summary["averages"]["mean_over_types"] = {
            c: _mean([t["scores"][c]["mean"] if t["scores"][c]["complete"] else None for t in summary["types"].values()])
            for c in columns}
    summary["complete"] = not summary["missing_units"] and all(
        d["scores"].get(c) is not None for d in datasets.values() for c in columns)
    return summary


def _record_scores(path: Path, measure: str) -> dict[str, float]:
    """A result record's measure per column: "first_stage", and "reranked r=<compression>" when it was reranked."""
    try:
        record = ResultRecord.load(path.parent)
    except ResultError:
        return {}
    out = {}
    if record.value("first_stage", measure) is not None:
        out["first_stage"] = record.value("first_stage", measure)
    if record.value("reranked", measure) is not None:
        out[f"reranked r={record.compression}"] = record.value("reranked", measure)
    return out


def _ratio_of(column: str) -> int:
    tail = column.rsplit("=", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def _mean(values: list[float | None]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    return {"mean": sum(present) / len(present) if present else None, "n": len(present), "of": len(values),
            "complete": len(present) == len(values) and bool(values)}


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    write_json_atomic(out / "summary.json", summary)
    with atomic_open(out / "summary.md") as fh:
        fh.write(render_markdown(summary))


def render_markdown(summary: dict[str, Any]) -> str:
    """Per dataset, per type (LMEB) and averages, ×100 with 2 decimals; `—` = missing, `*` = over a partial set."""
    columns = summary["columns"]
    lines = [f"# {summary['suite']}: {summary['measure']} (×100)", ""]
    if not columns:
        lines += ["No results.", ""]
    header = "| dataset | " + " | ".join(columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    lines += [header, rule]
    for name, entry in summary["datasets"].items():
        label = name + (f" ({entry['units']} subsets)" if entry["units"] > 1 else "")
        lines.append(f"| {label} | " + " | ".join(_cell(entry["scores"].get(c)) for c in columns) + " |")
    if "types" in summary:
        lines += ["", "| memory type | " + " | ".join(columns) + " |", rule]
        for memory_type, entry in summary["types"].items():
            lines.append(f"| {memory_type} ({len(entry['datasets'])}) | "
                         + " | ".join(_avg_cell(entry["scores"][c]) for c in columns) + " |")
    lines += ["", "| average | " + " | ".join(columns) + " |", rule]
    for label, values in summary["averages"].items():
        lines.append(f"| {label.replace('_', ' ')} | " + " | ".join(_avg_cell(values[c]) for c in columns) + " |")
    lines.append("")
    if summary["missing_units"]:
        lines.append(f"Missing ({len(summary['missing_units'])}): " + ", ".join(summary["missing_units"]))
    if any(v["mean"] is not None and not v["complete"] for avg in summary["averages"].values() for v in avg.values()):
        lines.append("`*` = mean over the available datasets only (n/of); not comparable with the paper.")
    multi = [name for name, entry in summary["units"].items() if summary["datasets"][entry["dataset"]]["units"] > 1]
    if multi:  # subset detail (LMEB)
        lines += ["", "| subset | " + " | ".join(columns) + " |", rule]
        for name in multi:
            scores = summary["units"][name]["scores"]
            lines.append(f"| {name} | " + " | ".join(_cell(scores.get(c)) for c in columns) + " |")
    lines.append("")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def _avg_cell(avg: dict[str, Any]) -> str:
    if avg["mean"] is None:
        return "—"
    return f"{100 * avg['mean']:.2f}" + ("" if avg["complete"] else f"* ({avg['n']}/{avg['of']})")
