"""Discover and load result records (a directory with metrics.json + per_query.tsv) from whole trees.

Readers are defensive: a field a record lacks (an older harness, a reranker stage still being built) is `None` and
shown as "missing" by the tables, never as 0. Records with the same signature found at several places (a rerun
into another folder, a sweep directory and results/runs) are read once."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAIN_MEASURE = "nDCG@10"
SKIP_DIRS = {"cache", "__pycache__", "node_modules"}
DEFAULT_ROOTS = ("results/runs", "results/multirun")


@dataclass(frozen=True)
class Latency:
    """The warm, separately timed scoring phase (timings.latency), warm-up excluded. None = not recorded."""

    ms_per_pair_p50: float | None = None
    ms_per_pair_p95: float | None = None
    pairs_per_s: float | None = None
    encode_ms_per_passage: float | None = None
    device: str | None = None
    dtype: str | None = None
    warmup_batches: int | None = None

    @property
    def recorded(self) -> bool:
        return self.ms_per_pair_p50 is not None or self.pairs_per_s is not None


@dataclass(frozen=True)
class ModelInfo:
    """What the report needs to know about a reranker model, read defensively from protocol.reranker.model (flat, or
    kalm_eval.fbnl's {"model": {checkpoint, revision, dtype, weights_fingerprint, ...}, ...}) and, for the config
    name and a local path, provenance.config.model."""

    name: str | None  # model config name: nano / small / large / tiny ...
    checkpoint: str | None  # hub id, "random:<name>", "local", or a path
    revision: str | None
    dtype: str | None
    local: bool  # weights from a local directory (a new checkpoint), never the paper's pinned ones
    random: bool  # randomly initialised test model
    identity: dict[str, Any]
    path: str | None = None

    @property
    def label(self) -> str:
        if self.local:
            return Path(self.path).name if self.path else f"{self.name or 'local'} (local)"
        if self.name:
            return str(self.name)
        if self.checkpoint:
            c = str(self.checkpoint)
            return c.split(":", 1)[1] if self.random else c.rsplit("/", 1)[-1]
        return "unknown-model"


def model_info(identity: Any, config_model: dict[str, Any] | None = None) -> ModelInfo:
    if isinstance(identity, str):
        identity = {"checkpoint": identity}
    ident = identity if isinstance(identity, dict) else {}
    flat = dict(ident)
    if isinstance(ident.get("model"), dict):  # kalm_eval.fbnl: {"model": loaded identity, "doc_max_len": ..., ...}
        flat = {**{k: v for k, v in ident.items() if k != "model"}, **ident["model"]}
    cfg = config_model if isinstance(config_model, dict) else {}
    name = flat.get("name") or flat.get("config_name") or flat.get("model_name") or cfg.get("name")
    path = flat.get("path") or flat.get("local_path") or cfg.get("path")
    checkpoint = flat.get("checkpoint") or flat.get("hf_id") or flat.get("repo") or path or cfg.get("hf_id")
    revision = flat.get("revision")
    if revision is None and checkpoint and checkpoint == cfg.get("hf_id") and not path:
        revision = cfg.get("revision")
    if checkpoint and "@" in str(checkpoint) and not revision and not _is_path(checkpoint):
        checkpoint, revision = str(checkpoint).split("@", 1)
    fingerprint = str(flat.get("weights_fingerprint") or "")
    local = bool(path) or checkpoint == "local" or fingerprint.startswith("sha256:") or _is_path(checkpoint)
    rnd = str(checkpoint or "").startswith("random:")
    return ModelInfo(name=None if name is None else str(name), checkpoint=None if checkpoint is None else str(checkpoint),
                     revision=None if revision is None else str(revision), dtype=_str(flat.get("dtype") or flat.get("torch_dtype")),
                     local=local, random=rnd, identity=ident, path=None if path is None else str(path))


@dataclass
class ResultRecord:
    path: Path
    raw: dict[str, Any]
    duplicates: list[Path] = field(default_factory=list)

    # ---- identity -------------------------------------------------------------------------------------------------
    @property
    def dataset(self) -> str:
        return str(self.raw.get("dataset") or _get(self.raw, "protocol", "dataset", "name") or "unknown")

    @property
    def benchmark(self) -> str:
        return self.dataset.split("/", 1)[0] if "/" in self.dataset else self.dataset

    @property
    def split(self) -> str | None:
        return self.raw.get("split") or _get(self.raw, "protocol", "dataset", "split")

    @property
    def signature(self) -> str | None:
        return self.raw.get("signature")

    @property
    def protocol(self) -> dict[str, Any]:
        return self.raw.get("protocol") or {}

    @property
    def reranker(self) -> dict[str, Any] | None:
        rr = self.protocol.get("reranker")
        return rr if isinstance(rr, dict) else None

    @property
    def reranked(self) -> bool:
        return self.reranker is not None

    @property
    def ratio(self) -> int | None:
        return _int(self.reranker.get("compression")) if self.reranker else None

    @property
    def rerank_depth(self) -> int | None:
        return _int(self.reranker.get("depth")) if self.reranker else None

    @property
    def instruction(self) -> str | None:
        return self.reranker.get("instruction") if self.reranker else None

    @cached_property
    def model(self) -> ModelInfo | None:
        if not self.reranker:
            return None
        config_model = _get(self.raw, "provenance", "config", "model")
        return model_info(self.reranker.get("model"), config_model if isinstance(config_model, dict) else None)

    @property
    def first_stage(self) -> dict[str, Any]:
        return self.protocol.get("first_stage") or {}

    @property
    def first_stage_signature(self) -> str | None:
        return self.first_stage.get("signature")

    @property
    def first_stage_depth(self) -> int | None:
        return _int(self.first_stage.get("depth"))

    @property
    def first_stage_label(self) -> str:
        source = self.first_stage.get("source") or {}
        if not isinstance(source, dict):
            return str(source)
        model = source.get("model") or source.get("system") or source.get("path")
        kind = source.get("kind") or source.get("name") or "first stage"
        if model and kind not in ("bm25",):
            return str(Path(str(model)).name if _is_path(model) else str(model).split("/")[-1])
        return str(kind)

    # ---- numbers --------------------------------------------------------------------------------------------------
    def stage(self, name: str) -> dict[str, Any]:
        stages = self.raw.get("stages") or {}
        return stages.get(name) or {}

    def value(self, stage: str, measure: str = MAIN_MEASURE) -> float | None:
        return _float(self.stage(stage).get(measure))

    @property
    def main_stage(self) -> str:
        return "reranked" if self.reranked and self.stage("reranked") else "first_stage"

    @property
    def recall_ceiling(self) -> tuple[str | None, float | None]:
        """First-stage recall at the rerank depth: the best any reranker of this head can do for recall."""
        depth = self.rerank_depth or self.first_stage_depth
        extra = _float(self.stage("reranked").get("recall_ceiling"))
        if extra is not None:
            return (f"R@{depth}" if depth else "recall ceiling"), extra
        if depth:
            return f"R@{depth}", self.value("first_stage", f"R@{depth}")
        return None, None

    @property
    def timings(self) -> dict[str, Any]:
        return self.raw.get("timings") or {}

    @property
    def counts(self) -> dict[str, Any]:
        return self.raw.get("counts") or {}

    @cached_property
    def latency(self) -> Latency:
        lat = self.timings.get("latency")
        if not isinstance(lat, dict):
            return Latency()
        return Latency(ms_per_pair_p50=_float(lat.get("ms_per_pair_p50")), ms_per_pair_p95=_float(lat.get("ms_per_pair_p95")),
                       pairs_per_s=_float(lat.get("pairs_per_s")), encode_ms_per_passage=_float(lat.get("encode_ms_per_passage")),
                       device=_str(lat.get("device")), dtype=_str(lat.get("dtype")), warmup_batches=_int(lat.get("warmup_batches")))

    @property
    def stored_bytes_per_passage(self) -> float | None:
        """counts.stored_bytes_per_passage: a number (this record's ratio) or a mapping ratio -> bytes."""
        raw = self.counts.get("stored_bytes_per_passage")
        if isinstance(raw, dict):
            for key in (self.ratio, str(self.ratio), f"r{self.ratio}"):
                if key in raw:
                    return _float(raw[key])
            return None
        return _float(raw)

    @property
    def whole_run_encode_ms_per_passage(self) -> float | None:
        """Offline encode seconds of the whole run / passages encoded (cold, cache misses only): a coarse fallback."""
        seconds = _float(self.timings.get("encode_s"))
        n = _float(self.counts.get("passages_encoded"))
        if seconds is None or not n:
            return None
        return 1000.0 * seconds / n

    @property
    def whole_run_ms_per_pair(self) -> float | None:
        """Online scoring seconds of this ratio / its pairs (cold, includes first-call costs and I/O): a coarse fallback."""
        seconds = _float(self.timings.get("score_s"))
        pairs = _float(self.counts.get("pairs"))
        if seconds is None or not pairs:
            return None
        return 1000.0 * seconds / pairs

    @property
    def finished_at(self) -> str:
        return str((self.raw.get("provenance") or {}).get("finished_at") or "")

    @cached_property
    def _per_query_rows(self) -> list[tuple[str, str, str, float]]:
        name = (self.raw.get("files") or {}).get("per_query", "per_query.tsv")
        path = self.path / name
        if not path.exists():
            return []
        rows = []
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh, delimiter="\t")
            header = next(reader, None)
            if header != ["stage", "measure", "query_id", "value"]:
                log.warning("%s: unexpected per-query header %s", path, header)
                return []
            for row in reader:
                if len(row) != 4:
                    continue
                value = _float(row[3])
                if value is not None:
                    rows.append((row[0], row[1], row[2], value))
        return rows

    def per_query(self, stage: str, measure: str = MAIN_MEASURE) -> dict[str, float]:
        return {qid: v for s, m, qid, v in self._per_query_rows if s == stage and m == measure}


# ---- discovery ------------------------------------------------------------------------------------------------------

def find_record_dirs(root: str | Path) -> list[Path]:
    """Every directory under `root` (or `root` itself) holding a metrics.json; hidden and cache folders are skipped."""
    root = Path(root)
    if (root / "metrics.json").is_file():
        return [root]
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS)
        if "metrics.json" in filenames:
            found.append(Path(dirpath))
    return found


