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
- summary.md    the same as a table (×100, 2 decimals as in the paper).

A suite whose units failed (missing or invalid data) still runs the others and writes its summary; then
`check_complete` raises SuiteIncomplete (the CLI: one line, exit status 3)."""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from kalm_eval import failpoints
from kalm_eval.checkpoints import check_available
from kalm_eval.config import RunConfig
from kalm_eval.space import check_space, estimate
from kalm_eval.errors import DataError, SuiteIncomplete
from kalm_eval.metrics import MAIN_MEASURE
from kalm_eval.report.summary import summarize_suite
from kalm_eval.result import RECORD_FILE, ResultRecord, default_directory
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
    # ... and every checkpoint they load: cached or downloadable, before the first unit spends anything.
    check_available(c for run_cfg in run_configs for c in run_cfg.hub_checkpoints())
    needs = [n for n in map(estimate, run_configs) if n is not None]
    if needs:
        check_space(sum(needs[1:], needs[0]))  # the whole suite against the free space, before the first unit
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
        finished = done and done.get("key") == key and done.get("records") and \
            all((Path(p) / "metrics.json").exists() for p in done["records"])
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
        if not records:  # a job-array worker that left the merge to the worker completing the last unit
            continue  # (never ledgered as done: a resume must run it again, and finds what is there)
        ledger[unit.name] = {"key": key, "records": [str(p) for p in records]}
        failpoints.reach("suite.ledger")
        write_json_atomic(ledger_path, ledger)  # after every unit, so an interrupted suite resumes
    write_json_atomic(ledger_path, ledger)
    records = [ResultRecord.load(path) for paths in results.values() for path in paths
               if (Path(path) / RECORD_FILE).exists()]
    summary, markdown = summarize_suite(records, suite=suite, units=units, failures=failures,
                                        measure=str(cfg.benchmark.get("measure", MAIN_MEASURE)),
                                        config=_config_identity(cfg))
    write_json_atomic(out / "summary.json", summary)
    with atomic_open(out / "summary.md") as fh:
        fh.write(markdown)
    log.info("suite %s: %d/%d units done, summary in %s", suite, len(results), len(units), out / "summary.md")
    return out


def check_complete(out: Path) -> None:
    """SuiteIncomplete when the suite's summary lists failed units (units another worker of a job array has yet to
    finish are not failures)."""
    summary = read_json(out / "summary.json")
    failures = summary.get("failures") or {}
    if failures:
        first, reason = next(iter(failures.items()))
        reason = " ".join(str(reason).split())  # one line
        total = len(summary.get("units") or {})
        others = "the others ran" if len(failures) < total else "none ran"
        raise SuiteIncomplete(f"suite {summary.get('suite')}: {len(failures)} of {total} unit(s) failed (first: "
                              f"{first}: {reason}); {others}, summary in {out / 'summary.md'}")


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
