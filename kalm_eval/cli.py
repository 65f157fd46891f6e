"""Console entry point `kalm-eval` (a Hydra app over the shipped config `kalm_eval.conf`); `python -m kalm_eval` is
the same. Every expected failure (bad knob, missing data, damaged result) is one line on stderr and exit code 2;
a suite with failed units runs the others, writes its summary, then exits with 3 (one line on stderr)."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from kalm_eval.config import CONFIG_PATH, RunConfig
from kalm_eval.errors import KalmEvalError, exit_with
from kalm_eval.space import write_failure
from kalm_eval.storage import failed_write

log = logging.getLogger("kalm_eval")


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
def main(cfg: DictConfig) -> None:
    from kalm_eval.pipeline import run
    from kalm_eval.rerank.engine import IncompleteUnits
    from kalm_eval.suite import check_complete, is_suite, run_suite

    try:
        if is_suite(cfg.benchmark):
            out = run_suite(cfg)
            print(out / "summary.json")
            check_complete(out)  # failed units: exit status 3, after the summary is written
            return
        outputs = run(RunConfig.from_hydra(cfg))
    except (KalmEvalError, IncompleteUnits) as err:
        exit_with(err, "kalm-eval")
    except OSError as err:  # a write that failed outside the wrapped writers: still one line
        if not failed_write(err):
            raise
        exit_with(write_failure(err.filename, err), "kalm-eval")
    for out in outputs:
        print(out / "metrics.json")


if __name__ == "__main__":
    main()
