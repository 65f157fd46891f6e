"""The engines that run kalm-eval in parallel, for real: torchrun ranks (gloo on CPU) and a Hydra submitit job array
(the local executor) produce byte-identical run files and the same metrics as one process."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kalm_eval.result import find_record_dirs
from tests.data.test_beir_readers import write_beir

CORPUS = [{"_id": f"d{i}", "title": f"title {i}", "text": f"alpha beta {'gamma ' * (i % 9)} cell protein {i}"}
          for i in range(60)]
QUERIES = [{"_id": f"q{i}", "text": f"gamma alpha {'beta ' * (i % 3)} cell"} for i in range(8)]
QRELS = "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i * 3}\t1\n" for i in range(8))


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    write_beir(root / "mini", CORPUS, QUERIES, QRELS)
    return root


def overrides(root: Path, name: str) -> list[str]:
    return ["benchmark=local", f"benchmark.path={root / 'mini'}", "benchmark.label=mini", f"cache_dir={root / name}",
            "retriever.depth=12", "reranker=kalm", "model=tiny", "compression=[1,4]", "reranker.chunk_passages=4",
            "reranker.latency_batches=2", "progress=false", f"output_dir={root / 'out' / name}"]


def kalm_eval(root: Path, name: str, *prefix: str, extra: tuple[str, ...] = ()) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, *prefix, "-m", "kalm_eval", *extra, *overrides(root, name)]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]


def fingerprint(out: Path) -> dict:
    result = {}
    for folder in find_record_dirs(out):  # as every reader: a killed commit's hidden staging folder is no record
        record = folder / "metrics.json"
        result[folder.name] = (gzip.decompress((folder / "run.reranked.trec.gz").read_bytes()),
                               gzip.decompress((folder / "scores.reranked.tsv.gz").read_bytes()),
                               json.dumps(json.loads(record.read_text())["stages"], sort_keys=True))
    return result


@pytest.fixture(scope="module")
def single(mini):
    kalm_eval(mini, "single")
    return fingerprint(mini / "out" / "single")


def test_torchrun_ranks_equal_one_process(mini, single):
    kalm_eval(mini, "torchrun", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2")
    assert sorted(single) == ["r1", "r4"]
    assert fingerprint(mini / "out" / "torchrun") == single
    unit_files = list((mini / "torchrun").glob("rerank_units/*/*/*.npz"))
    assert len(unit_files) > 2  # the work was cut into several units ...
    assert halves(computed_per_rank(mini / "torchrun"), len(unit_files))


def halves(per_rank: dict[int, int], units: int) -> bool:
    """Two ranks split the units exactly (unit c goes to rank (c + offset) % 2, the offset fixed per run)."""
    return sorted(per_rank) == [0, 1] and sorted(per_rank.values()) == [units // 2, (units + 1) // 2]


def computed_per_rank(cache_dir: Path) -> dict[int, int]:
    """... and shared by the ranks: unit i belongs to rank i % world, each rank's log says how many it computed."""
    counts = {}
    for log in cache_dir.glob("logs/*.rank*.log"):
        found = re.findall(r"(\d+) unit\(s\) computed here, (\d+) in all", log.read_text())
        counts[int(log.name.rsplit(".rank", 1)[1].split(".")[0])] = int(found[-1][0])
    return counts


def test_submitit_job_array_of_workers_equals_one_process(mini, single):
    kalm_eval(mini, "array", extra=("-m", "hydra/launcher=local_workers", "worker=0,1", "workers=2"))
    (job_dir,) = [p for p in (mini / "out" / "array").iterdir() if p.is_dir()]  # the workers share one directory
    assert fingerprint(job_dir) == single
    units = len(list((mini / "array").glob("rerank_units/*/*/*.npz")))
    assert halves(computed_per_rank(mini / "array"), units)


def test_slurm_launcher_preset_composes():
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="kalm_eval.conf", version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm_gpu", "worker=3", "workers=8"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.max_num_timeout > 0
    assert "worker" in cfg.hydra.job.config.override_dirname.exclude_keys  # array tasks share one output dir


def test_a_killed_torchrun_leaves_no_rank_running(tmp_path):
    """torchrun starts each rank in a session of its own, so `kill -9 <torchrun>` alone left the ranks running on,
    orphaned, beside the resume (docs/rehearsal.md). Each rank now stops within seconds of its agent's death."""
    script = tmp_path / "rank.py"
    script.write_text("import os, time\nfrom kalm_eval.parallel import from_environment\nfrom_environment()\n"
                      "print('rank pid', os.getpid(), flush=True)\ntime.sleep(300)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    agent = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                              str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    pids, said = [], []
    try:
        while len(pids) < 2:
            said.append(agent.stdout.readline())
            assert said[-1], "torchrun ended before its ranks started:\n" + "".join(said)[-3000:]
            pids += [int(p) for p in re.findall(r"rank pid (\d+)", said[-1])]
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait()
        deadline = time.monotonic() + 30
        while any(_running(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in pids if _running(p)], "ranks still running 30 s after their torchrun agent was killed"
    finally:
        for pid in pids:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
