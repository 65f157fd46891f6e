"""What the report calls things, read from exactly the keys the pipeline writes.

- the reranker model: protocol.reranker.model (the reranker's identity: its "checkpoint" block with checkpoint,
  revision, dtype, weights_fingerprint ...; older records: under "model" for KaLM, flat for baselines), the preset name
  provenance.config.model.name (nano / small / qwen3_reranker_0.6b ...) and, for a local checkpoint, the folder
  provenance.config.model.path, and the checkpoint generation provenance.config.model.generation (r1 | r2; absent =
  unknown, e.g. records written before generations were recorded, random or unnamed local checkpoints);
- the first stage: protocol.first_stage.source {kind, model | system, ...} and depth;
- the rerank plan: protocol.reranker {compression, depth, cascade}."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from kalm_eval.result import ResultRecord
from kalm_eval.storage import canonical_json, sha256_text

# Per-dataset parts of a first-stage source (the dataset's instruction, a given run file's path and hash): a row
# of the paper table is the same first stage across datasets, so they are left out of its key.
FIRST_STAGE_PER_DATASET = ("instruction", "path", "sha256")
HUB, LOCAL, RANDOM = "hub", "local", "random"


@dataclass(frozen=True)
class ModelIdentity:
    """The reranker model of one record."""

    family: str  # reranker registry name: kalm | qwen3 | cross_encoder | bge_gemma
    preset: str | None  # provenance.config.model.name
    checkpoint: str | None
    revision: str | None
    dtype: str | None
    weights: str  # hub | local | random
    local_dir: str | None
    fingerprint: str | None  # weights_fingerprint: "hf:<id>@<rev>", "sha256:<hex>" (local), "random:..."
    key: str  # short hash of the whole identity: two different weights or settings never share a key
    generation: str | None = None  # checkpoint generation (kalm_eval.checkpoints.GENERATIONS); None = unknown

    @property
    def label(self) -> str:
        if self.weights == LOCAL:
            return PurePath(self.local_dir).name if self.local_dir else f"{self.preset or self.checkpoint} (local)"
        if self.preset:
            return self.preset
        if self.checkpoint:
            return self.checkpoint.split(":", 1)[-1] if self.weights == RANDOM else self.checkpoint.rsplit("/", 1)[-1]
        return f"{self.family} (unnamed)"


def loaded_model(identity: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint part of a reranker identity: its "checkpoint" block (rerank.base.Identity); records written
    before that record existed have it under "model" (KaLM) or at the top level (the baselines)."""
    if isinstance(identity.get("checkpoint"), dict):
        return identity["checkpoint"]
    if "checkpoint" not in identity and isinstance(identity.get("model"), dict):
        return identity["model"]
    return identity


def weights_origin(checkpoint: str | None, fingerprint: str | None) -> str:
    """hub (a pinned hub revision), local (a folder, fingerprinted by content) or random (a test model)."""
    fingerprint = fingerprint or ""
    if fingerprint.startswith("random:") or (checkpoint or "").startswith("random:"):
        return RANDOM
    if fingerprint.startswith("sha256:") or checkpoint == "local":
        return LOCAL
    return HUB


def model_identity(record: ResultRecord) -> ModelIdentity | None:
    reranker = record.reranker
    if reranker is None:
        return None
    identity = reranker.get("model") if isinstance(reranker.get("model"), dict) else {}
    model = loaded_model(identity)
    config_model = (record.provenance.get("config") or {}).get("model") or {}
    checkpoint, fingerprint = _text(model.get("checkpoint")), _text(model.get("weights_fingerprint"))
    return ModelIdentity(family=record.reranker_name or "kalm", preset=_text(config_model.get("name")),
                         checkpoint=checkpoint, revision=_text(model.get("revision")), dtype=_text(model.get("dtype")),
                         weights=weights_origin(checkpoint, fingerprint), local_dir=_text(config_model.get("path")),
                         fingerprint=fingerprint,
                         key=sha256_text(canonical_json({"name": record.reranker_name, "model": identity}))[:12],
                         generation=_text(config_model.get("generation")))


def first_stage_source(record: ResultRecord) -> dict[str, Any]:
    source = record.first_stage.get("source")
    return source if isinstance(source, dict) else {}


def first_stage_label(record: ResultRecord) -> str:
    """The retriever's model (dense) or system (a given run), else its kind (bm25)."""
    source = first_stage_source(record)
    named = source.get("model") or source.get("system")
    if named:
        return PurePath(str(named)).name
    return str(source.get("kind") or "first stage")


def first_stage_key(record: ResultRecord) -> str:
    source = {k: v for k, v in first_stage_source(record).items() if k not in FIRST_STAGE_PER_DATASET}
    return sha256_text(canonical_json({"source": source, "depth": record.first_stage_depth}))[:12]


def cascade_steps(record: ResultRecord) -> list[tuple[int, int | None]]:
    """[(depth, compression)] of a cascade (empty for a single-stage rerank)."""
    steps = (record.reranker or {}).get("cascade") or []
    return [(int(step["depth"]), None if step.get("compression") is None else int(step["compression"])) for step in steps]


def step_text(depth: int | None, compression: int | None) -> str:
    return f"top-{depth}" + ("" if compression is None else f" @ r={compression}")


def plan_text(record: ResultRecord) -> str | None:
    """The rerank plan: "top-100 @ r=4", "top-100 @ r=32 → top-20 @ r=2" (cascade), "top-100" (no MEP)."""
    if not record.reranked:
        return None
    steps = cascade_steps(record)
    if steps:
        return " → ".join(step_text(depth, r) for depth, r in steps)
    return step_text(record.rerank_depth, record.compression)


def cascade_text(record: ResultRecord) -> str | None:
    return plan_text(record) if cascade_steps(record) else None


def instruction_hash(text: str | None) -> str | None:
    return None if text is None else sha256_text(text)[:12]


def _text(value: Any) -> str | None:
    return None if value in (None, "") else str(value)
