"""Export result records in mteb's results layout (`kalm-eval-report results=<dir> export=mteb output_dir=<dir>`):

    <output_dir>/<model name, "/" -> "__">/<revision>/<Task>.json    one mteb TaskResult per (model, revision, task)
    <output_dir>/<model name, "/" -> "__">/<revision>/model_meta.json
    <output_dir>/<model name, "/" -> "__">/<revision>/kalm_eval_sources.jsonl   which record gave which score

so `mteb.TaskResult.from_disk(<Task>.json)` reads a file and `mteb.ResultCache(<dir>).load_results(...)` (with
output_dir = <dir>/results) or `mteb.load_results` (MTEB_CACHE=<dir>) read the whole tree. The files are written
by the installed mteb's own `TaskResult.to_disk`, so they are valid for it by construction.

Mapping:
- task: the installed mteb task whose dataset repo is the record's benchmark config `mteb_repo`
  (provenance.config.benchmark; e.g. mteb/scifact -> SciFact, mteb/MIRACLRetrieval -> MIRACLRetrieval,
  mteb/LoCoMo -> LoCoMo); a record without one (a local dataset) is skipped and named;
- hf_subset: "default" for a single-subset task (BEIR), else the record's subset (LMEB `lmeb/LoCoMo/multi_hop` ->
  multi_hop) or its last name part (MIRACL `miracl/sw` -> sw); languages from the task's metadata; the units of one
  task (MIRACL languages, LMEB subsets) become one file with one scores entry each;
- dataset_revision: the benchmark config's `mteb_revision` (the pinned mteb dataset revision), else the task's;
- scores.<split>: the record's main stage (reranked when present) — nDCG@k -> ndcg_at_k, R@k -> recall_at_k,
  RR@k -> mrr_at_k, P@k -> precision_at_k, AP@k -> map_at_k — with main_score = the task's main score (ndcg_at_10);
- evaluation_time: the sum of the records' timings.total_s; mteb_version: the installed mteb's (the layout's version);
- model name / revision: a reranker's hub checkpoint and revision; a local checkpoint `local/<label>` at revision
  `sha256-<first 12 hex of its weights fingerprint>`; a random test model `random/<label>` at `random`; a first
  stage alone its retriever model (or `kalm-eval/<kind>` for bm25) at its revision.
  **A KaLM result at compression ratio r is its own revision: `<revision>-r<r>`** (a cascade:
  `<revision>-cascade-100r32-20r2`). The model name stays the hub id, so mteb's registry metadata for the model
  still applies, and each ratio is a separate, loadable result set (mteb keys results by (name, revision))."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kalm_eval.records import compression_label
from kalm_eval.report import labels
from kalm_eval.result import ResultRecord
from kalm_eval.storage import atomic_open, write_json_atomic

log = logging.getLogger(__name__)

SOURCES_FILE = "kalm_eval_sources.jsonl"  # not *.json: mteb reads every *.json of a revision folder as a task result
NO_REVISION = "no_revision_available"  # mteb's own placeholder
MEASURE = re.compile(r"^(nDCG|R|RR|P|AP)(?:\(rel=\d+\))?@(\d+)$")
MTEB_PREFIX = {"nDCG": "ndcg_at", "R": "recall_at", "RR": "mrr_at", "P": "precision_at", "AP": "map_at"}


class ExportError(ValueError):
    """A record that cannot be named as an mteb result; the message says which record and why."""


@dataclass(frozen=True)
class Entry:
    """One record as one scores entry of one mteb task file."""

    model: str
    revision: str
    task: Any  # the installed mteb task (its metadata names, subsets, languages, main score)
    dataset_revision: str
    split: str
    scores: dict[str, Any]
    record: ResultRecord


@dataclass
class ExportResult:
    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def export_mteb(records: list[ResultRecord], output_dir: str | Path) -> ExportResult:
    import mteb  # imported here: it takes seconds, and only the export needs it

    tasks = {}
    for task in mteb.get_tasks():
        tasks.setdefault(task.metadata.dataset["path"], []).append(task)
    result, groups = ExportResult(), {}
    for record in records:
        try:
            entry = export_entry(record, tasks)
        except ExportError as err:
            result.skipped.append(str(err))
            log.warning("mteb export: %s", err)
            continue
        groups.setdefault((entry.model, entry.revision, entry.task.metadata.name), []).append(entry)
    for entries in groups.values():
        result.files += write_task_result(entries, Path(output_dir), mteb)
    return result


def export_entry(record: ResultRecord, tasks: dict[str, list]) -> Entry:
    task = mteb_task(record, tasks)
    subset = hf_subset(record, task)
    stage = record.main_stage
    scores = mteb_scores(record, stage)
    main = task.metadata.main_score
    if main not in scores:
        raise ExportError(f"{record.path}: stage {stage} has no {main} (the task's main score)")
    languages = task.metadata.hf_subsets_to_langscripts.get(subset) or list(task.metadata.eval_langs)
    config = benchmark_config(record)
    model, revision = model_name_and_revision(record)
    return Entry(model=model, revision=revision, task=task, record=record,
                 dataset_revision=str(config.get("mteb_revision") or task.metadata.revision),
                 split=record.split or task.metadata.eval_splits[0],
                 scores={"main_score": scores[main], **scores, "hf_subset": subset, "languages": list(languages)})


def benchmark_config(record: ResultRecord) -> dict[str, Any]:
    return (record.provenance.get("config") or {}).get("benchmark") or {}


def mteb_task(record: ResultRecord, tasks: dict[str, list]):
    repo = benchmark_config(record).get("mteb_repo")
    if not repo:
        raise ExportError(f"{record.path} ({record.dataset}): no provenance.config.benchmark.mteb_repo, so no mteb task")
    found = tasks.get(repo, [])
    if len(found) > 1:  # several tasks share a dataset repo: take the one named like our dataset
        short = record.dataset.split("/")[1].lower().replace("-", "")
        found = [t for t in found if t.metadata.name.lower().replace("-", "") == short] or found[:0]
    if len(found) != 1:
        raise ExportError(f"{record.path} ({record.dataset}): {len(found)} installed mteb tasks read {repo}")
    return found[0]


def hf_subset(record: ResultRecord, task) -> str:
    subsets = list(task.metadata.hf_subsets_to_langscripts) or ["default"]
    if subsets == ["default"]:
        return "default"
    parts = record.dataset.split("/")
    subset = "/".join(parts[2:]) if len(parts) > 2 else parts[-1]
    if subset not in subsets:
        raise ExportError(f"{record.path}: {subset!r} is not a subset of mteb task {task.metadata.name} ({subsets})")
    return subset


def mteb_scores(record: ResultRecord, stage: str) -> dict[str, float]:
    scores = {}
    for measure in record.stage(stage):
        match = MEASURE.match(measure)
        value = record.value(stage, measure)
        if match and value is not None:
            scores[f"{MTEB_PREFIX[match.group(1)]}_{match.group(2)}"] = value
    return scores


def model_name_and_revision(record: ResultRecord) -> tuple[str, str]:
    model = labels.model_identity(record)
    if model is None:
        source = labels.first_stage_source(record)
        name = str(source.get("model") or f"kalm-eval/{source.get('kind', 'first-stage')}")
        return _safe_name(name), _safe(str(source.get("revision") or NO_REVISION))
    if model.weights == labels.LOCAL:
        name, revision = f"local/{model.label}", "sha256-" + (model.fingerprint or "").removeprefix("sha256:")[:12]
    elif model.weights == labels.RANDOM:
        name, revision = f"random/{model.label}", "random"
    else:
        name, revision = str(model.checkpoint), model.revision or NO_REVISION
    steps = labels.cascade_steps(record)
    if steps:
        revision += "-cascade-" + "-".join(f"{depth}{compression_label(r)}" for depth, r in steps)
    elif record.compression is not None:
        revision += f"-{compression_label(record.compression)}"
    return _safe_name(name), _safe(revision)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def _safe_name(name: str) -> str:
    return "/".join(_safe(part) for part in name.split("/"))


def write_task_result(entries: list[Entry], output_dir: Path, mteb) -> list[Path]:
    """One TaskResult file (written by mteb itself) + model_meta.json + the sources list, for one (model, revision,
    task). Of two records for the same subset and split, the most recently finished wins."""
    newest: dict[tuple[str, str], Entry] = {}
    for entry in sorted(entries, key=lambda e: e.record.finished_at):
        newest[(entry.split, entry.scores["hf_subset"])] = entry
    entries = list(newest.values())
    first = entries[0]
    scores: dict[str, list] = {}
    for entry in entries:
        scores.setdefault(entry.split, []).append(entry.scores)
    seconds = [e.record.timings.get("total_s") for e in entries]
    result = mteb.TaskResult(dataset_revision=first.dataset_revision, task_name=first.task.metadata.name,
                             mteb_version=mteb.__version__, scores=scores,
                             evaluation_time=sum(seconds) if all(isinstance(s, (int, float)) for s in seconds) else None,
                             date=_finished(entries))
    folder = output_dir / first.model.replace("/", "__") / first.revision
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{first.task.metadata.name}.json"
    result.to_disk(path)
    write_json_atomic(folder / "model_meta.json", model_meta(first, mteb))
    _append_sources(folder / SOURCES_FILE, entries)
    return [path, folder / "model_meta.json"]


def _finished(entries: list[Entry]) -> dt.datetime | None:
    stamps = [e.record.finished_at for e in entries if e.record.finished_at]
    return dt.datetime.fromisoformat(max(stamps)) if stamps else None


def model_meta(entry: Entry, mteb) -> dict[str, Any]:
    """mteb's registry metadata for the model when it has it (revision replaced by ours), else a minimal ModelMeta."""
    from mteb.models.model_implementations import MODEL_REGISTRY

    known = MODEL_REGISTRY.get(entry.model)
    if known is not None:
        return {**json.loads(json.dumps(known.to_dict(), default=str)), "revision": entry.revision}
    reranked = entry.record.reranked
    return {"name": entry.model, "revision": entry.revision, "release_date": None, "languages": None,
            "n_parameters": None, "memory_usage_mb": None, "max_tokens": None, "embed_dim": None, "license": None,
            "open_weights": None, "public_training_code": None, "public_training_data": None, "framework": [],
            "reference": None, "similarity_fn_name": None, "use_instructions": reranked, "training_datasets": None,
            "modalities": ["text"], "model_type": ["cross-encoder"] if reranked else ["dense"], "loader": None}


def _append_sources(path: Path, entries: list[Entry]) -> None:
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    for entry in entries:
        lines.append(json.dumps({"task": entry.task.metadata.name, "split": entry.split,
                                 "hf_subset": entry.scores["hf_subset"], "record": str(entry.record.path),
                                 "signature": entry.record.signature, "finished_at": entry.record.finished_at,
                                 "stage": entry.record.main_stage}, sort_keys=True))
    with atomic_open(path) as fh:
        fh.write("\n".join(dict.fromkeys(lines)) + "\n")
