"""Matryoshka Embedding Pooling (MEP), reference §5: shorten a passage's encoder states along the sequence.

Input: encoder output H [B, S, d] (after the encoder's final norm) and its mask M [B, S]; compression r.
1. W = ceil(S / r); right-pad H and M with zeros to W*r tokens.
2. View as windows [B, W, r, d] / [B, W, r]; windows start at token 0 (right padding → only a tail is partial).
3. Window vector = sum(H*M) / max(sum M, 1): a mask-aware mean; a partial tail window averages its real tokens.
4. Window mask = sum M > 0: all-padding windows are masked out of cross-attention.
No projection, no weights, no normalisation; r = 1 means no pooling.

Precision: the checkpoint code (= MTEB wrapper = vLLM plugin) computes the sum and the division in the *model
dtype* (bf16 in practice; torch accumulates the bf16 sum in fp32 internally and rounds once). We match that op
for op instead of computing in float32 and casting back: a float32 mean rounded to bf16 differs from the
reference's bf16-sum-then-bf16-divide in the last bit for some windows, and cached states must be exactly what
the reference feeds its decoder. In float32 models both are the same computation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POOLING_RULE = "mep-v1:windows-from-token-0:masked-mean-in-model-dtype:window-mask=any-real-token"


def pooled_length(num_tokens: int, compression: int) -> int:
    """Number of windows that hold at least one real token: ceil(n / r)."""
    return -(-num_tokens // compression)


def mep_pool(hidden: torch.Tensor, mask: torch.Tensor, compression: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled [B, W, d] in hidden's dtype, pooled_mask [B, W] in mask's dtype), W = ceil(S / compression).

    r = 1 returns the inputs unchanged (identity). The run's compression values are validated once, in the config."""
    if isinstance(compression, bool) or not isinstance(compression, int) or compression < 1:
        raise ValueError(f"compression must be a positive integer, got {compression!r}")
    if compression == 1:
        return hidden, mask
    batch, seq_len, width = hidden.shape
    windows = pooled_length(seq_len, compression)
    pad = windows * compression - seq_len
    if pad:
        hidden = F.pad(hidden, (0, 0, 0, pad))
        mask = F.pad(mask, (0, pad))
    hidden = hidden.reshape(batch, windows, compression, width)
    window_mask = mask.reshape(batch, windows, compression)
    # Same operations, order and dtypes as the reference (see module docstring).
    summed = (hidden * window_mask.unsqueeze(-1).to(hidden.dtype)).sum(dim=2)
    counts = window_mask.sum(dim=2)
    summed /= counts.clamp(min=1).unsqueeze(-1)
    return summed, (counts > 0).to(mask.dtype)
