"""kill -9 at the moments a random kill rarely hits (kalm_eval.failpoints): a unit's temporary file written but not
renamed, a merge half done, between a record commit's two renames. The process dies there with SIGKILL; a rerun
resumes and writes exactly what an uninterrupted run writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from kalm_eval import failpoints
from kalm_eval.result import find_record_dirs
from tests.test_distributed import fingerprint, mini, overrides, single  # noqa: F401 (fixtures)


def kalm_eval(root, name: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != failpoints.ENVIRONMENT}
    env.update({"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **({failpoints.ENVIRONMENT: kill_at} if kill_at else {})})
    return subprocess.run([sys.executable, "-m", "kalm_eval", *overrides(root, name)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("kill_at", ["unit.write:2", "merge:3", "record.rename:1"])
def test_killed_at_a_named_moment_then_resumed_equals_an_uninterrupted_run(mini, single, kill_at):  # noqa: F811
    name = "killed-" + kill_at.replace(":", "-")
    killed = kalm_eval(mini, name, kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]  # it died there, as kill -9 would
    if kill_at.startswith("record.rename"):  # the old copy moved aside, the new one not in place: no record at all
        assert not find_record_dirs(mini / "out" / name)
    resumed = kalm_eval(mini, name)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert fingerprint(mini / "out" / name) == single


def test_a_bad_point_is_refused():
    assert failpoints._parse("merge:2") == ("merge", 2) and failpoints._parse(None) is None
    for spec in ("merge:0", "nowhere:1", "merge:x"):
        with pytest.raises(ValueError, match="KALM_EVAL_KILL_AT"):
            failpoints._parse(spec)
