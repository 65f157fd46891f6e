"""The offline, cacheable half of KaLM reranking: encode each passage once, pool it at every compression.

`PassageEncoder.pooled(texts, compressions)` takes one chunk of passages (text sha256 -> text), returns their pooled
states at every requested compression and keeps nothing afterwards: the caller scores the chunk's pairs and drops
the states, so memory is bounded by the chunk, not the dataset. Token ids are made per chunk too.

With a persisted cache (pooled_cache.py) a passage whose states at *every* requested compression are cached skips
the encoder; any other passage is encoded (one pass serves all compressions) and its states at the persisted
compressions are written. The cache key is the encoder's identity, not the whole checkpoint's: encoder weights +
config fingerprint, tokenizer fingerprint, dtype, attention implementation, doc_max_len, the encoder text template
and the pooling rule. Decoder-side settings (query length, instruction, prompt, which decoder is attached) are not
in it, so checkpoints whose encoder weights are identical share it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .batching import order_longest_first, run_in_batches, to_device
from .model import LoadedModel
from .pooled_cache import PooledStateCache
from .pooling import POOLING_RULE, mep_pool, pooled_length
from .prompts import ENCODER_TEMPLATE, pad_right, passage_token_ids_batch


@dataclass
class EncodeStats:
    """Cost counters of one chunk (summed over chunks by the engine)."""

    passages: int = 0  # distinct passage texts in the chunk
    passages_encoded: int = 0  # encoder passes (one per passage, whatever the number of compressions)
    cache_hits: int = 0  # passages whose states at every requested compression came from the persisted cache
    tokens_encoded: int = 0  # real (non-padding) encoder tokens
    encode_seconds: float = 0.0  # tokenise + encoder + pooling (offline cost)
    cache_read_seconds: float = 0.0
    cache_write_seconds: float = 0.0
    cache_bytes_written: int = 0
    pooled_vectors: dict[int, int] = field(default_factory=dict)  # compression -> windows summed over passages

    def counters(self) -> dict[str, float]:
        """The chunk's encoder counters (pooled_vectors is per compression: the caller files it per variant)."""
        return {k: v for k, v in self.__dict__.items() if k != "pooled_vectors"}


def encoder_cache_key(loaded: LoadedModel) -> dict[str, Any]:
    return {**loaded.encoder_identity, "doc_max_len": loaded.spec.doc_max_len, "encoder_template": ENCODER_TEMPLATE,
            "pooling_rule": POOLING_RULE}


class PassageEncoder:
    def __init__(self, loaded: LoadedModel, *, encode_batch_size: int = 16, cache: PooledStateCache | None = None,
                 persist: Sequence[int] = ()):
        self.loaded = loaded
        self.encode_batch_size = encode_batch_size
        self.cache = cache
        self.persist = frozenset(persist) if cache is not None else frozenset()

    def pooled(self, texts: Mapping[str, str], compressions: Sequence[int],
               on_batch: Callable[[int], None] | None = None) -> tuple[dict[int, dict[str, torch.Tensor]], EncodeStats]:
        """Pooled states per compression per passage (sha256 -> [W, d], CPU, model dtype) and the chunk's counters."""
        stats = EncodeStats(passages=len(texts))
        compressions = sorted(set(compressions))
        pooled: dict[int, dict[str, torch.Tensor]] = {r: {} for r in compressions}
        missing = list(texts)
        if self.persist.issuperset(compressions):  # only then can a passage skip the encoder
            started = time.perf_counter()
            found = {r: self.cache.lookup(r, missing) for r in compressions}
            complete = [h for h in missing if all(h in found[r] for r in compressions)]
            for r in compressions:
                pooled[r].update({h: found[r][h] for h in complete})
            stats.cache_hits = len(complete)
            done = set(complete)
            missing = [h for h in missing if h not in done]
            stats.cache_read_seconds = time.perf_counter() - started
            if on_batch and complete:
                on_batch(len(complete))
        if missing:
            fresh = self._encode({h: texts[h] for h in missing}, compressions, stats, on_batch)
            for r in compressions:
                pooled[r].update(fresh[r])
                if r in self.persist:
                    started = time.perf_counter()
                    stats.cache_bytes_written += self.cache.store(r, fresh[r])
                    stats.cache_write_seconds += time.perf_counter() - started
        stats.pooled_vectors = {r: sum(int(s.shape[0]) for s in pooled[r].values()) for r in compressions}
        return pooled, stats

    @torch.inference_mode()
    def _encode(self, texts: Mapping[str, str], compressions: Sequence[int], stats: EncodeStats,
                on_batch: Callable[[int], None] | None = None) -> dict[int, dict[str, torch.Tensor]]:
        """One encoder pass per passage (length-sorted batches); each batch is pooled at every compression, then dropped."""
        started = time.perf_counter()
        digests = list(texts)
        ids_list = passage_token_ids_batch(self.loaded.tokenizer, [texts[h] for h in digests], self.loaded.spec.doc_max_len)
        encoder = self.loaded.model.get_encoder()
        device, pad_id = self.loaded.device, self.loaded.tokenizer.pad_token_id
        pooled: dict[int, dict[str, torch.Tensor]] = {r: {} for r in compressions}

        def encode_batch(rows: list[int]) -> list[None]:
            ids, mask = to_device(pad_right([ids_list[i] for i in rows], pad_id), device)
            hidden = encoder(input_ids=ids, attention_mask=mask, return_dict=True).last_hidden_state
            for compression in compressions:
                states, _ = mep_pool(hidden, mask, compression)
                for position, row in enumerate(rows):
                    keep = pooled_length(len(ids_list[row]), compression)  # windows holding real tokens
                    pooled[compression][digests[row]] = states[position, :keep].to("cpu", copy=True)
            if on_batch:
                on_batch(len(rows))
            return [None] * len(rows)

        lengths = [len(t) for t in ids_list]
        run_in_batches(order_longest_first(lengths), self.encode_batch_size, encode_batch, lengths=lengths)
        stats.passages_encoded += len(digests)
        stats.tokens_encoded += sum(len(t) for t in ids_list)
        stats.encode_seconds += time.perf_counter() - started
        return pooled
