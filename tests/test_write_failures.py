"""A disk that fills up (a real small tmpfs where mounting is permitted, else skipped visibly; the write layer with
a simulated ENOSPC / EROFS always): one line naming the path, free and needed space; nothing partial is left; a rerun
with space resumes to identical files."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kalm_eval.errors import WriteFailed
from kalm_eval.result import ResultRecord
from kalm_eval.space import writing
from kalm_eval.storage import atomic_open, expect_writes, user_path
from tests.conftest import shared_dataset

SAME_FILES = ("run.first_stage.trec.gz", "per_query.tsv")  # metrics.json and run.log carry times


@pytest.fixture
def small_disk(tmp_path):
    """mount(size) -> a directory on a tmpfs of that size; remount(size) grows it. Needs root (mount)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        target = tmp_path / f"tmpfs{len(mounted)}"
        target.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()}); the simulated ENOSPC tests cover "
                        "the write layer")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def _remount(target: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(target)], check=True)


def _kalm_eval(tmp_path: Path, cache: Path, results: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    data = shared_dataset("beir", "scifact").parent.parent
    return subprocess.run([sys.executable, "-m", "kalm_eval", "benchmark=beir/scifact", "retriever=bm25",
                           f"data_dir={data}", f"cache_dir={cache}", f"results_dir={results}", "progress=false"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def _record(results: Path) -> Path:
    (record,) = (results / "beir__scifact").iterdir()
    return record


def _error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-3000:]  # one line, no traceback, no logging errors
    return lines[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The same run with space everywhere."""
    tmp = tmp_path_factory.mktemp("reference")
    done = _kalm_eval(tmp, tmp / "cache", tmp / "results")
    assert done.returncode == 0, done.stderr[-3000:]
    return _record(tmp / "results")


def test_full_disk_while_the_bm25_index_is_built(tmp_path, small_disk, reference):
    disk = small_disk("10M")  # the corpus doc store (8.2 MB) fits, the BM25 index (4.7 MB + spill files) does not
    cache = disk / "cache"
    line = _error_line(_kalm_eval(tmp_path, cache, tmp_path / "results"))
    assert line.startswith(f"kalm-eval: error: {cache}/bm25/") and ": cannot write: No space left on device (" in line
    assert " free there, this run writes about 19.0 MB under " in line and "finished work is kept" in line
    assert list((cache / "bm25").iterdir()) == []  # the staged build is gone
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").rglob("metrics.json"))
    _remount(disk, "64M")
    done = _kalm_eval(tmp_path, cache, tmp_path / "results")
    assert done.returncode == 0, done.stderr[-3000:]
    for name in SAME_FILES:
        assert (_record(tmp_path / "results") / name).read_bytes() == (reference / name).read_bytes(), name


def test_full_disk_while_a_record_is_committed(tmp_path, small_disk, reference):
    disk = small_disk("256K")  # the record's first-stage run alone is 509 KB
    results = disk / "results"
    cache = tmp_path / "cache"
    done = _kalm_eval(tmp_path, cache, results)
    line = _error_line(done)
    assert line.startswith(f"kalm-eval: error: {results}/beir__scifact/bm25-")
    assert "/run.first_stage.trec.gz: cannot write: No space left on device (" in line
    assert f"this run writes about 540.0 KB under {results} (kalm-eval-plan's estimate)" in line
    assert "will write about 540.0 KB there" in done.stdout  # warned before the spend
    assert [p for p in results.rglob("*") if p.is_file()] == []  # no partial record, no temp file
    _remount(disk, "8M")
    rerun = _kalm_eval(tmp_path, cache, results)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    record = ResultRecord.load(_record(results))
    assert record.timings["first_stage_cached"] is True  # the first stage was kept, not recomputed
    for name in SAME_FILES:
        assert (_record(results) / name).read_bytes() == (reference / name).read_bytes(), name


# ---- the write layer, with simulated failures (no mount needed) ----------------------------------------------

def _failing(code: int):
    def write(path: Path) -> None:
        with atomic_open(path) as fh:
            fh.write("half a file")
            raise OSError(code, os.strerror(code))
    return write


def _run_writer(write, path: Path, scope: Path) -> None:
    """As the pipeline does: the writers name the failed write, `writing` (kalm_eval.space) makes it one line."""
    with writing(scope, permission=False):
        write(path)


def test_atomic_open_names_the_target_not_its_temp_file(tmp_path):
    expect_writes(tmp_path, 5_000_000)
    with pytest.raises(WriteFailed) as err:
        _run_writer(_failing(errno.ENOSPC), tmp_path / "out" / "run.trec.gz", tmp_path)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'out' / 'run.trec.gz'}: cannot write: No space left on device (")
    assert f"free there, this run writes about 5.0 MB under {tmp_path} (kalm-eval-plan's estimate)" in message
    assert list((tmp_path / "out").iterdir()) == []
    with pytest.raises(WriteFailed, match=r"run\.trec\.gz: cannot write: Read-only file system$"):
        _run_writer(_failing(errno.EROFS), tmp_path / "out" / "run.trec.gz", tmp_path)
    with pytest.raises(WriteFailed, match=r"run\.trec\.gz: cannot write: Disk quota exceeded \("):
        _run_writer(_failing(errno.EDQUOT), tmp_path / "out" / "run.trec.gz", tmp_path)
    with pytest.raises(WriteFailed, match=r"run\.trec\.gz: cannot write: Permission denied$"):  # named by atomic_open
        _run_writer(_failing(errno.EACCES), tmp_path / "out" / "run.trec.gz", tmp_path)
    with pytest.raises(OSError) as other:  # not a write failure: left alone
        _run_writer(_failing(errno.EIO), tmp_path / "out" / "run.trec.gz", tmp_path)
    assert not isinstance(other.value, WriteFailed)


def test_a_record_commit_that_fails_leaves_nothing(tmp_path):
    record = ResultRecord(dataset="beir/x", split="test", signature="s" * 64, stages={}, protocol={}, timings={},
                          counts={}, provenance={}, files={"run": "run.trec.gz"})
    target = tmp_path / "beir__x" / "bm25-abc"
    with pytest.raises(WriteFailed) as err, writing(tmp_path, permission=False):
        record.commit(target, {"run.trec.gz": _failing(errno.ENOSPC)})
    assert str(err.value).startswith(f"{target / 'run.trec.gz'}: cannot write: No space left on device")
    assert list(target.parent.iterdir()) == []


def test_temporary_names_become_the_names_they_stand_for():
    assert user_path("/r/.bm25-0a1b2c3d4e5f.tmp-0123456789ab/.run.trec.gz.k2x_9q.tmp") == Path("/r/bm25-0a1b2c3d4e5f/run.trec.gz")
    assert user_path("/c/bm25/.ad30ae177f6d9dc8.build-0123456789ab/x") == Path("/c/bm25/ad30ae177f6d9dc8/x")


def test_permission_only_where_a_write_is_known(tmp_path):
    with pytest.raises(WriteFailed, match="cannot write: Permission denied"), writing(tmp_path):
        raise PermissionError(errno.EACCES, "Permission denied")
    with pytest.raises(PermissionError) as err, writing(tmp_path, permission=False):  # a scope that also reads
        raise PermissionError(errno.EACCES, "Permission denied")
    assert not isinstance(err.value, WriteFailed)


@pytest.mark.slow
def test_full_disk_while_a_reranked_record_is_committed(tmp_path, small_disk):
    """The tiny reranker over SciFact's BM25 top-5: the record (runs + pair scores) does not fit; the rerun with
    space computes no unit again and writes the same run and score files as a run that never failed."""
    data = shared_dataset("beir", "scifact").parent.parent
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

    def run(cache: Path, results: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "kalm_eval", "benchmark=beir/scifact", "retriever=bm25",
                               "retriever.depth=5", "reranker=kalm", "model=tiny", f"data_dir={data}",
                               f"cache_dir={cache}", f"results_dir={results}", "progress=false"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=600)

    disk = small_disk("64K")
    line = _error_line(run(tmp_path / "cache", disk / "results"))
    assert line.startswith(f"kalm-eval: error: {disk / 'results'}/beir__scifact/") and "No space left on device" in line
    assert [p for p in (disk / "results").rglob("*") if p.is_file()] == []
    _remount(disk, "8M")
    rerun = run(tmp_path / "cache", disk / "results")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "0 unit(s) computed here, 1 in all" in rerun.stdout + rerun.stderr
    reference = run(tmp_path / "cache2", tmp_path / "results2")
    assert reference.returncode == 0, reference.stderr[-3000:]
    ((got,), (want,)) = ((disk / "results" / "beir__scifact").iterdir(), (tmp_path / "results2" / "beir__scifact").iterdir())
    for name in ("run.first_stage.trec.gz", "run.reranked.trec.gz", "scores.reranked.tsv.gz", "per_query.tsv"):
        assert (got / name).read_bytes() == (want / name).read_bytes(), name
