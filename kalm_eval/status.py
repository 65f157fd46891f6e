"""`kalm-eval-status <same overrides as kalm-eval>`: what a run (or every unit of a suite) has done, from the files.

For each evaluated unit: the first-stage run (cached or not), the rerank units (done / in flight / interrupted /
missing: unit files and their in-flight markers, checked against live processes on this host) and the result
records (complete = the record, its signature and every file it lists agree). Nothing is loaded or computed: the
run's status file (kalm_eval/run_status.py) says where to look; a unit that never started has none."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from kalm_eval.config import CONFIG_PATH, RunConfig
from kalm_eval.errors import KalmEvalError, exit_with
from kalm_eval.rerank.engine import UnitDirectory
from kalm_eval.result import completed
from kalm_eval.run_status import read_status, status_path
from kalm_eval.suite import expand_units

log = logging.getLogger("kalm_eval")


@dataclass
class UnitStatus:
    name: str
    state: str  # done | in progress | interrupted | partial | not started
    first_stage: str
    units: dict[str, int] | None
    records: tuple[int, int]

    def row(self) -> list[str]:
        units = "—" if self.units is None else (
            f"{self.units['done']}/{self.units['units']} done, {self.units['in_flight']} in flight, "
            f"{self.units['interrupted']} interrupted, {self.units['missing']} missing")
        return [self.name, self.state, self.first_stage, units, f"{self.records[0]}/{self.records[1]}"]


def unit_status(name: str, run_cfg: RunConfig) -> UnitStatus:
    status = read_status(status_path(run_cfg.cache_dir, run_cfg.key()))
    if status is None:
        return UnitStatus(name, "not started", "—", None, (0, 0))
    first = status.get("first_stage") or {}
    first_state = "done" if first.get("path") and Path(first["path"]).exists() else "missing"
    units = None
    if status.get("rerank"):
        units = UnitDirectory(Path(status["rerank"]["units_dir"])).status(int(status["rerank"]["units"]))
    records = status.get("records") or []
    complete = sum(1 for r in records if completed(Path(r["path"]), r["signature"]) is not None)
    return UnitStatus(name, _state(first_state, units, complete, len(records)), first_state, units,
                      (complete, len(records)))


def _state(first_stage: str, units: dict[str, int] | None, complete: int, planned: int) -> str:
    if planned and complete == planned:
        return "done"
    if units and units["in_flight"]:
        return "in progress"
    if units and units["interrupted"]:
        return "interrupted"
    if first_stage == "done" or (units and units["done"]):
        return "partial"
    return "not started"


def collect(cfg: DictConfig) -> list[UnitStatus]:
    return [unit_status(unit.name, RunConfig.from_hydra(unit.config, probe_paths=False)) for unit in expand_units(cfg)]


def render(rows: list[UnitStatus]) -> Any:
    from rich.table import Table

    table = Table(title="kalm-eval status")
    for header in ("unit", "state", "first stage", "rerank units", "records"):
        table.add_column(header)
    for row in rows:
        table.add_row(*row.row())
    return table


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
def main(cfg: DictConfig) -> None:
    from rich.console import Console

    try:
        rows = collect(cfg)
    except KalmEvalError as err:
        exit_with(err, "kalm-eval-status")
    Console(width=160).print(render(rows))
    totals = {state: sum(1 for r in rows if r.state == state) for state in dict.fromkeys(r.state for r in rows)}
    print(", ".join(f"{n} {state}" for state, n in totals.items()))


if __name__ == "__main__":
    main()
