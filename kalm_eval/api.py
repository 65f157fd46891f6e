"""The Python API beside the CLI: the same overrides, the same runs, the results as records or a DataFrame.

    import kalm_eval
    records = kalm_eval.evaluate("benchmark=beir/scifact", "retriever=bm25", "data_dir=../shared/data")
    frame = kalm_eval.load_results("results/runs")      # one tidy row per dataset x model x r x stage x measure
    frame.query("measure == 'nDCG@10'").pivot_table(index="dataset", columns="compression", values="value")
"""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_module

from kalm_eval.config import CONFIG_MODULE, RunConfig
from kalm_eval.pipeline import run
from kalm_eval.result import RECORD_FILE, ResultRecord
from kalm_eval.storage import read_json
from kalm_eval.suite import is_suite, run_suite


def evaluate(*overrides: str) -> list[ResultRecord]:
    """Run kalm-eval with these command-line overrides (Hydra compose API); the result records it wrote or found
    done (every unit's, for a suite)."""
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    if is_suite(cfg.benchmark):
        ledger = read_json(run_suite(cfg) / "units.json")
        paths = [Path(p) for entry in ledger.values() for p in entry["records"]]
    else:
        paths = run(RunConfig.from_hydra(cfg))
    return [ResultRecord.load(path) for path in paths if (Path(path) / RECORD_FILE).exists()]


def load_results(paths):
    """Every result record under `paths` (a directory, a list of them) as one tidy pandas DataFrame."""
    from kalm_eval.report.frame import load_results as frame_of

    return frame_of(paths)
