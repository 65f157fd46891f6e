"""Shared test helpers: where the real data lives, and skipping visibly when it is absent."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def shared_dataset(*parts: str) -> Path:
    """Path inside ../shared/data, or a visible skip when it is not there."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (tests expect ../shared/data beside the project)")
    return path


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


# ---- nothing of a test survives it ---------------------------------------------------------------------------------
# Every test runs with the default home ($KALM_EVAL_HOME: data, first-stage runs, indexes, units) and the working
# directory (default results_dir = results/runs) inside the session's temp dir, so a run that passes no cache_dir or
# results_dir writes nothing into the user's cache or the checkout. Session-scoped so that module- and session-scoped
# fixtures (which build runs once for many tests) are confined too. The guard below fails the session when the
# checkout gained an untracked or ignored path anyway (build/, *.egg-info of a wheel build, results/runs, ...).
_EXPECTED_LITTER = ("__pycache__", ".pytest_cache", ".hypothesis", ".venv")


def _untracked_paths() -> set[str] | None:
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        return None
    done = subprocess.run(["git", "status", "--porcelain", "--ignored=matching"], cwd=REPO_ROOT, capture_output=True,
                          text=True)
    if done.returncode != 0:
        return None
    paths = {line[3:].strip() for line in done.stdout.splitlines() if line[:2] in ("??", "!!")}
    return {p for p in paths if not any(part in _EXPECTED_LITTER for part in Path(p).parts)}


@pytest.fixture(scope="session", autouse=True)
def _confined_to_temp_dirs(tmp_path_factory: pytest.TempPathFactory):
    before = _untracked_paths()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KALM_EVAL_HOME", str(tmp_path_factory.mktemp("kalm-eval-home")))
        patch.chdir(tmp_path_factory.mktemp("cwd"))
        yield
    after = _untracked_paths()
    if before is not None and after is not None:
        assert after <= before, f"the test session left files in the checkout: {sorted(after - before)}"
