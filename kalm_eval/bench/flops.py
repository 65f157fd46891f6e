"""The cost benchmark's FLOP model (stated once; used for GFLOP/s, fraction of ceiling, MFU and the "FLOP model"
ratios). Per transformer layer with d = hidden, Hq / Hkv heads of width h, MLP width I (3 matrices for GeGLU /
SwiGLU, 2 for XLM-R's GELU MLP), t query-side tokens attending to k keys and c cross-attended inputs:

  2 t d (Hq + 2 Hkv) h + 2 t Hq h d + 2 t d I m      (Q/K/V/O projections, MLP)
  + 2 c d (2 Hkv h)                                  (cross K/V projections of the pooled states, KaLM decoder)
  + 4 t k Hq h                                       (QK^T and AV)

KaLM decoder, per pair: L layers with t = q real prompt tokens, k = (q + 1) / 2 causal self keys + m pooled keys,
c = m = ceil(n / r). KaLM online: L - 1 such layers, then the last layer with t = 1 (the scored position, k = q + m)
plus the K/V projections of the other q - 1 positions, plus the 2 answer rows (2 x 2 d). Reference: the whole
decoder (L layers at every position), + the encoder (t = n passage tokens, k = min(n, window), no cross) per pair,
+ the full-vocabulary head 2 q d V at every prompt position. Causal-LM baselines: t = T pair tokens, k = (T + 1) / 2,
+ one head row set (logits_to_keep=1: 2 d V). Padding is not counted (useful work)."""

from __future__ import annotations

from dataclasses import dataclass

from kalm_eval.testing.baselines import REAL_SHAPES
from kalm_eval.testing.shapes import BASELINE_ROWS, KALM_SHAPES


@dataclass(frozen=True)
class StackDims:
    layers: int
    d: int
    heads: int
    kv_heads: int
    head_dim: int
    inter: int
    mlp_mats: int = 3
    vocab: int = 262_144
    window: int | None = None

    @classmethod
    def of_kalm(cls, shape: str) -> StackDims:
        c = KALM_SHAPES[shape].text_config
        return cls(c["num_hidden_layers"], c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"],
                   c["head_dim"], c["intermediate_size"], 3, c["vocab_size"], c["sliding_window"])

    @classmethod
    def of_baseline(cls, name: str) -> StackDims:
        _, kw, _, _ = REAL_SHAPES[name]
        heads = kw["num_attention_heads"]
        head_dim = kw.get("head_dim", kw["hidden_size"] // heads)
        mats = 2 if BASELINE_ROWS[name][1] == "cross_encoder" else 3
        return cls(kw["num_hidden_layers"], kw["hidden_size"], heads, kw.get("num_key_value_heads", heads), head_dim,
                   kw["intermediate_size"], mats, kw["vocab_size"])

    def layer(self, t: float, k: float, c: float = 0.0) -> float:
        proj = 2 * t * self.d * (self.heads + 2 * self.kv_heads) * self.head_dim + 2 * t * self.heads * self.head_dim * self.d
        mlp = 2 * t * self.d * self.inter * self.mlp_mats
        cross = 2 * c * self.d * 2 * self.kv_heads * self.head_dim
        attention = 4 * t * k * self.heads * self.head_dim
        return proj + mlp + cross + attention

    def kalm_decoder(self, q: int, m: int) -> float:
        """The stock decoder forward over the prompt (every layer at every position), as the reference runs it."""
        return self.layers * self.layer(q, (q + 1) / 2 + m, m)

    def kalm_online(self, q: int, m: int) -> float:
        """KaLM's online path: L-1 layers at every position; the last layer's K/V at every position (self + cross),
        its query, output, MLP and attention at the scored position only; the 2 answer rows."""
        last_kv = 2 * (q - 1) * self.d * 2 * self.kv_heads * self.head_dim  # the other q-1 rows' K/V
        return ((self.layers - 1) * self.layer(q, (q + 1) / 2 + m, m) + self.layer(1, q + m, m) + last_kv
                + 2 * 2 * self.d)

    def vocab_head(self, positions: int) -> float:
        return 2 * positions * self.d * self.vocab

    def encoder(self, n: int) -> float:
        keys = min(n, self.window) if self.window else n
        return self.layers * self.layer(n, keys)

    def causal_lm(self, tokens: int) -> float:
        return self.layers * self.layer(tokens, (tokens + 1) / 2) + self.vocab_head(1)

    def cross_encoder(self, tokens: int) -> float:
        return self.layers * self.layer(tokens, tokens) + 2 * self.d * self.d + 2 * self.d

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of the decoder layer's linear maps: q, k, v, o, MLP (gate, up), down."""
        qd, kvd = self.heads * self.head_dim, self.kv_heads * self.head_dim
        shapes = [(self.d, qd), (self.d, kvd), (self.d, kvd), (qd, self.d)]
        shapes += [(self.d, self.inter)] * (self.mlp_mats - 1) + [(self.inter, self.d)]
        return shapes
