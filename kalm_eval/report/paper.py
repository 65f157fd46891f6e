"""Published numbers as data: load and validate the `kalm_eval.paper` package (results/paper/<version>/*.yaml).

Three kinds of file (see results/paper/README.md):
- `table`: one benchmark's results table (rows = systems, cells = dataset columns and/or `average`);
- `cost`: the analytic "relative online cost" column (display only, never compared with timings);
- `figures`: loose published figures (ROC-AUC end points of the compression analysis).

Values are stored as printed (`unit: points` = metric x 100); `PaperCell.fraction` converts. Every cell carries its
tolerance (`tol`, in the unit of the file; `null` = display only). Versions live in separate directories and a
`Paper` holds exactly one version, so v1 and v3 numbers can never be mixed in one table. Every KaLM row carries the
checkpoint generation it was measured on (`generation:` of the file, or of the row: r1 | r2; see
kalm_eval.checkpoints), and `check_generation` refuses to compare a result with a row of another generation. The files are read through
importlib.resources, so an installed wheel finds them as well as a source checkout."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from kalm_eval.checkpoints import GENERATIONS
from kalm_eval.catalogue import match_entry
from kalm_eval.errors import GenerationMismatch
from kalm_eval.report.labels import HUB

AVERAGE = "average"
KALM_ROLES = ("kalm", "ablation", "cascade")  # rows measured on a KaLM checkpoint: they carry its generation


def paper_root(paper_dir: str | Path | None = None) -> Traversable:
    """The published-numbers root: a given directory, else the shipped `kalm_eval.paper` package."""
    return Path(paper_dir) if paper_dir else files("kalm_eval.paper")


class PaperSpecError(ValueError):
    """A malformed published-numbers file."""


@dataclass(frozen=True)
class PaperCell:
    value: float  # as printed
    scale: float  # printed value / scale = fraction
    precision: int
    tol: float | None  # in printed units; None = display only
    okish_factor: float
    note: str | None = None

    @property
    def fraction(self) -> float:
        return self.value / self.scale


@dataclass(frozen=True)
class PaperColumn:
    id: str  # our dataset name, e.g. beir/scifact
    name: str  # as the paper (or MTEB) writes it
    aliases: tuple[str, ...] = ()
    subsets: int | None = None  # a dataset scored as the mean over this many subsets (LMEB)

    def keys(self) -> set[str]:
        last = self.id.split("/", 1)[-1]
        return {norm(k) for k in (self.id, last, self.name, *self.aliases)}


@dataclass(frozen=True)
class PaperRow:
    model: str
    role: str  # kalm | baseline | first_stage | ablation | cascade
    cells: dict[str, PaperCell]
    ratio: int | None = None  # None = the table's ratio (which may itself be unknown)
    size: str | None = None
    variant: str | None = None
    match: dict[str, Any] = field(default_factory=dict)
    note: str | None = None
    generation: str | None = None  # checkpoint generation a KaLM row was measured on; None for other systems

    @property
    def label(self) -> str:
        return f"{self.model} ({self.variant})" if self.variant else self.model


@dataclass(frozen=True)
class PaperTable:
    file: str  # "<version>/<name>.yaml"
    version: str
    paper_id: str
    source: str
    benchmark: str
    metric: str
    unit: str
    precision: int
    ratio: int | None
    first_stage: str | None
    columns: tuple[PaperColumn, ...]
    rows: tuple[PaperRow, ...]
    notes: tuple[str, ...] = ()

    @property
    def citation(self) -> str:
        return f"{self.paper_id}{self.version}, {self.file.rsplit('/', 1)[-1]}"

    def column_for(self, dataset: str) -> PaperColumn | None:
        """The suite column of one of our dataset names (`beir/scifact`), by id, name or alias."""
        bench, _, rest = dataset.partition("/")
        if norm(bench) != norm(self.benchmark):
            return None
        key = norm(dataset)
        key_last = norm(rest or dataset)
        for col in self.columns:
            keys = col.keys()
            if key in keys or key_last in keys:
                return col
        return None

    def rows_for(self, model: str, ratio: int | None, *, include_variants: bool = False) -> list[tuple[PaperRow, int | None]]:
        """Rows of `model` at our `ratio`: (row, the paper's ratio for it, None = unknown). A row with a known ratio
        matches only that ratio; a row with an unknown ratio matches any ratio (the report flags it)."""
        out = []
        for row in self.rows:
            if row.model != model or (row.variant and not include_variants):
                continue
            paper_ratio = row.ratio if row.ratio is not None else self.ratio
            if paper_ratio is None or ratio is None or paper_ratio == ratio:
                out.append((row, paper_ratio))
        # an exact-ratio row beats an unknown-ratio one
        out.sort(key=lambda pair: pair[1] is None)
        return out

    def model_names(self) -> list[str]:
        return list(dict.fromkeys(r.model for r in self.rows))


@dataclass(frozen=True)
class CostTable:
    file: str
    version: str
    source: str
    unit: str
    ratio: int | None
    values: dict[str, PaperCell]  # model -> relative online cost
    claims: tuple[dict, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Figure:
    metric: str
    dataset: str
    model: str
    ratio: int | None
    cell: PaperCell


@dataclass(frozen=True)
class FigureSet:
    file: str
    version: str
    source: str
    items: tuple[Figure, ...]
    claims: tuple[str, ...] = ()


@dataclass
class Paper:
    version: str
    directory: Traversable
    tables: dict[str, PaperTable] = field(default_factory=dict)  # benchmark -> table
    costs: list[CostTable] = field(default_factory=list)
    figures: list[FigureSet] = field(default_factory=list)

    def table(self, benchmark: str) -> PaperTable | None:
        return self.tables.get(norm(benchmark))

    def relative_cost(self, model: str) -> tuple[PaperCell | None, CostTable | None]:
        for cost in self.costs:
            if model in cost.values:
                return cost.values[model], cost
        return None, None

    def match_model(self, checkpoint: str | None, revision: str | None = None, weights: str = HUB) -> str | None:
        """Paper row name for one of our reranker models, or None ("ours only"). Matches the hub id of a row's
        `match` entry and, when both sides state one, the same revision. Local weights (a new checkpoint), random
        test models and other repos (e.g. the later -R2 releases) never match."""
        if weights != HUB or not checkpoint:
            return None
        for row in self._matchable_rows():
            if row.match.get("hf_id") == checkpoint:
                wanted = row.match.get("revision")
                return row.model if not (wanted and revision and wanted != revision) else None
        return None

    def match_first_stage(self, model: str | None) -> str | None:
        """Paper row name for a first-stage retriever model (e.g. KaLM-Embedding-V2.5 when its model id matches)."""
        if not model:
            return None
        for row in self._matchable_rows():
            wanted = row.match.get("first_stage_model")
            if wanted and str(model).rstrip("/").endswith(wanted):
                return row.model
        return None

    def match_shape(self, shape: str | None) -> str | None:
        """Paper row of a model shape name (nano / small / large: a row's `match.name`), for cost benchmarks."""
        for row in self._matchable_rows():
            if shape and str(row.match.get("name", "")).lower() == shape.lower():
                return row.model
        return None

    def generation_of(self, model: str | None) -> str | None:
        """The checkpoint generation of a paper row (None: not a KaLM row, or not stated)."""
        found = {row.generation for table in self.tables.values() for row in table.rows
                 if row.model == model and row.generation}
        return found.pop() if len(found) == 1 else None

    def size_of(self, model: str | None) -> str | None:
        """The printed parameter count of a paper row (e.g. 0.27B)."""
        sizes = [row.size for table in self.tables.values() for row in table.rows if row.model == model and row.size]
        return sizes[0] if sizes else None

    def _matchable_rows(self):
        for table in self.tables.values():
            yield from (row for row in table.rows if row.match and not row.variant)


def norm(text: Any) -> str:
    return re.sub(r"[^a-z0-9]", "", str(text).lower())


def available_versions(paper_dir: str | Path | None = None) -> list[str]:
    root = paper_root(paper_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(f.name.endswith(".yaml") for f in p.iterdir()))


def load_paper(version: str = "v1", paper_dir: str | Path | None = None) -> Paper:
    root = paper_root(paper_dir)
    directory = root / version
    if not directory.is_dir():
        raise PaperSpecError(f"{directory}: no published numbers for paper version {version!r} "
                             f"(available: {available_versions(paper_dir) or 'none'})")
    paper = Paper(version=version, directory=directory)
    for item in sorted((p for p in directory.iterdir() if p.name.endswith(".yaml")), key=lambda p: p.name):
        _add(paper, f"{version}/{item.name}", _read(item))
    return paper


def _add(paper: Paper, where: str, spec: dict) -> None:
    _check_version(where, spec, paper.version)
    kind = spec.get("kind")
    if kind == "table":
        table = _table(where, spec)
        key = norm(table.benchmark)
        if key in paper.tables:
            raise PaperSpecError(f"{where}: second table for benchmark {table.benchmark!r} in {paper.version}")
        paper.tables[key] = table
    elif kind == "cost":
        paper.costs.append(_cost(where, spec))
    elif kind == "figures":
        paper.figures.append(_figures(where, spec))
    else:
        raise PaperSpecError(f"{where}: unknown kind {kind!r} (table | cost | figures)")


def _read(path: Traversable) -> dict:
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise PaperSpecError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(spec, dict):
        raise PaperSpecError(f"{path}: expected a mapping at top level")
    return spec


def _check_version(path: str, spec: dict, version: str) -> None:
    paper = spec.get("paper") or {}
    if paper.get("version") != version:
        raise PaperSpecError(f"{path}: paper.version is {paper.get('version')!r} but the file sits in {version}/")
    if not spec.get("source"):
        raise PaperSpecError(f"{path}: every published number needs a source")


def _scale(unit: str, path: str) -> float:
    scales = {"points": 100.0, "fraction": 1.0, "x": 1.0}
    if unit not in scales:
        raise PaperSpecError(f"{path}: unit must be one of {sorted(scales)}, got {unit!r}")
    return scales[unit]


def _cell(raw: Any, *, where: str, scale: float, precision: int, okish: float) -> PaperCell:
    if not isinstance(raw, dict) or "value" not in raw or "tol" not in raw:
        raise PaperSpecError(f"{where}: a cell is {{value: <as printed>, tol: <tolerance or null>}}, got {raw!r}")
    value, tol = raw["value"], raw["tol"]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise PaperSpecError(f"{where}: value must be a number, got {value!r}")
    if tol is not None and (not isinstance(tol, (int, float)) or tol < 0):
        raise PaperSpecError(f"{where}: tol must be a non-negative number or null, got {tol!r}")
    return PaperCell(value=float(value), scale=scale, precision=int(raw.get("precision", precision)),
                     tol=None if tol is None else float(tol), okish_factor=float(raw.get("okish_factor", okish)),
                     note=raw.get("note"))


def _table(path: str, spec: dict) -> PaperTable:
    for key in ("benchmark", "metric", "unit", "precision", "columns", "rows"):
        if key not in spec:
            raise PaperSpecError(f"{path}: missing {key!r}")
    scale = _scale(spec["unit"], path)
    tolerance = spec.get("tolerance") or {}
    okish = float(tolerance.get("okish_factor", 1.5))
    columns = tuple(PaperColumn(id=c["id"], name=c.get("name", c["id"]), aliases=tuple(c.get("aliases", ())),
                                subsets=None if c.get("subsets") is None else int(c["subsets"])) for c in spec["columns"])
    valid = {c.id for c in columns} | {AVERAGE}
    table_generation = _generation(spec.get("generation"), path)
    rows = []
    for i, raw in enumerate(spec["rows"]):
        where = f"{path} row {i} ({raw.get('model')})"
        if "model" not in raw or "cells" not in raw:
            raise PaperSpecError(f"{where}: a row needs model and cells")
        cells = {}
        for col, cell in raw["cells"].items():
            if col not in valid:
                raise PaperSpecError(f"{where}: cell {col!r} is not a column of the table (nor {AVERAGE!r})")
            cells[col] = _cell(cell, where=f"{where} [{col}]", scale=scale, precision=int(spec["precision"]), okish=okish)
        role = raw.get("role", "baseline")
        generation = _generation(raw.get("generation"), where) or (table_generation if role in KALM_ROLES else None)
        rows.append(PaperRow(model=raw["model"], role=role, cells=cells,
                             ratio=None if raw.get("ratio") is None else int(raw["ratio"]), size=raw.get("size"),
                             variant=raw.get("variant"), match=match_entry(raw.get("match") or {}), note=raw.get("note"),
                             generation=generation))
    paper = spec["paper"]
    return PaperTable(file=path, version=paper["version"], paper_id=str(paper.get("id", "")),
                      source=" ".join(str(spec["source"]).split()), benchmark=spec["benchmark"], metric=spec["metric"],
                      unit=spec["unit"], precision=int(spec["precision"]),
                      ratio=None if spec.get("ratio") is None else int(spec["ratio"]), first_stage=spec.get("first_stage"),
                      columns=columns, rows=tuple(rows), notes=tuple(spec.get("notes") or ()))


def _generation(value: Any, where: str) -> str | None:
    if value is not None and value not in GENERATIONS:
        raise PaperSpecError(f"{where}: generation must be one of {', '.join(GENERATIONS)}, got {value!r}")
    return value


def check_generation(model: str, generation: str | None, paper_row: str, row_generation: str | None) -> None:
    """Refuse to compare a result of one checkpoint generation with a published row of another (both known)."""
    if generation and row_generation and generation != row_generation:
        raise GenerationMismatch(
            f"{model} is a generation-{generation} checkpoint but paper row {paper_row!r} was measured on generation "
            f"{row_generation}: not comparable (map it to a {generation} row with paper_rows=, or leave it unmatched)")


def _cost(path: str, spec: dict) -> CostTable:
    scale = _scale(spec.get("unit", "x"), path)
    values = {}
    for i, raw in enumerate(spec.get("rows") or []):
        cell = (raw.get("cells") or {}).get("relative_online_cost")
        values[raw["model"]] = _cell(cell, where=f"{path} row {i}", scale=scale, precision=int(spec.get("precision", 1)),
                                     okish=1.5)
    return CostTable(file=path, version=spec["paper"]["version"], source=" ".join(str(spec["source"]).split()),
                     unit=spec.get("unit", "x"), ratio=spec.get("ratio"), values=values,
                     claims=tuple(spec.get("claims") or ()), notes=tuple(spec.get("notes") or ()))


def _figures(path: str, spec: dict) -> FigureSet:
    items = []
    for i, raw in enumerate(spec.get("items") or []):
        where = f"{path} item {i}"
        for key in ("metric", "dataset", "model", "value", "unit"):
            if key not in raw:
                raise PaperSpecError(f"{where}: missing {key!r}")
        cell = _cell(raw, where=where, scale=_scale(raw["unit"], path), precision=int(raw.get("precision", 3)), okish=1.5)
        items.append(Figure(metric=raw["metric"], dataset=raw["dataset"], model=raw["model"],
                            ratio=raw.get("ratio"), cell=cell))
    return FigureSet(file=path, version=spec["paper"]["version"], source=" ".join(str(spec["source"]).split()),
                     items=tuple(items), claims=tuple(spec.get("claims") or ()))


# ---- verdicts -------------------------------------------------------------------------------------------------------

OK, OKISH, FAIL = "OK", "OKish", "FAIL"


def verdict(ours_fraction: float, cell: PaperCell) -> tuple[float, str | None]:
    """pyserini-2CR-style verdict at the paper's printed precision: our value is converted to the printed unit and
    rounded to the printed decimals, Δ = ours − paper (printed units); |Δ| ≤ tol → OK, ≤ tol × okish_factor → OKish,
    else FAIL. Symmetric: beating the paper by more than the tolerance is a failure to reproduce, too.
    Returns (Δ, verdict), verdict None when the cell is display-only (tol null)."""
    ours = round(ours_fraction * cell.scale, cell.precision)
    delta = round(ours - cell.value, cell.precision)
    if cell.tol is None:
        return delta, None
    slack = 10 ** -(cell.precision + 3)  # float noise of the rounding above
    if abs(delta) <= cell.tol + slack:
        return delta, OK
    if abs(delta) <= cell.tol * cell.okish_factor + slack:
        return delta, OKISH
    return delta, FAIL
