"""Progress: live tqdm bars on a terminal, periodic log lines (count, rate, ETA) when stderr is not a terminal, and
the same lines in the run's log file (run.log in every record)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios

from kalm_eval.progress import LoggedBar, progress_line
from tests.data.test_beir_readers import write_beir
from tests.test_cli import CORPUS, QRELS, QUERIES


def test_logged_bar_lines(caplog):
    caplog.set_level("INFO", logger="kalm_eval.progress")
    bar = LoggedBar(total=4, desc="score pairs", unit="pair", every=0.0)
    for _ in range(4):
        bar.update(1)
    bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5 and lines[1].startswith("score pairs: 2/4 pair (50%), ")
    assert re.search(r"pair/s, elapsed \d+:\d\d, ETA \d+:\d\d$", lines[1])
    assert progress_line("x", 5, None, "it", 2.0) == "x: 5 it, 2.5 it/s, elapsed 0:02"


def _command(tmp_path):
    root = write_beir(tmp_path / "mini", CORPUS, QUERIES, QRELS)
    return [sys.executable, "-m", "kalm_eval", "benchmark=local", f"benchmark.path={root}", "benchmark.label=mini",
            f"cache_dir={tmp_path / 'cache'}", f"output_dir={tmp_path / 'out'}", "reranker=kalm", "model=tiny",
            "compression=4", "retriever.depth=5", "reranker.chunk_passages=3", "reranker.latency_batches=0"]


def test_redirected_stderr_gets_periodic_lines_and_the_log_file_too(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KALM_EVAL_PROGRESS_SECONDS": "0"}
    done = subprocess.run(_command(tmp_path), capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "\r" not in output  # no redrawn bars when nobody watches a terminal
    for pattern in (r"rerank units: \d+/\d+ unit \(100%\)", r"encode passages: (\d+)/\1 passage \(100%\), [\d.]+ passage/s",
                    r"score pairs: (\d+)/\1 pair \(100%\), [\d.]+ pair/s, elapsed \d+:\d\d, ETA"):
        assert re.search(pattern, output), pattern
    log = (tmp_path / "out" / "run.log").read_text()
    # the record's log gets the same progress lines as stderr, every stage's, up to the units' merge before the commit
    for pattern in (r"bm25 search: (\d+)/\1 query \(100%\)", r"encode passages: (\d+)/\1 passage \(100%\)",
                    r"score pairs: (\d+)/\1 pair \(100%\)", r"\d+ unit\(s\) computed here"):
        assert re.search(pattern, log), (pattern, log[-2000:])
    assert log.rindex("score pairs:") < log.index("unit(s) computed here")


def test_a_terminal_gets_live_bars(tmp_path):
    main, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a 120-column terminal
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(_command(tmp_path), stdout=subprocess.DEVNULL, stderr=secondary, env=env, cwd=tmp_path)
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(main, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert process.wait(timeout=300) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "\r" in screen and re.search(r"score pairs: 100%\|.*\| \d+/\d+ \[", screen)  # tqdm: bar, count, rate, ETA
