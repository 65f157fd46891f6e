"""Length-aware batching and the CUDA out-of-memory back-off shared by the encoder and the scorer.

Sorting by length before batching keeps padding (wasted compute) small; on OOM the batch shrinks by x3/4 and
processing continues from where it failed, keeping the smaller size for the rest of the run (reference §6).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

log = logging.getLogger(__name__)
T = TypeVar("T")

_OOM_ERRORS: tuple[type[BaseException], ...] = tuple(
    e for e in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)) if e
)


def to_device(tensors: Sequence["torch.Tensor"], device: torch.device) -> list[torch.Tensor]:
    """Host -> device. CUDA: through pinned (page-locked) buffers with non_blocking copies, so the transfers overlap
    the host work queued behind them; the scores' .cpu() at the end of a batch synchronises. CPU: unchanged."""
    if device.type != "cuda":
        return [t.to(device) for t in tensors]
    return [t.pin_memory().to(device, non_blocking=True) for t in tensors]


def order_longest_first(lengths: Sequence[int | tuple[int, ...]]) -> list[int]:
    """Indices sorted by descending length (stable: equal lengths keep input order)."""
    return sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)


# A batch stops growing before its padding would exceed this fraction of its padded tokens. Why: a few long and
# many short passages in one batch cost the longest length for every row (quadratically in attention). The cost
# benchmark's Nano encode of 10 SciFact passages (174-629 tokens, batch size 16, bf16, 1 thread) went from 1080 to
# 515 ms/passage (results/cost/cost.cpu.before-padding-bound.json vs cost.cpu.run1.json). Batches of similar
# lengths (a sorted unit of hundreds of passages) stay full.
MAX_PADDING = 0.10


def padding_bounded(order: Sequence[int], start: int, batch_size: int, lengths: Sequence[int]) -> int:
    """How many rows of order[start:] (sorted longest first) form the next batch: at most batch_size, and only as
    many as keep its padding <= MAX_PADDING of its padded tokens (always at least one row)."""
    longest = max(1, lengths[order[start]])
    rows, real = 1, lengths[order[start]]
    while rows < batch_size and start + rows < len(order):
        candidate = real + lengths[order[start + rows]]
        if candidate < (1.0 - MAX_PADDING) * longest * (rows + 1):
            break
        rows, real = rows + 1, candidate
    return rows


def run_in_batches(
    order: Sequence[int],
    batch_size: int,
    process: Callable[[list[int]], list[T]],
    on_shrink: Callable[[int], None] | None = None,
    lengths: Sequence[int] | None = None,
) -> dict[int, T]:
    """Call `process` on consecutive slices of `order`; returns {index: result}. Shrinks the batch on OOM.
    With `lengths` (order sorted longest first), a slice also ends where its padding would pass MAX_PADDING."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    results: dict[int, T] = {}
    start = 0
    while start < len(order):
        rows = batch_size if lengths is None else padding_bounded(order, start, batch_size, lengths)
        chunk = list(order[start : start + rows])
        try:
            outputs = process(chunk)
        except _OOM_ERRORS:
            if batch_size == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            batch_size = max(1, batch_size * 3 // 4)
            log.warning("out of memory; batch size shrunk to %d", batch_size)
            if on_shrink:
                on_shrink(batch_size)
            continue
        results.update(zip(chunk, outputs))
        start += len(chunk)
    return results
