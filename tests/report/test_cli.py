"""The two console scripts (Hydra apps): exit codes, outputs, argument errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kalm_eval.report.cli import compare_main, report_main

from .conftest import write_record
from .test_compare import planted


def run_inprocess(monkeypatch, entry, *args) -> int:
    monkeypatch.setattr(sys, "argv", ["prog", *args])
    with pytest.raises(SystemExit) as exc:
        entry()
    return exc.value.code


@pytest.fixture
def gate_dirs(tmp_path):
    base, cand = planted()
    return {
        "base": write_record(tmp_path / "base", values=base),
        "drop": write_record(tmp_path / "drop", values=cand, identity={"model": {"checkpoint": "local", "dtype": "bfloat16",
                                                                                 "weights_fingerprint": "sha256:" + "1" * 64}}),
        "rerun": write_record(tmp_path / "rerun", values=base.copy(), finished_at="2026-11-27T00:00:00+00:00"),
        "r8": write_record(tmp_path / "r8", values=base, ratio=8),
    }


def test_compare_exit_codes(monkeypatch, gate_dirs, tmp_path, capsys):
    d = gate_dirs
    out = tmp_path / "cmp"
    assert run_inprocess(monkeypatch, compare_main, f"baseline={d['base']}", f"candidate={d['drop']}", f"output_dir={out}") == 1
    text = capsys.readouterr().out
    assert "FAIL (regression)" in text and "REGRESSION" in text
    md = (out / "compare.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| beir/scifact"))
    assert md.startswith("# Regression gate: FAIL") and [c.strip() for c in row.strip("|").split("|")][:3] == \
        ["beir/scifact", "reranked", "300"]
    assert json.loads((out / "compare.json").read_text())["datasets"][0]["regression"] is True
    assert "## Per-query drill-down" in md and len(json.loads((out / "compare.json").read_text())["drilldown"]) == 1
    assert "Regression gate: " in (out / "compare.html").read_text() and "drill-down" in (out / "compare.html").read_text()
    assert run_inprocess(monkeypatch, compare_main, f"baseline={d['base']}", f"candidate={d['drop']}", "drilldown=-1",
                         "output_dir=null") == 2

    assert run_inprocess(monkeypatch, compare_main, f"baseline={d['base']}", f"candidate={d['rerun']}", "output_dir=null") == 0
    assert run_inprocess(monkeypatch, compare_main, f"baseline={d['base']}", f"candidate={d['r8']}", "output_dir=null") == 2
    assert "reranker.compression: baseline 4, candidate 8" in capsys.readouterr().out
    assert run_inprocess(monkeypatch, compare_main, f"baseline={d['base']}", f"candidate={d['drop']}", "margin=0.05",
                         "test=bootstrap", "n_resamples=2000", "seed=3", "output_dir=null") == 0
    assert run_inprocess(monkeypatch, compare_main, f"baseline={d['base']}", "output_dir=null") == 2  # missing candidate
    assert run_inprocess(monkeypatch, compare_main, f"baseline={d['base']}", f"candidate={tmp_path / 'nope'}",
                         "output_dir=null") == 2


def test_report_console_script(sweep_tree, tmp_path):
    """The installed entry point via `python -m kalm_eval.report` (same function as `kalm-eval-report`)."""
    out = tmp_path / "rep"
    proc = subprocess.run([sys.executable, "-m", "kalm_eval.report", "report", f"results={sweep_tree}", f"output_dir={out}",
                           "compare_to=average", "formats=[md,csv]", "plots=false"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert (out / "report.md").exists() and (out / "paper_table.beir.csv").exists()
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert not (out / "paper_table.beir.tex").exists()
    md = (out / "paper_table.beir.md").read_text()
    assert "nano → KaLM-Reranker-V1-Nano" in md and "57.41†" in md
    bad = subprocess.run([sys.executable, "-m", "kalm_eval.report", "report", f"results={sweep_tree}", f"output_dir={out}",
                          "compare_to=nonsense"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2


def test_report_in_process_with_paper_rows(monkeypatch, tmp_path):
    write_record(tmp_path / "res/a", model="tiny", ratio=4)
    out = tmp_path / "rep"
    monkeypatch.setattr(sys, "argv", ["kalm-eval-report", f"results={tmp_path / 'res'}", f"output_dir={out}",
                                      "paper_rows={tiny:KaLM-Reranker-V1-Small}", "compare_to=average", "plots=false"])
    report_main()
    assert "tiny → KaLM-Reranker-V1-Small (chosen)" in (out / "paper_table.beir.md").read_text()


def test_report_with_cost_benchmark_and_argument_errors(monkeypatch, tmp_path):
    from .test_roc_cascade_cost import cost_file

    write_record(tmp_path / "res/n", model="nano", ratio=4)
    out = tmp_path / "rep"
    common = [f"results={tmp_path / 'res'}", f"output_dir={out}", "plots=false", "formats=[md]"]
    monkeypatch.setattr(sys, "argv", ["kalm-eval-report", *common, f"cost_benchmark={cost_file(tmp_path)}"])
    report_main()
    assert "1.00x (NVIDIA H200, bfloat16)" in (out / "latency.md").read_text()
    broken = tmp_path / "broken.json"
    broken.write_text("{}")
    assert run_inprocess(monkeypatch, report_main, *common, f"cost_benchmark={broken}") == 2
    assert run_inprocess(monkeypatch, report_main, *common, "export=parquet") == 2
    assert run_inprocess(monkeypatch, report_main, *common, "paper_row=No-Such-Row") == 2


def test_report_of_a_directory_that_does_not_exist_is_an_error(monkeypatch, tmp_path, capsys):
    """A mistyped `results=` is one line and exit 2 (as kalm-eval-compare), not an empty report; nothing written."""
    write_record(tmp_path / "res/n", model="nano", ratio=4)
    out = tmp_path / "rep"
    missing = tmp_path / "reslts"
    for results in (str(missing), f"[{tmp_path / 'res'},{missing}]"):
        assert run_inprocess(monkeypatch, report_main, f"results={results}", f"output_dir={out}", "plots=false") == 2
        assert run_inprocess(monkeypatch, report_main, f"results={results}", f"output_dir={out}", "export=mteb") == 2
    printed = capsys.readouterr()
    lines = [line for line in (printed.out + printed.err).splitlines() if line.strip()]
    assert lines and all(line.endswith(f"results={missing}: no such results directory") for line in lines), lines
    assert not out.exists()
