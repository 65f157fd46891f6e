"""Benchmark config (the `benchmark` Hydra group) -> Dataset. One loader per data layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from kalm_eval.data.dataset import Dataset, download_beir, load_beir
from kalm_eval.data.quirks import Quirks
from kalm_eval.data.readers import DataError


def _beir(cfg: dict[str, Any], cache_dir: Path) -> Dataset:
    path = Path(cfg["path"])
    if not path.exists() and cfg.get("md5"):
        path = download_beir(path.name, path.parent, cfg["md5"])
    return load_beir(path, name=cfg["name"], split=cfg["split"], quirks=Quirks.from_config(cfg.get("quirks")),
                     joiner=cfg.get("joiner", " "), cache_dir=cache_dir)


LOADERS: dict[str, Callable[[dict[str, Any], Path], Dataset]] = {"beir": _beir}


def load_dataset(cfg: dict[str, Any], cache_dir: Path) -> Dataset:
    loader = cfg.get("loader", "beir")
    if loader not in LOADERS:
        raise DataError(f"benchmark {cfg.get('name')!r}: unknown loader {loader!r}; known: {sorted(LOADERS)}")
    return LOADERS[loader](cfg, cache_dir)
