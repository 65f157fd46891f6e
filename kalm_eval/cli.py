"""Console entry points (Hydra apps). `kalm-eval` runs one evaluation; `python -m kalm_eval` is the same."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from kalm_eval.errors import DataError

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
        output_dir=_job_output_dir(cfg),
        force=bool(cfg.force),
        full_config=OmegaConf.to_container(cfg, resolve=True),
    )


def _job_output_dir(cfg: DictConfig) -> Path | None:
    """An explicit output_dir, made unique per job in a multirun (jobs would overwrite each other otherwise)."""
    if not cfg.output_dir:
        return None
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(cfg.output_dir) / (HydraConfig.get().job.override_dirname or str(HydraConfig.get().job.num))
    return Path(cfg.output_dir)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    from kalm_eval.pipeline import run
    from kalm_eval.suite import is_suite, run_suite

    try:
        if is_suite(cfg.benchmark):
            print(run_suite(cfg) / "summary.json")
            return
        outputs = run(run_config_from(cfg))
    except (DataError, ValueError, FileNotFoundError) as err:
        log.error("%s", err)
        sys.exit(2)
    for out in outputs:
        print(out / "metrics.json")


if __name__ == "__main__":
    main()
