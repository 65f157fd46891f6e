"""Checkpoint generations: the R2 presets compose, refuse (no public pin) or load as stated, with tiny local
checkpoints standing in for the real weights; results carry their generation, and the report never compares a result
with a published row of another generation (one-line refusal)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from kalm_eval.checkpoints import GENERATIONS
from kalm_eval.errors import ConfigError, GenerationMismatch
from kalm_eval.fbnl.spec import parse_model
from kalm_eval.report.build import build_report
from kalm_eval.report.labels import model_identity
from kalm_eval.report.options import ReportOptions
from kalm_eval.report.paper import PaperSpecError, load_paper
from kalm_eval.result import ResultRecord
from kalm_eval.storage import signature_of
from tests.helpers import compose_config, run_overrides
from tests.report.conftest import write_record
from tests.report.helpers import row_starting

REPO = Path(__file__).resolve().parent.parent
R1 = ("nano", "small", "large")
PINNED_R2 = {"nano_r2": "3902d6453ea915007dcbf88fbc8a1d7dd5f8df10", "small_r2": "68b74f09ff2ab5df9b9a9a48c812a81aaff8815e"}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def preset(name: str) -> dict:
    return OmegaConf.to_container(compose_config("reranker=kalm", f"model={name}").model, resolve=True)


@pytest.mark.parametrize("size", R1)
def test_r2_presets_are_the_same_family_and_inputs_as_their_r1_size(size):
    r1, r2 = preset(size), preset(f"{size}_r2")
    assert r1["generation"] == "r1" and r2["generation"] == "r2" and set(GENERATIONS) == {"r1", "r2"}
    assert r2["name"] == f"{size}_r2" and r2["family"] == r1["family"] == "kalm"
    assert r2["hf_id"] == r1["hf_id"] + "-R2"
    assert {k: r2[k] for k in ("doc_max_len", "query_max_len", "dtype", "attn_implementation")} == \
           {k: r1[k] for k in ("doc_max_len", "query_max_len", "dtype", "attn_implementation")}


@pytest.mark.parametrize("name, revision", sorted(PINNED_R2.items()))
def test_pinned_r2_presets_validate_at_their_public_pin(name, revision):
    spec = parse_model(preset(name))
    assert spec.revision == revision and spec.generation == "r2" and spec.path is None


def test_large_r2_has_no_public_pin_and_refuses_without_a_revision():
    values = preset("large_r2")
    assert values["revision"] is None
    with pytest.raises(ConfigError, match=r"model\.revision.*KaLM-Reranker-V1-Large-R2"):
        parse_model(values)
    assert parse_model({**values, "revision": "a" * 40}).revision == "a" * 40  # an explicit pin is accepted
    assert parse_model({**values, "path": "/some/local/copy"}).local_path == Path("/some/local/copy")


def test_large_r2_refusal_is_one_line_from_the_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "kalm_eval", "benchmark=beir/scifact", "retriever=bm25", "reranker=kalm",
                           "model=large_r2", f"cache_dir={tmp_path / 'c'}", f"results_dir={tmp_path / 'r'}"],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "model.revision" in lines[0] and "Large-R2" in lines[0], proc.stderr


def test_unknown_generation_is_refused():
    with pytest.raises(ConfigError, match=r"model\.generation"):
        parse_model({**preset("nano"), "generation": "r3"})


def toy_dataset(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    docs = [{"_id": f"d{i}", "title": "", "text": f"passage about topic {i % 4} with word{i}"} for i in range(16)]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": f"topic {i} word{i}"}) + "\n"
                                                for i in range(4)))
    (root / "qrels/test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(4)))
    return root


@pytest.fixture(scope="module")
def r2_record(tmp_path_factory):
    """model=nano_r2 with a tiny local checkpoint standing in for the real weights (model.path wins over the pin)."""
    from kalm_eval.fbnl.synthetic import build_tiny_model

    tmp = tmp_path_factory.mktemp("r2")
    checkpoint = build_tiny_model(seed=1).save_pretrained(tmp / "KaLM-Reranker-V1-Nano-R2")
    data = toy_dataset(tmp / "toy")
    [out] = run_overrides("benchmark=local", f"benchmark.path={data}", "benchmark.label=toy", "retriever=bm25",
                          "retriever.depth=8", "reranker=kalm", "reranker.latency_batches=0", "model=nano_r2",
                          f"model.path={checkpoint}", "model.dtype=float32", "model.device=cpu", "compression=4",
                          f"cache_dir={tmp / 'cache'}", f"output_dir={tmp / 'out'}")
    return ResultRecord.load(out)


def test_r2_preset_loads_a_local_checkpoint_and_records_its_generation(r2_record):
    identity = model_identity(r2_record)
    assert r2_record.provenance["config"]["model"]["generation"] == "r2"
    assert identity.generation == "r2" and identity.checkpoint == "KaLM-Embedding/KaLM-Reranker-V1-Nano-R2"
    assert identity.weights == "local" and identity.label == "KaLM-Reranker-V1-Nano-R2"


def test_report_refuses_an_r2_result_against_an_r1_row(r2_record, tmp_path):
    root = r2_record.path
    for options in (ReportOptions(paper_row="KaLM-Reranker-V1-Nano"),
                    ReportOptions(paper_rows={"KaLM-Reranker-V1-Nano-R2": "KaLM-Reranker-V1-Nano"})):
        with pytest.raises(GenerationMismatch, match=r"generation-r2 .* 'KaLM-Reranker-V1-Nano' .* generation r1"):
            build_report([root], tmp_path / "rep", options=options, plots=False)
    out = build_report([root], tmp_path / "rep", plots=False)  # unmatched: shown as ours only
    assert "(ours only)" in (tmp_path / "rep" / "paper_table.local.md").read_text() and out.records


def test_report_command_refusal_is_one_line(r2_record, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "kalm_eval.report", "report", f"results={r2_record.path}",
                           f"output_dir={tmp_path / 'rep'}", "paper_row=KaLM-Reranker-V1-Nano", "plots=false"],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "generation" in lines[0] and "KaLM-Reranker-V1-Nano" in lines[0], lines


def _with_generation(path: Path, generation: str, hf_id: str | None = None, name: str | None = None) -> Path:
    raw = json.loads((path / "metrics.json").read_text())
    model = raw["provenance"]["config"]["model"]
    model["generation"] = generation
    if hf_id:
        model.update({"hf_id": hf_id, "name": name})
        inner = raw["protocol"]["reranker"]["model"]
        inner.update({"checkpoint": hf_id, "revision": "c" * 40, "weights_fingerprint": f"hf:{hf_id}@{'c' * 40}"})
        raw["signature"] = signature_of(raw["protocol"])
    (path / "metrics.json").write_text(json.dumps(raw))
    return path


def r2_paper(tmp_path: Path) -> Path:
    """A published-numbers tree whose BEIR table has an R2 row of its own (as published R2 numbers would be added)."""
    root = tmp_path / "paper"
    (root / "v1").mkdir(parents=True)
    row = ("rows:\n  - model: KaLM-Reranker-V1-Nano-R2\n    role: kalm\n    generation: r2\n    size: 0.27B\n"
           "    match: {hf_id: KaLM-Embedding/KaLM-Reranker-V1-Nano-R2}\n    cells: {average: {value: 59.00, tol: 0.5}}\n")
    spec = (REPO / "results/paper/v1/beir.yaml").read_text().replace("rows:\n", row, 1)
    (root / "v1/beir.yaml").write_text(spec)
    return root


def test_each_generation_pairs_only_with_its_own_rows(tmp_path):
    paper_dir = r2_paper(tmp_path)
    paper = load_paper("v1", paper_dir)
    assert paper.generation_of("KaLM-Reranker-V1-Nano-R2") == "r2" and paper.generation_of("KaLM-Reranker-V1-Nano") == "r1"
    assert paper.generation_of("Qwen3-Reranker-4B") is None  # other systems have no generation
    runs = tmp_path / "runs"
    _with_generation(write_record(runs / "r1", model="nano"), "r1")
    _with_generation(write_record(runs / "r2", model="nano", seed=5), "r2", "KaLM-Embedding/KaLM-Reranker-V1-Nano-R2",
                     "nano_r2")
    build_report([runs], tmp_path / "rep", paper_dir=paper_dir, options=ReportOptions(compare_to="average"), plots=False)
    table = (tmp_path / "rep" / "paper_table.beir.md").read_text()
    assert "57.41†" in " ".join(row_starting(table, "nano → KaLM-Reranker-V1-Nano"))  # R1 result vs the R1 row
    assert "59.00†" in " ".join(row_starting(table, "nano_r2 → KaLM-Reranker-V1-Nano-R2"))  # R2 result vs the R2 row
    assert "57.41" not in " ".join(row_starting(table, "nano_r2 → KaLM-Reranker-V1-Nano-R2"))
    with pytest.raises(GenerationMismatch):
        build_report([runs], tmp_path / "rep2", paper_dir=paper_dir, plots=False,
                     options=ReportOptions(paper_rows={"nano": "KaLM-Reranker-V1-Nano-R2"}))


def test_paper_rows_state_their_generation_and_bad_values_are_refused(tmp_path):
    for version in ("v1", "v3"):
        paper = load_paper(version)
        kalm = [row for table in paper.tables.values() for row in table.rows if row.role == "kalm"]
        assert kalm and all(row.generation == "r1" for row in kalm)
        assert all(row.generation is None for table in paper.tables.values() for row in table.rows
                   if row.role in ("baseline", "first_stage"))
    root = tmp_path / "bad"
    (root / "v1").mkdir(parents=True)
    (root / "v1/beir.yaml").write_text((REPO / "results/paper/v1/beir.yaml").read_text().replace(
        "generation: r1", "generation: r3", 1))
    with pytest.raises(PaperSpecError, match="generation must be one of r1, r2"):
        load_paper("v1", root)
