"""What a result was produced with (logged, not part of the signature): versions, machine, git commit, time."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path

from kalm_eval import __version__

PACKAGES = ("torch", "transformers", "sentence-transformers", "bm25s", "ir-measures", "pytrec-eval-terrier",
            "hydra-core", "numpy", "tokenizers", "datasets", "mteb")


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def device_description() -> dict[str, str | int]:
    info: dict[str, str | int] = {"platform": platform.platform(), "processor": platform.processor() or platform.machine()}
    torch = sys.modules.get("torch")  # describe torch only when the run used it (importing it costs seconds)
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def collect() -> dict:
    return {
        "harness_version": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "device": device_description(),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
