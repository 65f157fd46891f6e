"""Compose the same config the `kalm-eval` command would, and run it in-process."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from kalm_eval.cli import CONF_DIR, run_config_from
from kalm_eval.pipeline import run


def compose_config(*overrides: str, config_name: str = "config") -> DictConfig:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def run_overrides(*overrides: str) -> list[Path]:
    return run(run_config_from(compose_config(*overrides)))
