"""Compose the same config the `kalm-eval` command would, and run it in-process."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from kalm_eval.config import CONFIG_MODULE, RunConfig
from kalm_eval.pipeline import run


def compose_config(*overrides: str, config_name: str = "config") -> DictConfig:
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def run_overrides(*overrides: str) -> list[Path]:
    return run(RunConfig.from_hydra(compose_config(*overrides)))


def poison_unit(unit: Path, label: str, index: int, value: float) -> None:
    """Rewrite a stored rerank unit with `value` as pair `index`'s margin of variant `label` (a damaged cache)."""
    with np.load(unit) as data:
        arrays = {key: data[key] for key in data.files}
    arrays[f"margin/{label}"] = arrays[f"margin/{label}"].copy()
    arrays[f"margin/{label}"][index] = value
    with open(unit, "wb") as handle:
        np.savez(handle, **arrays)
