"""Console entry points (Hydra apps). `kalm-eval` runs one evaluation; `python -m kalm_eval` is the same."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from kalm_eval.data.readers import DataError

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
log = logging.getLogger("kalm_eval")


def run_config_from(cfg: DictConfig):
    from kalm_eval.pipeline import RunConfig

    ratios = cfg.compression
    ratios = [int(r) for r in ratios] if isinstance(ratios, ListConfig) else [int(ratios)]
    if not ratios or any(r < 1 for r in ratios):
        raise ValueError(f"compression must be positive integer(s), got {ratios}")
    return RunConfig(
        benchmark=OmegaConf.to_container(cfg.benchmark, resolve=True),
        retriever=OmegaConf.to_container(cfg.retriever, resolve=True),
        reranker=OmegaConf.to_container(cfg.reranker, resolve=True),
        model=OmegaConf.to_container(cfg.model, resolve=True),
        compression=list(dict.fromkeys(ratios)),
        cache_dir=Path(cfg.cache_dir),
        output_dir=Path(cfg.output_dir) if cfg.output_dir else None,
        force=bool(cfg.force),
        full_config=OmegaConf.to_container(cfg, resolve=True),
    )


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    from kalm_eval.pipeline import run

    try:
        outputs = run(run_config_from(cfg))
    except (DataError, ValueError, FileNotFoundError) as err:
        log.error("%s", err)
        sys.exit(2)
    for out in outputs:
        print(out / "metrics.json")


if __name__ == "__main__":
    main()
