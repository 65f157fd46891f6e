"""Where a run's pieces are, written as the run goes, so `kalm-eval-status` can answer from the files alone.

One small JSON file per run configuration, `<cache_dir>/runs/<key>.json`, named by the signature of
RunConfig.key() (computable from the config alone, before any data or model is loaded). It lists the dataset, the
first-stage run file, the rerank units directory and the result directories the run will write. Progress itself
is never stored here: status counts the files those entries point at (unit files, in-flight markers, records)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kalm_eval.storage import read_json, signature_of, write_json_atomic


def status_path(cache_dir: Path, key: dict[str, Any]) -> Path:
    return Path(cache_dir) / "runs" / f"{signature_of(key)[:24]}.json"


def record_progress(cache_dir: Path, key: dict[str, Any], **fields: Any) -> None:
    """Merge `fields` into the run's status file (a missing file is created)."""
    path = status_path(cache_dir, key)
    current = read_status(path) or {"key": key}
    current.update(fields)
    current["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json_atomic(path, current)


def read_status(path: Path) -> dict[str, Any] | None:
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None
