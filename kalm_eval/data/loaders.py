"""Benchmark config (the `benchmark` Hydra group) -> Dataset. One loader per data layout."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from kalm_eval.data.beir import load_beir_benchmark
from kalm_eval.data.dataset import Dataset
from kalm_eval.data.lmeb import load_lmeb
from kalm_eval.data.miracl import load_miracl
from kalm_eval.data.quirks import check_quirks
from kalm_eval.errors import DataError

log = logging.getLogger(__name__)


LOADERS: dict[str, Callable[[dict[str, Any], Path], Dataset]] = {"beir": load_beir_benchmark, "miracl": load_miracl,
                                                                 "lmeb": load_lmeb}


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
