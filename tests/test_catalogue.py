"""The model catalogue: every preset states its facts once, and what reads them (published rows, the plan, the
real-shape test models) reads them from the preset."""

from __future__ import annotations

import pytest

from kalm_eval.catalogue import match_entry, preset, presets
from kalm_eval.errors import ConfigError
from kalm_eval.report.paper import load_paper


def test_every_published_row_that_names_a_preset_resolves_to_its_pins():
    for version in ("v1", "v3"):
        paper = load_paper(version)
        for table in paper.tables.values():
            for row in table.rows:
                if "hf_id" in row.match:
                    chosen = preset(row.match["name"])
                    assert row.match["hf_id"] == chosen.hf_id
                    # v1 KaLM rows are pinned; the baselines and v3 match any revision
                    pinned = version == "v1" and chosen.family == "kalm"
                    assert row.match.get("revision") == (chosen.revision if pinned else None), (version, row.model)
                    if chosen.paper_row:
                        assert chosen.paper_row == row.model, (chosen.name, row.model)


def test_a_paper_row_names_each_r1_kalm_preset_and_no_r2_one():
    v1 = {row.model for table in load_paper("v1").tables.values() for row in table.rows}
    for name in ("nano", "small", "large"):
        assert preset(name).paper_row in v1 and preset(name).generation == "r1"
    for name in ("nano_r2", "small_r2", "large_r2"):
        assert preset(name).paper_row is None and preset(name).generation == "r2"
        assert preset(name).d_model == preset(name.removesuffix("_r2")).d_model  # same architecture


def test_match_entry_expands_a_preset_and_keeps_other_entries():
    nano = preset("nano")
    assert match_entry({"preset": "nano"}) == {"name": "nano", "hf_id": nano.hf_id, "revision": nano.revision}
    assert match_entry({"preset": "nano", "any_revision": True}) == {"name": "nano", "hf_id": nano.hf_id}
    assert match_entry({"first_stage_model": "x/y"}) == {"first_stage_model": "x/y"}
    with pytest.raises(ConfigError, match="model='nnao': no such preset"):
        match_entry({"preset": "nnao"})


def test_the_real_shape_widths_are_the_presets():
    from kalm_eval.fbnl.synthetic import NANO_TEXT_CONFIG
    from kalm_eval.testing.shapes import LARGE_TEXT_CONFIG, SMALL_TEXT_CONFIG

    assert NANO_TEXT_CONFIG["hidden_size"] == preset("nano").d_model == 640  # reference §2: Document Token Dim.
    assert SMALL_TEXT_CONFIG["hidden_size"] == 1152 and LARGE_TEXT_CONFIG["hidden_size"] == 2560
    assert {name for name, p in presets().items() if p.family == "kalm" and p.d_model is None} == set()
