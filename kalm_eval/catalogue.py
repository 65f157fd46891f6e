"""The model catalogue: each `conf/model/<preset>.yaml` (shipped as kalm_eval.conf) is the one place a model's hub id,
revision pin, family, checkpoint generation, shape (`d_model`: the width of a pooled passage vector) and published
paper row are written. Everything else reads them from here:

- the published numbers (results/paper/*.yaml) tie a row to our results with `match: {preset: nano}`; `any_revision:
  true` where the paper pins none (baselines, later paper versions): `match_entry` expands it;
- kalm-eval-plan sizes pooled states with the preset's `d_model`;
- the report's Nano reference row (latency, baselines) is `preset("nano").paper_row`;
- the real-shape test models (kalm_eval.testing.shapes) take their width from the preset.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import yaml

from kalm_eval.errors import ConfigError

MODEL_PRESETS = "kalm_eval.conf.model"


@dataclass(frozen=True)
class Preset:
    name: str
    family: str
    hf_id: str | None
    revision: str | None
    generation: str | None  # r1 (the paper's checkpoints) | r2 | None (not a KaLM checkpoint, or unknown)
    paper_row: str | None  # the row of results/paper that reports this checkpoint, if any
    d_model: int | None  # width of one pooled passage vector (KaLM presets)


@functools.cache
def presets() -> dict[str, Preset]:
    found = {}
    for entry in files(MODEL_PRESETS).iterdir():
        if not entry.name.endswith(".yaml"):
            continue
        raw = yaml.safe_load(entry.read_text(encoding="utf-8")) or {}
        name = entry.name[: -len(".yaml")]
        found[name] = Preset(name=name, family=str(raw.get("family", "kalm")), hf_id=raw.get("hf_id"),
                             revision=raw.get("revision"), generation=raw.get("generation"),
                             paper_row=raw.get("paper_row"), d_model=raw.get("d_model"))
    return found


def preset(name: str) -> Preset:
    known = presets()
    if name not in known:
        raise ConfigError(f"model={name!r}: no such preset in conf/model; known: {', '.join(sorted(known))}")
    return known[name]


def match_entry(match: dict[str, Any]) -> dict[str, Any]:
    """A published row's `match` with `preset: <name>` expanded to the preset's {name, hf_id, revision} (no revision
    with `any_revision: true`); other entries (first_stage_model, hf_id) are kept as written."""
    if "preset" not in match:
        return dict(match)
    extra = {k: v for k, v in match.items() if k not in ("preset", "any_revision")}
    chosen = preset(str(match["preset"]))
    expanded = {"name": chosen.name, "hf_id": chosen.hf_id}
    if chosen.revision and not match.get("any_revision"):
        expanded["revision"] = chosen.revision
    return {**expanded, **extra}
