"""PNG plots from a sweep of r = 1, 4, 32 across sizes."""

from __future__ import annotations

from kalm_eval.report.build import build_report
from kalm_eval.report.plots import pareto_front

from .conftest import write_record

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_bytes=10_000):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) >= min_bytes, (path, len(data))
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    assert img.shape[0] > 200 and img.shape[1] > 200 and img.std() > 0.01  # decodable, not blank


def test_plots_from_a_sweep(sweep_tree, tmp_path):
    out = build_report([sweep_tree], tmp_path / "out")
    names = sorted(p.name for p in out.plots)
    assert names == ["ndcg_vs_r.beir.png", "pareto.beir.png"]
    for p in out.plots:
        assert_png(p)
    md = out.report_md.read_text()
    assert "![ndcg_vs_r.beir](plots/ndcg_vs_r.beir.png)" in md and "![pareto.beir](plots/pareto.beir.png)" in md


def test_pareto_skipped_without_latency(tmp_path):
    for r in (1, 4, 32):
        write_record(tmp_path / "res" / f"r{r}", model="nano", ratio=r, latency=None)
    out = build_report([tmp_path / "res"], tmp_path / "out", formats=("md",))
    assert [p.name for p in out.plots] == ["ndcg_vs_r.beir.png"]
    assert any("no warm latency" in w for w in out.warnings)


def test_pareto_front():
    pts = [(1.0, 50.0), (2.0, 49.0), (2.0, 55.0), (5.0, 54.0), (10.0, 60.0)]
    assert pareto_front(pts) == [0, 2, 4]
