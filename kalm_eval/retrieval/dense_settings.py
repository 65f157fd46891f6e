"""The `retriever=dense` / `retriever=kalm_embedding` knobs (validated by kalm_eval.knobs), shared by the retriever
(dense.py), its encoders (dense_encoders.py) and its shards (dense_shards.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kalm_eval.knobs import knob

STORE_DTYPES = ("auto", "float16", "bfloat16", "float32")


@dataclass(frozen=True)
class DenseSettings:
    model: str  # HF id or local dir; "random:<dim>" = deterministic random vectors (benchmarks of the search path)
    revision: str | None = None
    max_seq_length: int | None = 256
    # How a query is presented to the encoder; KaLM-Embedding-V2.5 uses "Instruct: {instruction}\nQuery:{query}".
    query_template: str = "{query}"
    instruction: str = ""
    normalize: bool = True
    dtype: str = "float32"
    # Corpus embeddings on disk: "auto" = the model's dtype (lossless: bfloat16 shards for the paper's bfloat16
    # KaLM-Embedding, float32 for float32 models), or float16 / bfloat16 / float32 (float16 halves a float32
    # model's shards and moves scores by ~1e-4). Keyed.
    store_dtype: str = knob("auto", choices=STORE_DTYPES)
    # Logged, not keyed: they don't change the numbers.
    batch_size: int = knob(64, minimum=1, logged=True)
    device: str = knob("auto", logged=True)
    # passages per embedding shard (a unit of work): part of the shard cache key only, the search is exact whatever it is
    shard_docs: int = knob(65536, minimum=1, logged=True)

    def hub_source(self) -> tuple[str, str | None] | None:
        """(hub id, revision) when the encoder comes from the hub; None for a local folder or random vectors."""
        if self.model.startswith("random:") or Path(self.model).expanduser().is_dir():
            return None
        return self.model, self.revision
