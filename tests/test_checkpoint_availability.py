"""A checkpoint that is neither cached nor downloadable is one line, before any work: offline (HF_HUB_OFFLINE), an
unreachable hub (fast: one request, no retries), a gated or unknown repository; a cached one needs no hub at all."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kalm_eval import checkpoints
from kalm_eval.checkpoints import HubCheckpoint, check_available
from kalm_eval.errors import CheckpointUnavailable
from tests.conftest import shared_dataset

NANO = HubCheckpoint("KaLM-Embedding/KaLM-Reranker-V1-Nano", "1d3dcd79115a77b91b2ece798f536880d2115e48",
                     "model=nano", "model.path")
WAYS_OUT = ("Ways out: model.path=<a local copy>, or download it where the hub is reachable (`hf download "
            "KaLM-Embedding/KaLM-Reranker-V1-Nano --revision 1d3dcd79115a77b91b2ece798f536880d2115e48`), bring that "
            "cache here (HF_HOME) and run with HF_HUB_OFFLINE=1")


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(checkpoints, "_AVAILABLE", set())
    return tmp_path / "hub"


def test_offline_and_not_cached_is_one_line_naming_model_revision_and_ways_out(empty_hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointUnavailable) as err:
        check_available([NANO])
    assert str(err.value) == (
        "model=nano: checkpoint KaLM-Embedding/KaLM-Reranker-V1-Nano@1d3dcd79115a77b91b2ece798f536880d2115e48 is not "
        f"in the local Hugging Face cache ({empty_hub_cache}) and cannot be downloaded: HF_HUB_OFFLINE is set, so "
        f"nothing is downloaded. {WAYS_OUT}")


def test_a_cached_revision_needs_no_hub(empty_hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = empty_hub_cache / "models--KaLM-Embedding--KaLM-Reranker-V1-Nano" / "snapshots" / NANO.revision
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    check_available([NANO, NANO])
    other = HubCheckpoint(NANO.repo_id, "0" * 40, "model=nano", "model.path")  # another revision is not cached
    with pytest.raises(CheckpointUnavailable, match=r"^model=nano: checkpoint KaLM-Embedding/KaLM-Reranker-V1-Nano@0{40} "):
        check_available([NANO, other])


def test_every_missing_checkpoint_is_named(empty_hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = HubCheckpoint("KaLM-Embedding/KaLM-embedding-multilingual-mini-instruct-v2.5",
                            "6a4cfc1084cb459ebd4729b53a8656a61448c720", "retriever=kalm_embedding", "retriever.model")
    with pytest.raises(CheckpointUnavailable) as err:
        check_available([encoder, NANO])
    message = str(err.value)
    assert message.startswith("retriever=kalm_embedding: checkpoint KaLM-Embedding/KaLM-embedding-multilingual-mini-"
                              "instruct-v2.5@6a4cfc1084cb459ebd4729b53a8656a61448c720 is not in the local")
    assert "Ways out: retriever.model=<a local copy>" in message and "\n" not in message
    assert message.endswith(f"(also unavailable: model=nano {NANO.repo_id}@{NANO.revision})")


class _FakeHub(http.server.BaseHTTPRequestHandler):
    """Answers like the hub for three repositories: gated, unknown, unknown revision; serves the fourth."""

    def do_HEAD(self):  # noqa: N802 (http.server's name)
        codes = {"/gated/": (401, "GatedRepo"), "/nobody/": (404, "RepoNotFound"), "/norev/": (404, "RevisionNotFound")}
        status, code = next((v for k, v in codes.items() if self.path.startswith(k)), (200, None))
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        else:
            self.send_header("ETag", '"abc"')
            self.send_header("X-Repo-Commit", "0" * 40)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def _check_in_subprocess(endpoint: str, repo: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """HF_ENDPOINT is read when huggingface_hub is imported: a fresh interpreter per endpoint."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=endpoint, HF_HUB_CACHE=str(tmp_path / "hub"), KALM_EVAL_HUB_TIMEOUT="5")
    code = ("import sys; from kalm_eval.checkpoints import HubCheckpoint, check_available\n"
            "from kalm_eval.errors import CheckpointUnavailable\n"
            f"try: check_available([HubCheckpoint({repo!r}, {'1' * 40!r}, 'model=x', 'model.path')])\n"
            "except CheckpointUnavailable as err: print(err); sys.exit(2)\n")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_unreachable_gated_and_unknown_repositories_each_say_why(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        expected = {"gated/model": "the repository is gated: accept its terms on its hub page and log in",
                    "nobody/model": "the hub has no such repository (or it is private: log in",
                    "norev/model": f"the repository has no revision {'1' * 40}"}
        for repo, reason in expected.items():
            done = _check_in_subprocess(endpoint, repo, tmp_path)
            assert done.returncode == 2 and f"cannot be downloaded: {reason}" in done.stdout, done.stdout + done.stderr
        served = _check_in_subprocess(endpoint, "open/model", tmp_path)
        assert served.returncode == 0, served.stdout + served.stderr
    finally:
        server.shutdown()
    with socket_closed() as port:  # nothing listens: refused at once, no retries
        started = time.perf_counter()
        done = _check_in_subprocess(f"http://127.0.0.1:{port}", "open/model", tmp_path)
        assert done.returncode == 2 and f"cannot be downloaded: the hub (http://127.0.0.1:{port}) cannot be reached " \
            "within 5 s (" in done.stdout, done.stdout + done.stderr
        assert time.perf_counter() - started < 30 and "Retry" not in done.stdout + done.stderr


class socket_closed:
    """A local port nobody listens on."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    def __exit__(self, *exc) -> None:
        pass


@pytest.mark.parametrize("overrides", [
    ["reranker=kalm", "model=nano"],
    ["reranker=qwen3", "model=qwen3_reranker_0.6b"],
    ["+experiment=paper_beir", "model=nano", "benchmark=beir/scifact", "retriever=kalm_embedding"],
])
@pytest.mark.parametrize("offline", [True, False])
def test_cli_stops_before_any_work_with_one_line(tmp_path, overrides, offline):
    """The real presets on a node without the hub: exit 2, one line, nothing of the first stage computed."""
    data = shared_dataset("beir", "scifact").parent.parent
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HUB_CACHE=str(tmp_path / "hub"), OMP_NUM_THREADS="1")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    else:
        with socket_closed() as port:
            env["HF_ENDPOINT"] = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "kalm_eval", "retriever=bm25", *overrides, f"data_dir={data}",
                           f"cache_dir={tmp_path / 'cache'}", f"results_dir={tmp_path / 'results'}", "progress=false"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - started
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kalm-eval: error: "), done.stderr[-3000:]
    first = "retriever=kalm_embedding" if "+experiment=paper_beir" in overrides else overrides[1]
    assert lines[0].startswith(f"kalm-eval: error: {first}: checkpoint ")
    assert ("HF_HUB_OFFLINE is set" if offline else "cannot be reached within") in lines[0]
    assert list((tmp_path / "cache").iterdir()) == []  # no corpus index, no first stage, not even a log
    assert seconds < 60, seconds
