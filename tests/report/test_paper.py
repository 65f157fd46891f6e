"""Published numbers as data: every number of the reference's §8 is in results/paper, with source, version, tolerance."""

from __future__ import annotations

import pytest

from kalm_eval.report.labels import LOCAL, RANDOM
from kalm_eval.report.paper import (AVERAGE, FAIL, OK, OKISH, PaperCell, PaperSpecError, available_versions, load_paper,
                                    paper_root, verdict)


def avg(paper, bench, model, ratio=None):
    rows = paper.table(bench).rows_for(model, ratio)
    return rows[0][0].cells[AVERAGE].value if rows else None


def test_versions_are_kept_apart():
    assert {"v1", "v3"} <= set(available_versions())
    v1, v3 = load_paper("v1"), load_paper("v3")
    for paper in (v1, v3):
        for table in paper.tables.values():
            assert table.version == paper.version and table.file.startswith(f"{paper.version}/")
            assert table.source
    assert avg(v1, "beir", "KaLM-Reranker-V1-Nano") == 57.41
    assert avg(v3, "beir", "KaLM-Reranker-V1-Nano", 4) == 58.54


def test_v1_numbers_match_the_reference():
    p = load_paper("v1")
    expected = {
        "beir": {"KaLM-Embedding-V2.5": 53.78, "gte-reranker-base": 56.77, "jina-reranker-v2": 56.26,
                 "KaLM-Reranker-V1-Nano": 57.41, "Qwen3-Reranker-0.6B": 59.36, "KaLM-Reranker-V1-Small": 60.01,
                 "Qwen3-Reranker-4B": 63.50, "KaLM-Reranker-V1-Large": 62.87, "Qwen3-Reranker-8B": 65.11},
        "miracl": {"KaLM-Embedding-V2.5": 60.19, "KaLM-Reranker-V1-Nano": 62.08, "KaLM-Reranker-V1-Small": 66.89,
                   "bge-reranker-v2-gemma": 69.82, "KaLM-Reranker-V1-Large": 70.07},
        "lmeb": {"KaLM-Embedding-V2.5": 50.80, "KaLM-Reranker-V1-Nano": 61.39, "KaLM-Reranker-V1-Small": 63.15,
                 "KaLM-Reranker-V1-Large": 64.16, "Qwen3-Reranker-8B": 66.42},
    }
    for bench, rows in expected.items():
        table = p.table(bench)
        assert table.metric == "nDCG@10" and table.unit == "points" and table.ratio is None
        assert {r.model: r.cells[AVERAGE].value for r in table.rows} == rows
        # per-dataset values are unknown in v1: no dataset cell anywhere
        assert all(set(r.cells) == {AVERAGE} for r in table.rows)
        assert all(r.cells[AVERAGE].tol is not None for r in table.rows)
    assert len(p.table("beir").columns) == 13 and len(p.table("miracl").columns) == 18
    costs = {m: c.value for m, c in p.costs[0].values.items()}
    assert costs == {"KaLM-Reranker-V1-Nano": 1.0, "KaLM-Reranker-V1-Small": 6.9, "KaLM-Reranker-V1-Large": 43.7,
                     "gte-reranker-base": 11.9, "jina-reranker-v2": 11.9, "Qwen3-Reranker-0.6B": 42.4,
                     "bge-reranker-v2-gemma": 81.3, "Qwen3-Reranker-4B": 236.8, "Qwen3-Reranker-8B": 539.7}
    assert all(c.tol is None for c in p.costs[0].values.values())  # analytic: display only
    roc = {(f.model, f.ratio): f.cell.value for fs in p.figures for f in fs.items}
    assert roc == {("KaLM-Reranker-V1-Nano", 2): 0.871, ("KaLM-Reranker-V1-Nano", 32): 0.832,
                   ("KaLM-Reranker-V1-Large", 2): 0.952, ("KaLM-Reranker-V1-Large", 32): 0.948}


def test_v3_ratio_rows():
    beir = load_paper("v3").table("beir")
    sweep = {r.ratio or beir.ratio: r.cells[AVERAGE].value for r in beir.rows
             if r.model == "KaLM-Reranker-V1-Nano" and not r.variant}
    assert sweep == {4: 58.54, 2: 58.75, 8: 58.17, 16: 57.47, 32: 56.74, 64: 55.88, 128: 55.11}
    assert beir.rows_for("KaLM-Reranker-V1-Nano", 8)[0][0].cells[AVERAGE].value == 58.17
    assert beir.rows_for("KaLM-Reranker-V1-Nano", 1) == []  # not published at r=1
    # v1: ratio unknown -> matches any r, flagged by paper ratio None
    assert load_paper("v1").table("beir").rows_for("KaLM-Reranker-V1-Nano", 32)[0][1] is None