def load_record(path: str | Path) -> ResultRecord | None:
    path = Path(path)
    try:
        raw = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        log.warning("%s: unreadable result record (%s); skipped", path, err)
        return None
    if not isinstance(raw, dict) or "stages" not in raw:
        log.warning("%s: metrics.json is not a kalm-eval result record (no 'stages'); skipped", path)
        return None
    return ResultRecord(path=path, raw=raw)


def load_records(roots: list[str | Path] | tuple | str | Path) -> list[ResultRecord]:
    """All records under the given roots (missing roots are reported, not fatal), deduplicated by signature:
    the most recently finished copy wins and the others are listed in `duplicates`."""
    if isinstance(roots, (str, Path)):
        roots = [roots]
    by_key: dict[str, ResultRecord] = {}
    for root in roots:
        if not Path(root).exists():
            log.warning("%s: no such results directory", root)
            continue
        for d in find_record_dirs(root):
            rec = load_record(d)
            if rec is None:
                continue
            key = rec.signature or f"path:{d.resolve()}"
            old = by_key.get(key)
            if old is None:
                by_key[key] = rec
            elif old.path.resolve() == rec.path.resolve():
                continue
            else:
                keep, drop = (rec, old) if rec.finished_at > old.finished_at else (old, rec)
                keep.duplicates.extend([drop.path, *drop.duplicates])
                by_key[key] = keep
    return sorted(by_key.values(), key=lambda r: (r.dataset, str(r.path)))


# ---- helpers --------------------------------------------------------------------------------------------------------

def _get(d: dict, *keys):
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _float(v) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _int(v) -> int | None:
    f = _float(v)
    return None if f is None else int(f)


def _str(v) -> str | None:
    return None if v in (None, "") else str(v)


def _is_path(v) -> bool:
    if v is None:
        return False
    s = str(v)
    return s.startswith(("/", "./", "../", "~")) or os.sep in s and Path(s).exists()
