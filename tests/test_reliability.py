"""Fail before the spend, never keep a half-written result, count every input oddity.

Each bad configuration is one clear line and exit code 2, before any data is read or model loaded (checked through
the real command line, with its wall time); interrupted writes leave either the old result or a directory that is
recognised as not done; bad input bytes name their file and line, or are counted under an explicit policy."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kalm_eval import storage
from kalm_eval.config import RunConfig
from kalm_eval.errors import ConfigError, DataError
from kalm_eval.result import completed
from kalm_eval.storage import atomic_open
from tests.data.test_beir_readers import write_beir
from tests.helpers import compose_config, run_overrides
from tests.test_cli import CORPUS, QRELS, QUERIES


@pytest.fixture
def mini(tmp_path):
    root = write_beir(tmp_path / "mini", CORPUS, QUERIES, QRELS)
    return ["benchmark=local", f"benchmark.path={root}", "benchmark.label=mini", f"cache_dir={tmp_path / 'cache'}"]


def cli(tmp_path, *overrides) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "kalm_eval", *overrides], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    return done, time.perf_counter() - started


@pytest.mark.parametrize("overrides, message", [
    (["compression=4.5"], "compression=4.5: expected an integer"),
    (["compression=true"], "compression=True: expected an integer"),
    (["compression=[]"], "give at least one MEP compression ratio"),
    (["reranker.depth=-1"], "reranker.depth=-1: must be >= 1"),
    (["reranker.depth=0"], "reranker.depth=0: must be >= 1"),
    (["retriever.depth=0"], "retriever.depth=0: must be >= 1"),
    (["retriever.depth=5", "reranker.depth=10"], "reranker.depth=10: must be <= retriever.depth=5"),
    (["model.dtype=float16"], "Use bfloat16 or float32 instead of float16"),
    (["+model.dtpye=float32"], "model.dtpye: unknown setting"),  # (Hydra itself refuses it without the +)
    (["reranker.tail=keep"], "reranker.tail='keep': must be one of 'first_stage', 'drop'"),
    (["model.device=cuda:3"], "model.device=cuda:3"),
    (["reranker.batch_size=0"], "reranker.batch_size=0: must be >= 1"),
])
def test_bad_knobs_are_refused_before_any_work(mini, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        RunConfig.from_hydra(compose_config(*mini, "reranker=kalm", "model=tiny", *overrides))


def test_the_command_line_says_one_line_and_exits_2_fast(mini, tmp_path):
    (tmp_path / "a-file").write_text("x")
    for overrides, message in [
        (["reranker=kalm", "model=tiny", f"output_dir={tmp_path / 'a-file'}"], "is a file, not a directory"),
        (["reranker=kalm", "model=tiny", "model.dtype=float16"], "float16"),
        (["reranker=kalm", "model=tiny", "compression=4.5"], "expected an integer"),
        (["benchmark.invalid_utf8=maybe"], "benchmark.invalid_utf8='maybe'"),
    ]:
        done, seconds = cli(tmp_path, *mini, *overrides)
        errors = done.stderr.strip().splitlines()
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert len(errors) == 1 and errors[0].startswith("kalm-eval: error: ") and message in errors[0], errors
        assert not (tmp_path / "cache" / "docstore").exists()  # no data was read (the corpus index is not built)
        assert seconds < 60, seconds


def test_unwritable_output_location_is_refused_up_front(mini, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user that can write anywhere (root): permissions cannot be tested")
        with pytest.raises(ConfigError, match="output_dir=.*not a writable directory"):
            RunConfig.from_hydra(compose_config(*mini, f"output_dir={locked / 'out'}"))
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("knob", ["output_dir", "cache_dir", "results_dir"])
def test_a_location_under_a_regular_file_is_refused_up_front_even_for_root(mini, tmp_path, knob):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ConfigError, match=f"{knob}=.*a-file"):
        RunConfig.from_hydra(compose_config(*mini, f"{knob}={tmp_path / 'a-file' / 'below'}"))


def test_a_damaged_first_stage_cache_entry_is_named_and_rebuilt(mini, tmp_path, caplog):
    first = _record(mini, tmp_path / "first")
    [cached] = (tmp_path / "cache" / "first_stage").glob("*/*.trec.gz")
    intact = cached.read_bytes()
    cached.write_bytes(gzip.compress(b"q1 Q0 d1 1 9.0 forged\n"))  # valid TREC, not what the manifest recorded
    again = _record(mini, tmp_path / "again")
    assert f"first-stage cache {cached} does not match its manifest; rebuilding" in caplog.text
    assert cached.read_bytes() == intact
    assert (again / "run.first_stage.trec.gz").read_bytes() == (first / "run.first_stage.trec.gz").read_bytes()


def _record(mini, out: Path, *extra) -> Path:
    [path] = run_overrides(*mini, f"output_dir={out}", *extra)
    return path


def test_interrupted_overwrite_never_leaves_a_mixed_record(mini, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _record(mini, out, "retriever.k1=1.2")
    old = json.loads((out / "metrics.json").read_text())
    # 1) killed while the new files are written: the staged copy is abandoned, the old result stays whole and done
    original_write = storage.write_json_atomic

    def dies_writing_the_record(path, obj):
        if Path(path).name == "metrics.json":
            raise KeyboardInterrupt("killed")
        return original_write(path, obj)

    monkeypatch.setattr("kalm_eval.result.write_json_atomic", dies_writing_the_record)
    with pytest.raises(KeyboardInterrupt):
        _record(mini, out, "retriever.k1=0.9")
    monkeypatch.undo()
    assert json.loads((out / "metrics.json").read_text()) == old and completed(out, old["signature"]) is not None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run.")]  # no staged leftovers
    # 2) killed between the two renames of the commit: no result directory at all, so "not done"
    def dies_between_renames(staged, target):
        os.replace(target, storage.temp_sibling(target, "old"))  # the first rename happened, the second never does
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr("kalm_eval.result.replace_directory", dies_between_renames)
    with pytest.raises(KeyboardInterrupt):
        _record(mini, out, "retriever.k1=0.9")
    monkeypatch.undo()
    assert not out.exists() and completed(out, old["signature"]) is None
    new = _record(mini, out, "retriever.k1=0.9")  # a rerun completes it
    assert completed(new, json.loads((new / "metrics.json").read_text())["signature"]) is not None


def test_a_record_whose_files_do_not_match_is_not_done(mini, tmp_path):
    out = _record(mini, tmp_path / "run")
    signature = json.loads((out / "metrics.json").read_text())["signature"]
    (out / "per_query.tsv").write_text("stage\tmeasure\tquery_id\tvalue\n")  # another size than recorded
    assert completed(out, signature) is None
    again = _record(mini, tmp_path / "run")  # recomputed, not reported as "already done"
    assert completed(again, signature) is not None


def test_files_follow_the_umask_and_temp_names_are_unique(mini, tmp_path):
    previous = os.umask(0o022)
    try:
        out = _record(mini, tmp_path / "run")
    finally:
        os.umask(previous)
    for name in ("metrics.json", "per_query.tsv", "run.first_stage.trec.gz"):
        assert (out / name).stat().st_mode & 0o777 == storage.FILE_MODE, name
    target = tmp_path / "shared.txt"
    errors = []

    def writer(text):
        try:
            for _ in range(50):
                with atomic_open(target) as fh:
                    fh.write(text * 1000)
        except Exception as error:  # pragma: no cover - the assertion below reports it
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(c,)) for c in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and target.read_text() in ("a" * 1000, "b" * 1000)  # never interleaved
    assert not list(tmp_path.glob(".shared.txt.*"))


def test_two_writers_committing_one_record_at_once_both_succeed(tmp_path, monkeypatch):
    """Another writer's copy lands between a commit's two renames (two job-array workers that both merge, or a killed
    torchrun's orphaned ranks beside the resume): the commit moves it aside and tries again; no error, one whole
    directory, no leftovers. (The old replace_directory raised "Directory not empty" here.)"""
    target = tmp_path / "record"

    def staged(text: str) -> Path:
        directory = storage.temp_sibling(target, "tmp")
        directory.mkdir()
        (directory / "metrics.json").write_text(text)
        return directory

    storage.replace_directory(staged("first"), target)
    real_replace, interleaved = os.replace, []

    def replace(source, destination):
        real_replace(source, destination)
        if not interleaved and Path(destination).name.startswith(".record.old-"):
            interleaved.append(True)
            storage.replace_directory(staged("other writer"), target)  # commits whole between our two renames

    monkeypatch.setattr(os, "replace", replace)
    storage.replace_directory(staged("ours"), target)
    monkeypatch.undo()
    assert interleaved and (target / "metrics.json").read_text() == "ours"  # the last rename wins
    assert [p.name for p in tmp_path.iterdir()] == ["record"]


def test_concurrent_commits_of_one_record_never_fail(tmp_path):
    """The same race for real: two processes commit the same record 3,000 times each (the old replace_directory
    failed 6 times in one such run: 4 FileNotFoundError, 2 "Directory not empty")."""
    script = ("import sys; from pathlib import Path; from kalm_eval import storage\n"
              "target = Path(sys.argv[1])\n"
              "for i in range(3000):\n"
              "    staged = storage.temp_sibling(target, 'tmp'); staged.mkdir()\n"
              "    (staged / 'metrics.json').write_text(sys.argv[2])\n"
              "    storage.replace_directory(staged, target)\n")
    writers = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "record"), name], stderr=subprocess.PIPE,
                                text=True) for name in "ab"]
    errors = [w.communicate(timeout=120)[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors
    assert (tmp_path / "record" / "metrics.json").read_text() in ("a", "b")
    assert [p.name for p in tmp_path.iterdir()] == ["record"]


def _write_raw_beir(root: Path, corpus_lines: list[bytes], queries: list[bytes], qrels: bytes) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_bytes(b"".join(corpus_lines))
    (root / "queries.jsonl").write_bytes(b"".join(queries))
    (root / "qrels" / "test.tsv").write_bytes(qrels)
    return root


def test_invalid_utf8_names_file_and_line_or_is_counted(tmp_path):
    root = _write_raw_beir(
        tmp_path / "bad",
        [b'{"_id": "d1", "title": "", "text": "alpha"}\n', b'{"_id": "d2", "title": "", "text": "beta \xff gamma"}\n'],
        [b'{"_id": "q1", "text": "alpha"}\n'], b"query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    base = ["benchmark=local", f"benchmark.path={root}", "benchmark.label=bad", f"cache_dir={tmp_path / 'cache'}"]
    with pytest.raises(DataError, match=r"corpus.jsonl:2: not valid UTF-8 \(byte 42 of the line: b'\\xff'\)"):
        run_overrides(*base, f"output_dir={tmp_path / 'a'}")
    [out] = run_overrides(*base, "benchmark.invalid_utf8=replace", f"output_dir={tmp_path / 'b'}")
    record = json.loads((out / "metrics.json").read_text())
    assert record["counts"]["data_invalid_utf8_lines"] == 1 and record["counts"]["data_invalid_utf8_at"][0].endswith(":2")
    assert record["protocol"]["dataset"]["input_policies"]["invalid_utf8"] == "replace"


def test_bom_crlf_empty_queries_and_empty_passages_are_counted(tmp_path):
    root = _write_raw_beir(
        tmp_path / "odd",
        [b'\xef\xbb\xbf{"_id": "d1", "title": "", "text": "alpha beta"}\r\n', b'{"_id": "d2", "title": "", "text": ""}\r\n',
         b'{"_id": "d3", "title": "", "text": "alpha gamma"}\r\n'],
        [b'{"_id": "q1", "text": "alpha"}\n', b'{"_id": "q2", "text": "  "}\n'],
        b"query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nq2\td3\t1\r\n")
    run_file = tmp_path / "given.trec"  # the empty passage d2 reaches the reranker through a given run
    run_file.write_text("q1 Q0 d2 1 3 s\nq1 Q0 d1 2 2 s\nq2 Q0 d3 1 1 s\n")
    base = ["benchmark=local", f"benchmark.path={root}", "benchmark.label=odd", f"cache_dir={tmp_path / 'cache'}",
            "retriever=trec_run", f"retriever.path={run_file}", "reranker=kalm", "model=tiny",
            "reranker.latency_batches=0"]
    [out] = run_overrides(*base, f"output_dir={tmp_path / 'keep'}")
    counts = json.loads((out / "metrics.json").read_text())["counts"]
    assert counts["data_files_with_bom"] == 1 and counts["data_crlf_lines"] == 3 + 3
    assert counts["data_empty_queries"] == 1 and counts["data_empty_query_ids"] == ["q2"]
    assert counts["candidate_passages_without_text"] == 1 and counts["candidate_passage_ids_without_text"] == ["d2"]
    assert counts["queries"] == 2
    [dropped] = run_overrides(*base, "benchmark.empty_queries=drop", f"output_dir={tmp_path / 'drop'}")
    record = json.loads((dropped / "metrics.json").read_text())
    assert record["stages"]["reranked"]["queries"] == 1 and record["counts"]["queries"] == 1
    with gzip.open(dropped / "run.reranked.trec.gz", "rt") as fh:
        assert {line.split()[0] for line in fh} == {"q1"}


def test_tampered_corpus_index_or_corpus_file_is_detected_through_the_pipeline(mini, tmp_path, caplog):
    """The on-disk corpus index is checked on open (checksums, id round-trips): a damaged one is named, discarded and
    rebuilt, with the same results; a corpus edited behind the index's back (same size and mtime, so its memoised
    sha256 looks current) is a clear DataError, and the next run hashes and indexes it afresh."""
    import logging

    caplog.set_level(logging.WARNING, logger="kalm_eval.data.docstore")
    first = json.loads((_record(mini, tmp_path / "a") / "metrics.json").read_text())
    [index] = (tmp_path / "cache" / "docstore").glob("*/index-v*")
    build_id = json.loads((index / "meta.json").read_text())["build_id"]
    offsets = index / "offsets.npy"
    payload = bytearray(offsets.read_bytes())
    payload[-16:-8] = bytes(8)  # one document's offset zeroed: same size, different bytes
    offsets.write_bytes(bytes(payload))
    again = json.loads((_record(mini, tmp_path / "b", "force=true") / "metrics.json").read_text())
    assert "offsets.npy does not match its sha256" in caplog.text and "discarding and rebuilding" in caplog.text
    assert json.loads((index / "meta.json").read_text())["build_id"] != build_id
    assert again["stages"] == first["stages"]

    corpus = Path(mini[1].split("=", 1)[1]) / "corpus.jsonl"
    lines = corpus.read_bytes().splitlines(keepends=True)
    lines[1], lines[2] = lines[2], lines[1]  # same bytes in another order: size unchanged, offsets now wrong
    stat = corpus.stat()
    corpus.write_bytes(b"".join(lines))
    os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(DataError, match=r"corpus.jsonl: file changed after it was hashed"):
        _record(mini, tmp_path / "c", "force=true")
    rerun = json.loads((_record(mini, tmp_path / "d", "force=true") / "metrics.json").read_text())
    assert rerun["protocol"]["dataset"]["files"]["corpus"] != first["protocol"]["dataset"]["files"]["corpus"]
    assert rerun["stages"]["first_stage"] == first["stages"]["first_stage"]  # same documents, only reordered
