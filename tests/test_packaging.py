"""The package as a user gets it: a built wheel carries the configs and the published numbers, runs from any
directory, and pyproject lists every kalm_eval subpackage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

from tests.conftest import REPO_ROOT, shared_dataset


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO_ROOT).parts) for p in (REPO_ROOT / "kalm_eval").rglob("__init__.py")}
    for folder, package in ((REPO_ROOT / "conf", "kalm_eval.conf"), (REPO_ROOT / "results" / "paper", "kalm_eval.paper")):
        found |= {".".join((package, *d.relative_to(folder).parts)) for d in [folder, *folder.rglob("*")]
                  if d.is_dir() and d.name != "__pycache__"}
    assert found == listed


def run(command: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done


def _source_copy(destination: Path) -> Path:
    """The checkout's sources without its environments and outputs: pip builds in the source tree (build/,
    *.egg-info), so the wheel is built from a copy and the checkout stays as it was."""
    def ignored(folder: str, names: list[str]) -> set[str]:
        here = Path(folder)
        if here == REPO_ROOT:
            return {n for n in names if n in (".git", ".venv", "build", ".pytest_cache") or n.endswith(".egg-info")}
        if here == REPO_ROOT / "results":
            return {n for n in names if n != "paper"}
        return {n for n in names if n == "__pycache__"}

    shutil.copytree(REPO_ROOT, destination, ignore=ignored)
    return destination


def test_wheel_installs_and_runs_from_an_empty_directory(tmp_path):
    data = shared_dataset("beir", "scifact").parent.parent
    source = _source_copy(tmp_path / "source")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
         str(source)], cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("kalm_eval-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "kalm_eval/conf/config.yaml" in names and "kalm_eval/conf/benchmark/beir/scifact.yaml" in names
    assert "kalm_eval/paper/v1/beir.yaml" in names and not any(n.startswith("tests/") for n in names)
    # A fresh environment: the wheel itself, its dependencies borrowed from this one (no download, no source tree).
    run([sys.executable, "-m", "venv", str(tmp_path / "venv")], cwd=tmp_path)
    python = tmp_path / "venv" / "bin" / "python"
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path).stdout
    (Path(site.strip()) / "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], cwd=tmp_path)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(HF_HUB_OFFLINE="1", KALM_EVAL_HOME=str(tmp_path / "home"))
    where = run([str(python), "-c", "import kalm_eval; print(kalm_eval.__file__)"], cwd=empty, env=env).stdout
    assert str(REPO_ROOT) not in where and str(source) not in where  # the installed copy, not a source tree
    out = run([str(tmp_path / "venv" / "bin" / "kalm-eval"), "benchmark=beir/scifact", "retriever=bm25",
               f"data_dir={data}"], cwd=empty, env=env).stdout
    record = empty / out.strip().splitlines()[-1]
    assert record.is_relative_to(empty / "results" / "runs")  # results under the working directory
    ndcg = json.loads(record.read_text())["stages"]["first_stage"]["nDCG@10"]
    assert abs(ndcg - 0.68736) <= 0.002  # MTEB's bm25s SciFact
    assert (tmp_path / "home" / "cache" / "first_stage").is_dir()  # the user-level cache, not the repo's
    run([str(tmp_path / "venv" / "bin" / "kalm-eval-report"), f"results={record.parent}",
         f"output_dir={empty / 'report'}"], cwd=empty, env=env)
    table = (empty / "report" / "paper_table.beir.md").read_text()
    assert "68.63" in table and "53.78" in table  # ours and the paper's first-stage row beside it
