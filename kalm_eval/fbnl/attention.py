"""The "grouped" attention kernel: grouped-query attention as two plain matmuls per KV head (no K/V copies).

Why: T5Gemma 2 has few KV heads (Nano: 4 query heads share 1 KV head). transformers' sdpa path repeats K/V per
query head and calls torch's CPU flash kernel per head on short rows; folding the query heads of one KV head into
the row dimension turns attention into two larger matmuls per KV head. Measured on the development CPU with
`python scripts/bench_attention.py` (bf16, one thread, a Nano decoder batch of 16 x 80 prompt tokens + 92 pooled
states, 4:1 GQA): 6.9 ms vs 14.4 ms per call for sdpa, the whole online path 1.07x faster (docs/cost.md). On CUDA
sdpa's fused kernels stay the choice.

Numerics follow transformers' eager path: scores in the model dtype, scaled, soft-capped and softmaxed in float32,
masked positions get the float32 minimum (so a fully masked padding row gives finite values, never NaN). Masks
are sdpa's boolean masks (True = attend) or additive float masks."""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

GROUPED = "grouped"


def grouped_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                      softcap: float | None = None, **_: object) -> tuple[torch.Tensor, None]:
    """query [B, Hq, Q, D], key/value [B, Hkv, K, D] -> ([B, Q, Hq, D], None), as transformers' interfaces return."""
    if module.training and dropout:
        raise ValueError("grouped attention is an inference kernel (no attention dropout)")
    batch, heads, q_len, dim = query.shape
    kv_heads, k_len = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    scaling = dim**-0.5 if scaling is None else scaling
    folded = query.reshape(batch, kv_heads, groups * q_len, dim)  # head h uses KV head h // groups
    scores = torch.matmul(folded, key.transpose(2, 3)).view(batch, kv_heads, groups, q_len, k_len).float()
    scores.mul_(scaling)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is None and q_len > 1 and getattr(module, "is_causal", True):
        attention_mask = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(k_len - q_len)
    if attention_mask is not None:
        mask = attention_mask[..., :k_len]
        if mask.dim() == 4:  # [B, 1 | Hq, Q, K] -> broadcastable over scores [B, Hkv, groups, Q, K]
            mask = mask.unsqueeze(1) if mask.shape[1] == 1 else mask.reshape(mask.shape[0], kv_heads, groups, q_len, -1)
        if mask.dtype == torch.bool:
            scores.masked_fill_(~mask, torch.finfo(torch.float32).min)
        else:
            scores = scores + mask.float()
    probabilities = torch.softmax(scores, dim=-1).to(value.dtype).view(batch, kv_heads, groups * q_len, k_len)
    output = torch.matmul(probabilities, value).view(batch, heads, q_len, dim)
    return output.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make attn_implementation="grouped" known to transformers (kernel and sdpa's boolean mask builder)."""
    AttentionInterface.register(GROUPED, grouped_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(GROUPED, sdpa_mask)


register()
