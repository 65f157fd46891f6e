"""Benchmark config (the `benchmark` Hydra group) -> Dataset. One loader per data layout."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from kalm_eval.data.dataset import Dataset, download_beir, load_beir
from kalm_eval.data.lmeb import load_lmeb
from kalm_eval.data.miracl import load_miracl
from kalm_eval.data.quirks import Quirks, check_quirks
from kalm_eval.errors import DataError

log = logging.getLogger(__name__)


def _beir(cfg: dict[str, Any], cache_dir: Path) -> Dataset:
    quirks = Quirks.from_config(cfg.get("quirks"))
    if cfg.get("source", "local") == "mteb":  # optional: MTEB's HF upload (mteb/<name>) at a pinned revision
        from kalm_eval.data.mteb_hf import HFSource, load_mteb_dataset

        src = HFSource(cfg["mteb_repo"], cfg.get("mteb_revision"), None, cfg["split"])
        return load_mteb_dataset(src, name=cfg["name"], quirks=quirks, joiner=cfg.get("joiner", " "), cache_dir=cache_dir)
    path = Path(cfg["path"])
    if not path.exists() and cfg.get("md5"):
        path = download_beir(path.name, path.parent, cfg["md5"])
    return load_beir(path, name=cfg["name"], split=cfg["split"], quirks=quirks,
                     joiner=cfg.get("joiner", " "), cache_dir=cache_dir)


LOADERS: dict[str, Callable[[dict[str, Any], Path], Dataset]] = {"beir": _beir, "miracl": load_miracl, "lmeb": load_lmeb}


def load_dataset(cfg: dict[str, Any], cache_dir: Path) -> Dataset:
    if "datasets" in cfg:
        raise DataError(f"benchmark {cfg.get('name')!r} is a suite; run it with kalm_eval.suite.run_suite")
    loader = cfg.get("loader", "beir")
    if loader not in LOADERS:
        raise DataError(f"benchmark {cfg.get('name')!r}: unknown loader {loader!r}; known: {sorted(LOADERS)}")
    dataset = LOADERS[loader](cfg, cache_dir)
    deviation = check_quirks(dataset.name, dataset.quirks)
    if deviation:
        log.warning("%s", deviation)
    return dataset
