"""The result record: one class that writes, reads and discovers a result directory.

A result directory holds `metrics.json` (this record) beside the files it lists under `files` (run files, per-pair
scores, per-query metric values), with each file's sha256 under `file_digests`. It is committed whole: every file is
written into a temporary sibling directory which then replaces the target by rename (storage.replace_directory),
so an interrupted overwrite never leaves a new run file beside an old metrics.json. A directory counts as done
only when its record parses, has the expected signature and every listed file is present with its recorded size.

Schema (`schema_version` 2; version 1 = the same keys without schema_version, file_digests and file_bytes):

    dataset, split, signature            what was evaluated, and the sha256 of `protocol`
    stages.<stage>.<measure>             mean over judged queries (stages: first_stage, reranked), plus
    stages.<stage>.queries               the number of judged queries, and stage extras (recall_ceiling, roc_auc ...)
    protocol                             everything that affects a number (signature input)
    timings, counts                      measured costs and sizes (not keyed)
    provenance                           versions, git commit, device, full config, logged-only knobs
    files, file_digests, file_bytes      role -> file name; file name -> sha256 / size in bytes
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from kalm_eval import failpoints
from kalm_eval.errors import ResultError
from kalm_eval.storage import read_json, replace_directory, sha256_file, temp_sibling, write_json_atomic, named_writes

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
RECORD_FILE = "metrics.json"
PER_QUERY_FILE = "per_query.tsv"
PER_QUERY_HEADER = ["stage", "measure", "query_id", "value"]
SKIP_DIRS = {"cache", "__pycache__", "node_modules"}


@dataclass
class ResultRecord:
    dataset: str
    split: str | None
    signature: str
    stages: dict[str, dict[str, Any]]
    protocol: dict[str, Any]
    timings: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    file_digests: dict[str, str] = field(default_factory=dict)
    file_bytes: dict[str, int] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    path: Path | None = field(default=None, compare=False)  # the directory it was read from / committed to

    # ---- serialisation ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "dataset": self.dataset,
            "split": self.split,
            "signature": self.signature,
            "stages": self.stages,
            "protocol": self.protocol,
            "timings": self.timings,
            "counts": self.counts,
            "provenance": self.provenance,
            "files": self.files,
            "file_digests": self.file_digests,
            "file_bytes": self.file_bytes,
        }

    @classmethod
    def from_dict(cls, raw: Any, path: Path | None = None) -> ResultRecord:
        where = path / RECORD_FILE if path else "result record"
        if not isinstance(raw, dict) or "stages" not in raw or "signature" not in raw:
            raise ResultError(f"{where}: not a kalm-eval result record (needs 'stages' and 'signature')")
        version = raw.get("schema_version", 1)
        if version not in (1, SCHEMA_VERSION):
            raise ResultError(f"{where}: schema_version {version!r} is newer than this kalm-eval reads "
                              f"({SCHEMA_VERSION}); upgrade kalm-eval")
        return cls(
            dataset=str(raw.get("dataset")),
            split=raw.get("split"),
            signature=str(raw["signature"]),
            stages=dict(raw["stages"]),
            protocol=dict(raw.get("protocol") or {}),
            timings=dict(raw.get("timings") or {}),
            counts=dict(raw.get("counts") or {}),
            provenance=dict(raw.get("provenance") or {}),
            files=dict(raw.get("files") or {}),
            file_digests=dict(raw.get("file_digests") or {}),
            file_bytes={k: int(v) for k, v in (raw.get("file_bytes") or {}).items()},
            schema_version=SCHEMA_VERSION,  # version 1 differs only by the keys added with defaults above
            path=path,
        )

    @classmethod
    def load(cls, directory: str | Path) -> ResultRecord:
        directory = Path(directory)
        try:
            raw = read_json(directory / RECORD_FILE)
        except (OSError, ValueError) as err:
            raise ResultError(f"{directory / RECORD_FILE}: unreadable result record ({err})") from None
        return cls.from_dict(raw, directory)

    def commit(self, directory: str | Path, writers: dict[str, Callable[[Path], None]]) -> Path:
        """Write every file (name -> writer(path)) and this record into `directory`, atomically as a whole.

        The files are written into a unique temporary sibling directory, their digests recorded, the record written
        last; then the sibling replaces `directory`. Returns the directory."""
        directory = Path(directory)
        staged = temp_sibling(directory, "tmp")
        try:
            with named_writes(directory):
                directory.parent.mkdir(parents=True, exist_ok=True)
                staged.mkdir()
                for name, write in writers.items():
                    write(staged / name)
                self.file_digests = {name: sha256_file(staged / name) for name in writers}
                self.file_bytes = {name: (staged / name).stat().st_size for name in writers}
                failpoints.reach("record.stage")
                write_json_atomic(staged / RECORD_FILE, self.to_dict())
                replace_directory(staged, directory)
        except BaseException:
            import shutil

            shutil.rmtree(staged, ignore_errors=True)
            raise
        self.path = directory
        return directory

    # ---- completeness ---------------------------------------------------------------------------------------------
    def missing_files(self, *, verify_digests: bool = False) -> list[str]:
        """Listed files that are absent, of another size, or (verify_digests) of another content."""
        if self.path is None:
            return list(self.files.values())
        problems = []
        for name in dict.fromkeys(self.files.values()):
            target = self.path / name
            if not target.is_file():
                problems.append(f"{name} (absent)")
            elif name in self.file_bytes and target.stat().st_size != self.file_bytes[name]:
                problems.append(f"{name} (size differs from the record)")
            elif verify_digests and name in self.file_digests and sha256_file(target) != self.file_digests[name]:
                problems.append(f"{name} (sha256 differs from the record)")
        return problems

    # ---- protocol accessors ---------------------------------------------------------------------------------------
    @property
    def benchmark(self) -> str:
        return self.dataset.split("/", 1)[0]

    @property
    def reranker(self) -> dict[str, Any] | None:
        reranker = self.protocol.get("reranker")
        return reranker if isinstance(reranker, dict) else None

    @property
    def reranked(self) -> bool:
        return self.reranker is not None

    @property
    def reranker_name(self) -> str | None:
        """The reranker family (registry name: kalm, qwen3, ...); records of schema 1 are all kalm."""
        if self.reranker is None:
            return None
        return str(self.reranker.get("name", "kalm"))

    @property
    def compression(self) -> int | None:
        """The MEP compression ratio r of a KaLM record (None for first-stage-only records and other families)."""
        value = (self.reranker or {}).get("compression")
        return None if value is None else int(value)

    @property
    def rerank_depth(self) -> int | None:
        value = (self.reranker or {}).get("depth")
        return None if value is None else int(value)

    @property
    def instruction(self) -> str | None:
        return (self.reranker or {}).get("instruction")

    @property
    def first_stage(self) -> dict[str, Any]:
        return self.protocol.get("first_stage") or {}

    @property
    def first_stage_depth(self) -> int | None:
        value = self.first_stage.get("depth")
        return None if value is None else int(value)

    @property
    def finished_at(self) -> str:
        return str(self.provenance.get("finished_at") or "")

    # ---- numbers --------------------------------------------------------------------------------------------------
    def stage(self, name: str) -> dict[str, Any]:
        return self.stages.get(name) or {}

    @property
    def main_stage(self) -> str:
        return "reranked" if self.reranked and self.stage("reranked") else "first_stage"

    def value(self, stage: str, measure: str) -> float | None:
        return _finite(self.stage(stage).get(measure))

    @cached_property
    def per_query_rows(self) -> list[tuple[str, str, str, float]]:
        """(stage, measure, query id, value) for every judged query, read from per_query.tsv."""
        if self.path is None:
            return []
        path = self.path / self.files.get("per_query", PER_QUERY_FILE)
        if not path.exists():
            return []
        rows = []
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh, delimiter="\t")
            header = next(reader, None)
            if header != PER_QUERY_HEADER:
                raise ResultError(f"{path}:1: per-query header {header} != {PER_QUERY_HEADER}")
            for lineno, row in enumerate(reader, start=2):
                if len(row) != 4:
                    raise ResultError(f"{path}:{lineno}: expected 4 columns, got {len(row)}")
                rows.append((row[0], row[1], row[2], float(row[3])))
        return rows

    def per_query(self, stage: str, measure: str) -> dict[str, float]:
        return {qid: v for s, m, qid, v in self.per_query_rows if s == stage and m == measure}


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# ---- done / discovery ------------------------------------------------------------------------------------------------

def completed(directory: str | Path, signature: str) -> ResultRecord | None:
    """The record in `directory` when it is complete for `signature`: parses, same signature, every file present.
    None otherwise (absent, another signature, or damaged — the reason is logged)."""
    directory = Path(directory)
    if not (directory / RECORD_FILE).exists():
        return None
    try:
        record = ResultRecord.load(directory)
    except ResultError as err:
        log.warning("%s; recomputing", err)
        return None
    if record.signature != signature:
        log.warning("%s holds a result with another signature; it will be replaced", directory)
        return None
    missing = record.missing_files()
    if missing:
        log.warning("%s: incomplete result (%s); recomputing", directory, ", ".join(missing))
        return None
    return record


def find_record_dirs(root: str | Path) -> list[Path]:
    """Every directory under `root` (or `root` itself) holding a metrics.json; hidden and cache folders skipped."""
    root = Path(root)
    if (root / RECORD_FILE).is_file():
        return [root]
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS)
        if RECORD_FILE in filenames:
            found.append(Path(dirpath))
    return found


@dataclass
class Discovered:
    """Records found under some roots: one per signature (the newest copy), the other copies and the unreadable."""

    records: list[ResultRecord]
    duplicates: dict[str, list[Path]] = field(default_factory=dict)  # signature -> other directories
    skipped: list[str] = field(default_factory=list)  # messages for unreadable / incomplete directories


def discover(roots: Iterable[str | Path] | str | Path) -> Discovered:
    """All complete records under the given roots, deduplicated by signature (the most recently finished wins)."""
    if isinstance(roots, (str, Path)):
        roots = [roots]
    by_signature: dict[str, ResultRecord] = {}
    found = Discovered(records=[])
    for root in roots:
        if not Path(root).exists():
            found.skipped.append(f"{root}: no such results directory")
            continue
        for directory in find_record_dirs(root):
            try:
                record = ResultRecord.load(directory)
            except ResultError as err:
                found.skipped.append(str(err))
                continue
            missing = record.missing_files()
            if missing:
                found.skipped.append(f"{directory}: incomplete result ({', '.join(missing)})")
                continue
            old = by_signature.get(record.signature)
            if old is None:
                by_signature[record.signature] = record
                continue
            if old.path.resolve() == directory.resolve():
                continue
            keep, drop = (record, old) if record.finished_at > old.finished_at else (old, record)
            by_signature[record.signature] = keep
            found.duplicates.setdefault(record.signature, []).append(drop.path)
    found.records = sorted(by_signature.values(), key=lambda r: (r.dataset, str(r.path)))
    for message in found.skipped:
        log.warning("%s", message)
    return found


def default_directory(results_dir: str | Path, group: str, label: str, signature: str) -> Path:
    """Where a result lives unless output_dir says otherwise: <results_dir>/<group with / as __>/<label>-<sig[:10]>."""
    return Path(results_dir) / group.replace("/", "__") / f"{label}-{signature[:10]}"
