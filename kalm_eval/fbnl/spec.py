"""What KaLM checkpoint to load and how (the `model` config group of the kalm reranker), validated without torch.

Checkpoint pins live in conf/model/{nano,small,large}.yaml (first generation, r1) and
conf/model/{nano,small,large}_r2.yaml (second generation, r2) only; `model.path=<dir>` loads a local checkpoint instead
of the hub id; `name: tiny` with neither builds the random tiny model (fbnl/synthetic.py) for offline runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kalm_eval.checkpoints import (DTYPES, FP16_MESSAGE, FP16_NAMES, GENERATIONS, resolve_device, resolve_dtype,
                                   torch_dtype)
from kalm_eval.errors import ConfigError
from kalm_eval.knobs import from_mapping, knob
SYNTHETIC = ("tiny",)
# attn_implementation=auto: the kernel measured fastest per device type (fbnl/attention.py, docs/cost.md).
AUTO_ATTENTION = {"cpu": "grouped", "cuda": "sdpa"}


def resolve_attn_implementation(name: str, device: str) -> str:
    """The kernel an attn_implementation name stands for on `device` ("auto": AUTO_ATTENTION, else sdpa)."""
    if name != "auto":
        return name
    return AUTO_ATTENTION.get(resolve_device(device).type, "sdpa")


@dataclass(frozen=True)
class ModelSpec:
    name: str = knob("nano", doc="preset name (nano | small | large | nano_r2 | small_r2 | large_r2 | tiny) or any "
                                 "label for a custom checkpoint")
    family: str = knob("kalm", choices=("kalm",))
    # logged, not keyed: the weights (hub id + revision, or their content fingerprint) identify a run; the generation
    # says which published rows a result may be compared with (report/matching.py)
    generation: str | None = knob(None, choices=GENERATIONS, logged=True,
                                  doc="checkpoint generation: r1 (the paper's) | r2 (the -R2 releases) | null = unknown")
    hf_id: str | None = knob(None, doc="hub id; needs a pinned revision")
    revision: str | None = knob(None, doc="hub commit sha")
    path: str | None = knob(None, doc="local checkpoint directory; wins over hf_id")
    dtype: str = knob("auto", doc="auto = bfloat16 on CUDA, float32 on CPU (the reference's defaults)")
    device: str = knob("auto", logged=True, doc="auto | cpu | cuda | cuda:N")
    doc_max_len: int = knob(1024, minimum=1)
    query_max_len: int = knob(512, minimum=1)
    attn_implementation: str = knob("auto", choices=("auto", "grouped", "sdpa", "eager"),
                                    doc="attention kernel; auto = grouped on CPU, sdpa on CUDA (recorded resolved)")
    seed: int = knob(0, minimum=0, doc="synthetic models only")
    # catalogue facts (kalm_eval.catalogue), logged: the checkpoint itself is what identifies a run
    paper_row: str | None = knob(None, logged=True, doc="the published row of this checkpoint (results/paper)")
    d_model: int | None = knob(None, minimum=1, logged=True,
                               doc="width of a pooled passage vector (the preset's shape; kalm-eval-plan sizes with it)")

    def __post_init__(self) -> None:
        if str(self.dtype).lower() in FP16_NAMES:
            raise ConfigError(f"model.dtype={self.dtype!r} is not supported. {FP16_MESSAGE}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"model.dtype={self.dtype!r}: must be one of {', '.join(DTYPES)}")
        if self.path is None and self.hf_id is None and self.name not in SYNTHETIC:
            raise ConfigError(f"model: {self.name!r} names no checkpoint: set model.hf_id (+ model.revision) or "
                              f"model.path, or use a preset (model=nano|small|large|nano_r2|small_r2|large_r2|tiny)")
        if self.path is None and self.hf_id is not None and not self.revision:
            raise ConfigError(f"model.revision: the hub checkpoint {self.hf_id} needs a pinned revision (a commit "
                              "sha), so results name the exact weights; pass model.revision=<commit> (or model.path=<dir>)")

    def hub_source(self) -> tuple[str, str | None] | None:
        """(hub id, revision) when the checkpoint comes from the hub; None for model.path or a synthetic model."""
        return (self.hf_id, self.revision) if self.path is None and self.hf_id is not None else None

    @property
    def synthetic(self) -> bool:
        return self.path is None and self.hf_id is None

    @property
    def local_path(self) -> Path | None:
        return None if self.path is None else Path(self.path)

    def resolved_device(self):
        return resolve_device(self.device)

    def resolved_dtype(self) -> str:
        return resolve_dtype(self.dtype, self.device)

    def resolved_attn_implementation(self) -> str:
        return resolve_attn_implementation(self.attn_implementation, self.device)

    def torch_dtype(self):
        return torch_dtype(self.resolved_dtype())


def parse_model(values: dict) -> ModelSpec:
    """The `model` config group of the kalm reranker, validated (the registry's parser)."""
    return from_mapping(ModelSpec, values, prefix="model")