@pytest.mark.parametrize("ours, expected", [
    (0.5741, (0.0, OK)), (0.57409, (0.0, OK)), (0.5791, (0.5, OK)), (0.5691, (-0.5, OK)),
    (0.5792, (0.51, OKISH)), (0.5816, (0.75, OKISH)), (0.5817, (0.76, FAIL)), (0.50, (-7.41, FAIL)),
])
def test_verdict_rule(ours, expected):
    cell = PaperCell(value=57.41, scale=100.0, precision=2, tol=0.5, okish_factor=1.5)
    delta, v = verdict(ours, cell)
    assert delta == pytest.approx(expected[0]) and v == expected[1]


def test_display_only_cell_has_no_verdict():
    assert verdict(0.5, PaperCell(1.0, 1.0, 1, None, 1.5))[1] is None


NANO, NANO_REV = "KaLM-Embedding/KaLM-Reranker-V1-Nano", "1d3dcd79115a77b91b2ece798f536880d2115e48"


def test_model_matching():
    p = load_paper("v1")
    assert p.match_model(NANO, NANO_REV) == "KaLM-Reranker-V1-Nano"
    assert p.match_model(NANO) == "KaLM-Reranker-V1-Nano"  # no revision stated: the hub id decides
    assert p.match_model("KaLM-Embedding/KaLM-Reranker-V1-Large", "bc5cb8fe5a266b6d0b5ffdb9da4c06c950ae242f") \
        == "KaLM-Reranker-V1-Large"
    assert p.match_model(NANO, "deadbeef") is None  # another revision of the repo
    assert p.match_model("KaLM-Embedding/KaLM-Reranker-V1-Small-R2") is None  # the later release
    # a local directory loaded under the nano config keeps the hub id, but the weights are not the paper's
    assert p.match_model(NANO, None, LOCAL) is None
    assert p.match_model("random:tiny", None, RANDOM) is None and p.match_model(None) is None


def test_baseline_rows_match_by_hub_id():
    """Baseline-family records match their paper rows (any revision: the paper pins none)."""
    v1 = load_paper("v1")
    expected = {"Qwen/Qwen3-Reranker-0.6B": "Qwen3-Reranker-0.6B", "Qwen/Qwen3-Reranker-4B": "Qwen3-Reranker-4B",
                "Qwen/Qwen3-Reranker-8B": "Qwen3-Reranker-8B", "BAAI/bge-reranker-v2-gemma": "bge-reranker-v2-gemma",
                "Alibaba-NLP/gte-multilingual-reranker-base": "gte-reranker-base",
                "jinaai/jina-reranker-v2-base-multilingual": "jina-reranker-v2"}
    for hub_id, row in expected.items():
        assert v1.match_model(hub_id, "any-revision") == row
    assert v1.size_of("Qwen3-Reranker-4B") == "4B" and v1.size_of("bge-reranker-v2-gemma") == "2.5B"
    assert v1.match_shape("small") == "KaLM-Reranker-V1-Small" and v1.match_shape("qwen") is None
    assert load_paper("v3").match_model("Qwen/Qwen3-Reranker-8B") == "Qwen3-Reranker-8B"


def test_published_numbers_ship_with_the_package():
    root = paper_root()
    assert (root / "v1" / "beir.yaml").is_file() and "v1" in available_versions()


def test_first_stage_matching():
    p = load_paper("v1")
    assert p.match_first_stage("KaLM-Embedding/KaLM-embedding-multilingual-mini-instruct-v2.5") == "KaLM-Embedding-V2.5"
    assert p.match_first_stage(None) is None


def test_column_matching():
    beir = load_paper("v1").table("beir")
    assert beir.column_for("beir/scifact").name == "SciFact"
    assert beir.column_for("beir/webis-touche2020").name == "Touche2020"
    assert beir.column_for("beir/msmarco") is None
    assert beir.column_for("miracl/en") is None
    assert load_paper("v1").table("lmeb").column_for("lmeb/LoCoMo").subsets == 5


def test_malformed_specs_are_refused(tmp_path):
    d = tmp_path / "v1"
    d.mkdir()
    base = ("kind: table\npaper: {id: x, version: v1}\nsource: s\nbenchmark: beir\nmetric: nDCG@10\nunit: points\n"
            "precision: 2\ncolumns: [{id: beir/scifact, name: SciFact}]\n")
    (d / "t.yaml").write_text(base + "rows: [{model: m, cells: {average: {value: 50.0}}}]\n")
    with pytest.raises(PaperSpecError, match="tol"):
        load_paper("v1", tmp_path)
    (d / "t.yaml").write_text(base + "rows: [{model: m, cells: {beir/nq: {value: 50.0, tol: 0.5}}}]\n")
    with pytest.raises(PaperSpecError, match="not a column"):
        load_paper("v1", tmp_path)
    (d / "t.yaml").write_text(base.replace("version: v1", "version: v3") + "rows: []\n")
    with pytest.raises(PaperSpecError, match="sits in v1"):
        load_paper("v1", tmp_path)
    with pytest.raises(PaperSpecError, match="no published numbers"):
        load_paper("v2")
