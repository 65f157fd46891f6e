"""PassageStore: "encode once, pool many" — the offline, cacheable half of KaLM reranking.

Each unique passage text runs through the encoder exactly once per cache key; the resulting states are pooled
at every requested ratio in the same pass, kept in RAM (pooled only; full states never outlive their batch)
and written to the on-disk shard cache (see pooled_cache.py).

Cache key = the encoder's identity, not the whole checkpoint's:
    encoder_fingerprint (sha256 of the text encoder's weights + config), tokenizer fingerprint, dtype,
    attention implementation, doc_max_len, the encoder text template and the pooling rule.
Decoder-side settings (query length, instruction, prompt, batch sizes, depth, which decoder is attached) are
not in it, so later runs, other decoder settings, and checkpoints whose encoder weights are identical all reuse
the cache. Passages are addressed by sha256(passage text), so identical passages under different doc ids are
encoded once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kalm_eval.storage import sha256_text

from .batching import order_longest_first, run_in_batches
from .model import LoadedModel
from .pooled_cache import PooledStateCache
from .pooling import POOLING_RULE, check_ratio, mep_pool, pooled_length
from .prompts import ENCODER_TEMPLATE, pad_right, passage_token_ids

log = logging.getLogger(__name__)


@dataclass
class PassageStats:
    unique_passages: int = 0  # distinct passage texts held by this store
    passages_encoded: int = 0  # encoder passes this run (one per passage, whatever the number of ratios)
    cache_hits: int = 0  # passages whose pooled states all came from the disk cache (no encoder pass)
    tokens_encoded: int = 0  # real (non-padding) encoder tokens processed this run
    encode_seconds: float = 0.0  # tokenise + encoder + pooling (offline cost)
    cache_read_seconds: float = 0.0
    cache_write_seconds: float = 0.0
    corrupt_shards: int = 0  # shards found corrupt and rebuilt
    bytes_written: int = 0
    pooled_vectors_per_passage: dict[int, float] = field(default_factory=dict)  # ratio → mean windows
    stored_bytes_per_passage: dict[int, float] = field(default_factory=dict)  # ratio → mean bytes (W * d * itemsize)


class PassageStore:
    def __init__(
        self,
        loaded: LoadedModel,
        *,
        cache_dir: Path | None = None,
        encode_batch_size: int = 16,
        passages_per_shard: int = 256,
    ):
        self.loaded = loaded
        self.doc_max_len = loaded.spec.doc_max_len
        self.encode_batch_size = encode_batch_size
        self._doc_to_hash: dict[str, str] = {}
        self._pooled: dict[int, dict[str, torch.Tensor]] = {}  # ratio → passage sha256 → [W, d] (CPU)
        self._stats = PassageStats()
        self.cache = (
            PooledStateCache(Path(cache_dir), self.cache_key, passages_per_shard) if cache_dir is not None else None
        )

    @property
    def cache_key(self) -> dict[str, Any]:
        return {
            **self.loaded.encoder_identity,
            "doc_max_len": self.doc_max_len,
            "encoder_template": ENCODER_TEMPLATE,
            "pooling_rule": POOLING_RULE,
        }

    # -- filling -----------------------------------------------------------------------------------------------

    def add(self, passages: Mapping[str, str], ratios: Iterable[int]) -> None:
        """Make pooled states available for every doc id in `passages` (doc id → text) at every ratio."""
        ratios = sorted({check_ratio(r) for r in ratios})
        texts: dict[str, str] = {}
        for doc_id, text in passages.items():
            digest = sha256_text(text)
            self._doc_to_hash[doc_id] = digest
            texts[digest] = text
        missing = {h: {r for r in ratios if h not in self._pooled.get(r, {})} for h in texts}
        missing = {h: rs for h, rs in missing.items() if rs}

        if self.cache is not None and missing:
            started = time.perf_counter()
            for ratio in ratios:
                found = self.cache.lookup(ratio, [h for h, rs in missing.items() if ratio in rs])
                self._pooled.setdefault(ratio, {}).update(found)
                for h in found:
                    missing[h].discard(ratio)
            self._stats.cache_read_seconds += time.perf_counter() - started
            self._stats.corrupt_shards = self.cache.corrupt_shards
        self._stats.cache_hits += sum(1 for rs in missing.values() if not rs)
        to_encode = {h: rs for h, rs in missing.items() if rs}
        if to_encode:
            self._encode_and_store({h: texts[h] for h in to_encode}, to_encode)
        self._refresh_sizes()

    def _encode_and_store(self, texts: Mapping[str, str], needed: Mapping[str, set[int]]) -> None:
        """Encode in length-sorted chunks of one shard each, writing each chunk's shards before the next:
        an interrupted run keeps what it finished (the next run gets cache hits for it)."""
        started = time.perf_counter()
        token_ids = {h: passage_token_ids(self.loaded.tokenizer, text, self.doc_max_len) for h, text in texts.items()}
        self._stats.encode_seconds += time.perf_counter() - started
        order = sorted(token_ids, key=lambda h: len(token_ids[h]), reverse=True)
        chunk = self.cache.passages_per_shard if self.cache is not None else len(order)
        for begin in range(0, len(order), chunk):
            hashes = order[begin : begin + chunk]
            ratios = sorted(set().union(*(needed[h] for h in hashes)))
            fresh = self._encode({h: token_ids[h] for h in hashes}, ratios)
            for ratio, states in fresh.items():
                new = {h: state for h, state in states.items() if ratio in needed[h]}
                self._pooled.setdefault(ratio, {}).update(new)
                if self.cache is not None and new:
                    started = time.perf_counter()
                    self.cache.store(ratio, new)
                    self._stats.cache_write_seconds += time.perf_counter() - started
        if self.cache is not None:
            self._stats.bytes_written = self.cache.bytes_written

    @torch.inference_mode()
    def _encode(self, token_ids: Mapping[str, list[int]], ratios: Sequence[int]) -> dict[int, dict[str, torch.Tensor]]:
        """One encoder pass per passage (length-sorted batches); pool each batch at every ratio, then drop it."""
        started = time.perf_counter()
        hashes = list(token_ids)
        ids_list = [token_ids[h] for h in hashes]
        encoder = self.loaded.model.get_encoder()
        device = self.loaded.device
        pad_id = self.loaded.tokenizer.pad_token_id
        pooled: dict[int, dict[str, torch.Tensor]] = {r: {} for r in ratios}

        def encode_batch(rows: list[int]) -> list[None]:
            ids, mask = pad_right([ids_list[i] for i in rows], pad_id)
            ids, mask = ids.to(device), mask.to(device)
            hidden = encoder(input_ids=ids, attention_mask=mask, return_dict=True).last_hidden_state
            for ratio in ratios:
                states, _ = mep_pool(hidden, mask, ratio)
                for position, row in enumerate(rows):
                    keep = pooled_length(len(ids_list[row]), ratio)  # windows holding real tokens
                    pooled[ratio][hashes[row]] = states[position, :keep].to("cpu", copy=True)
            return [None] * len(rows)

        run_in_batches(order_longest_first([len(t) for t in ids_list]), self.encode_batch_size, encode_batch)
        self._stats.passages_encoded += len(hashes)
        self._stats.tokens_encoded += sum(len(t) for t in ids_list)
        self._stats.encode_seconds += time.perf_counter() - started
        return pooled

    def _refresh_sizes(self) -> None:
        hashes = set(self._doc_to_hash.values())
        self._stats.unique_passages = len(hashes)
        item_bytes = torch.empty((), dtype=self.loaded.dtype).element_size() * self.loaded.d_model
        for ratio, states in self._pooled.items():
            lengths = [states[h].shape[0] for h in hashes if h in states]
            if lengths:
                mean = sum(lengths) / len(lengths)
                self._stats.pooled_vectors_per_passage[ratio] = mean
                self._stats.stored_bytes_per_passage[ratio] = mean * item_bytes

    # -- reading -----------------------------------------------------------------------------------------------

    def passage_hash(self, doc_id: str) -> str:
        try:
            return self._doc_to_hash[doc_id]
        except KeyError:
            raise KeyError(f"doc id {doc_id!r} was never prepared (call prepare/add first)") from None

    def pooled(self, doc_ids: Sequence[str], ratio: int) -> list[torch.Tensor]:
        """Pooled states [W_i, d] (CPU, model dtype) for each doc id, ready for the scorer."""
        hashes = [self.passage_hash(d) for d in doc_ids]
        table = self._pooled.get(ratio, {})
        missing = [d for d, h in zip(doc_ids, hashes) if h not in table]
        if missing:
            raise KeyError(f"ratio {ratio} was not prepared for doc ids {missing[:5]}; prepare with this ratio")
        return [table[h] for h in hashes]

    @property
    def stats(self) -> PassageStats:
        return self._stats
