"""Dense first stage: any sentence-transformers model, exact cosine search."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kalm_eval.data import Dataset
from kalm_eval.records import RankedList
from kalm_eval.storage import sha256_file
from kalm_eval.retrieval.runfile import rank


@dataclass(frozen=True)
class DenseSettings:
    model: str  # HF id or local dir
    revision: str | None = None
    max_seq_length: int | None = 256
    # How a query is presented to the encoder; KaLM-Embedding-V2.5 uses "Instruct: {instruction}\nQuery:{query}".
    query_template: str = "{query}"
    instruction: str = ""
    normalize: bool = True
    dtype: str = "float32"
    # Logged, not keyed: they don't change the numbers.
    batch_size: int = 64
    device: str = "auto"


class DenseRetriever:
    def __init__(self, settings: DenseSettings):
        self.settings = settings

    def identity(self) -> dict:
        s = self.settings
        weights = None
        local = Path(s.model)
        if local.is_dir():
            files = sorted(local.glob("*.safetensors")) or sorted(local.glob("*.bin"))
            weights = {f.name: sha256_file(f) for f in files}
        return {
            "kind": "dense",
            "model": s.model if not local.is_dir() else str(local.resolve()),
            "revision": s.revision,
            "weights_sha256": weights,
            "max_seq_length": s.max_seq_length,
            "query_template": s.query_template,
            "instruction": s.instruction,
            "normalize": s.normalize,
            "dtype": s.dtype,
            "similarity": "cosine, exact",
        }

    def retrieve(self, dataset: Dataset, depth: int) -> Iterator[RankedList]:
        import torch
        from sentence_transformers import SentenceTransformer

        s = self.settings
        device = ("cuda" if torch.cuda.is_available() else "cpu") if s.device == "auto" else s.device
        model = SentenceTransformer(s.model, revision=s.revision, device=device, model_kwargs={"dtype": getattr(torch, s.dtype)})
        if s.max_seq_length:
            model.max_seq_length = s.max_seq_length

        doc_ids = list(dataset.corpus.ids)
        passages = (doc.passage(dataset.joiner) for doc in dataset.corpus)
        doc_emb = model.encode(list(passages), batch_size=s.batch_size, convert_to_tensor=True,
                               normalize_embeddings=s.normalize, show_progress_bar=True)
        queries = list(dataset.queries.values())
        query_texts = [s.query_template.format(query=q.text, instruction=s.instruction) for q in queries]
        query_emb = model.encode(query_texts, batch_size=s.batch_size, convert_to_tensor=True,
                                 normalize_embeddings=s.normalize, show_progress_bar=False)
        k = min(depth + int(dataset.quirks.ignore_identical_ids), len(doc_ids))
        position = {doc_id: i for i, doc_id in enumerate(doc_ids)} if dataset.candidates else {}
        for start in range(0, len(queries), 256):
            block = query_emb[start : start + 256].float() @ doc_emb.float().T
            scores, rows = torch.topk(block, k, dim=1)
            for j, (query, idx, sc) in enumerate(zip(queries[start : start + 256], rows.tolist(), scores.tolist())):
                allowed = dataset.candidates_for(query.id)
                if allowed is None:
                    scored = ((doc_ids[i], v) for i, v in zip(idx, sc))
                else:  # LMEB scene: only this query's candidates (their scores against the whole-corpus encoding)
                    scored = zip(allowed, block[j, [position[d] for d in allowed]].tolist())
                yield rank(query.id, scored, depth, ignore_identical_ids=dataset.quirks.ignore_identical_ids)
