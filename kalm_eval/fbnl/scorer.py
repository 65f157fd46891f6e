"""The online half of KaLM reranking: one decoder pass per (prompt, pooled passage) pair → yes/no margin.

What it computes, per pair (reference §6): the decoder runs over the prompt tokens with the passage's pooled
states as its encoder states (merged self+cross attention); at the last non-padding prompt position
(index = sum(decoder mask) - 1) the final-normed hidden state is multiplied by the "yes" and "no" rows of the
tied output embedding; margin = z_yes - z_no in float32; P(yes) = sigmoid(margin) = softmax([z_yes, z_no])[0].

What it skips, and why that is exact:
* the encoder: pooled states come from the PassageStore (computed once per passage);
* the last decoder layer at every position but the scored one: its keys and values need all positions, its
  query, output projection and MLP only the last (last_position_hidden: the layer's own modules, wired as
  T5Gemma2DecoderLayer wires them; fp32 equal to the full forward, tests/fbnl);
* full-vocabulary logits at every position: only 2 rows x 1 position are needed. The LM head is a plain
  bias-free linear layer tied to the embedding; the final norm is already applied inside the decoder; final
  logit soft-capping is applied if the config sets it (the KaLM configs do not). The two logits are computed
  in the model dtype and then cast to float32, exactly as the reference does with its full logits.
Padding: prompts are right-padded to a multiple of 8, pooled states zero-padded with a 0 mask; masked
positions get no attention weight, so a pair's score does not depend on its batch neighbours (up to
floating-point summation order).
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.nn.utils.rnn import pad_sequence
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.t5gemma2.modeling_t5gemma2 import eager_attention_forward, rotate_half

from kalm_eval.records import PairScore

from .batching import order_longest_first, run_in_batches, to_device
from .model import LoadedModel
from kalm_eval.checkpoints import FP16_MESSAGE
from .prompts import PAD_TO_MULTIPLE_OF, pad_right


@dataclass
class ScorerStats:
    pairs: int = 0
    batches: int = 0
    prompt_tokens: int = 0  # real decoder tokens (no padding)
    pooled_vectors: int = 0  # real cross-attention keys (no padding)
    score_seconds: float = 0.0
    batch_size: int = 0  # current (after any OOM shrinking)


class DecoderScorer:
    def __init__(self, loaded: LoadedModel, batch_size: int = 32):
        self.loaded = loaded
        self.decoder = loaded.model.get_decoder()
        head = loaded.model.get_output_embeddings()  # tied to the input embedding
        answer_rows = torch.tensor([loaded.yes_id, loaded.no_id], device=head.weight.device)
        self.answer_weight = head.weight.detach().index_select(0, answer_rows)  # [2, d]
        bias = getattr(head, "bias", None)
        self.answer_bias = None if bias is None else bias.detach().index_select(0, answer_rows)
        self.softcap = loaded.model.config.decoder.final_logit_softcapping
        self.stats = ScorerStats(batch_size=batch_size)

    def score(self, prompts: Sequence[Sequence[int]], passages: Sequence[torch.Tensor],
              on_batch: Callable[[int], None] | None = None) -> list[PairScore]:
        """Score pair i = (prompts[i] token ids, passages[i] pooled states [W_i, d]); results in input order."""
        if len(prompts) != len(passages):
            raise ValueError("prompts and passages must have the same length")
        if not prompts:
            return []
        started = time.perf_counter()
        order = order_longest_first([(len(p), int(s.shape[0])) for p, s in zip(prompts, passages)])

        def shrink(new_size: int) -> None:
            self.stats.batch_size = new_size

        def process(rows: list[int]) -> list[PairScore]:
            self.stats.batches += 1
            scored = self._score_batch([prompts[i] for i in rows], [passages[i] for i in rows])
            if on_batch:
                on_batch(len(rows))
            return scored

        results = run_in_batches(order, self.stats.batch_size, process, on_shrink=shrink)
        elapsed = time.perf_counter() - started
        prompt_tokens = sum(len(p) for p in prompts)
        self.stats.pairs += len(prompts)
        self.stats.prompt_tokens += prompt_tokens
        self.stats.pooled_vectors += sum(int(s.shape[0]) for s in passages)
        self.stats.score_seconds += elapsed
        return [results[i] for i in range(len(prompts))]

    @torch.inference_mode()
    def _score_batch(self, prompts: list[Sequence[int]], passages: list[torch.Tensor]) -> list[PairScore]:
        device = self.loaded.device
        ids, mask = pad_right(prompts, self.loaded.tokenizer.pad_token_id, PAD_TO_MULTIPLE_OF)
        states = pad_sequence(list(passages), batch_first=True)  # zero padding
        lengths = torch.tensor([int(s.shape[0]) for s in passages])
        states_mask = (torch.arange(states.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)).long()
        ids, mask, states, states_mask = to_device((ids, mask, states, states_mask), device)
        states = states.to(self.loaded.dtype)

        last = last_position_hidden(self.decoder, ids, mask, states, states_mask)  # [B, d], final norm applied
        logits = torch.nn.functional.linear(last, self.answer_weight, self.answer_bias)  # [B, 2], model dtype
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        logits = logits.float()
        if not torch.isfinite(logits).all():
            raise RuntimeError(f"non-finite yes/no logits. {FP16_MESSAGE}")
        margins = (logits[:, 0] - logits[:, 1]).cpu()
        probabilities = torch.sigmoid(margins)
        return [PairScore(float(m), float(p)) for m, p in zip(margins.tolist(), probabilities.tolist())]


class _InputsOfLastLayer(Exception):
    """Raised by a pre-hook to stop the decoder right before its last layer, carrying that layer's inputs."""

    def __init__(self, arguments: dict):
        super().__init__("decoder stopped before its last layer")
        self.arguments = arguments


@functools.cache
def _forward_signature(layer_type: type) -> inspect.Signature:
    return inspect.signature(layer_type.forward)  # once per layer class, not per batch


def last_position_hidden(decoder: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, states: torch.Tensor,
                         states_mask: torch.Tensor) -> torch.Tensor:
    """The decoder's final-normed hidden state at each row's last real prompt position, [B, d].

    Layers 1..L-1 run as the stock decoder runs them (its own masks and rotary tables); the last layer computes
    keys/values at every position (self and cross) but query, attention output, MLP and the final norm only at the
    scored position: 1/L of the decoder's work is skipped, the scored row's arithmetic is unchanged."""
    layer = decoder.layers[decoder.config.num_hidden_layers - 1]

    def capture(module, args, kwargs):
        raise _InputsOfLastLayer(_forward_signature(type(module)).bind(module, *args, **kwargs).arguments)

    handle = layer.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        decoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=states, encoder_attention_mask=states_mask,
                use_cache=False, return_dict=True)
        raise RuntimeError("the decoder's last layer was never called")
    except _InputsOfLastLayer as stop:
        inputs = stop.arguments
    finally:
        handle.remove()
    hidden, merged_mask = inputs["hidden_states"], inputs["merged_attention_mask"]
    cos, sin = inputs["position_embeddings"]
    cross = inputs["encoder_hidden_states"]
    batch = hidden.shape[0]
    rows = torch.arange(batch, device=hidden.device)
    last = mask.sum(dim=1) - 1
    attention = layer.self_attn
    head_dim = attention.head_dim

    def heads(x: torch.Tensor, projection: torch.nn.Module) -> torch.Tensor:  # [B, T, d] -> [B, H, T, head_dim]
        return projection(x).view(x.shape[0], x.shape[1], -1, head_dim).transpose(1, 2)

    normed = layer.pre_self_attn_layernorm(hidden)
    cos, sin = cos.expand(batch, -1, -1), sin.expand(batch, -1, -1)  # [B, S, head_dim]
    keys = attention.k_norm(heads(normed, attention.k_proj))
    keys = keys * cos.unsqueeze(1) + rotate_half(keys) * sin.unsqueeze(1)
    values = heads(normed, attention.v_proj)
    query = attention.q_norm(heads(normed[rows, last].unsqueeze(1), attention.q_proj))
    query = query * cos[rows, last][:, None, None] + rotate_half(query) * sin[rows, last][:, None, None]
    keys = torch.cat([keys, attention.k_norm(heads(cross, attention.k_proj))], dim=2)
    values = torch.cat([values, heads(cross, attention.v_proj)], dim=2)
    kernel = ALL_ATTENTION_FUNCTIONS.get_interface(attention.config._attn_implementation, eager_attention_forward)
    output, _ = kernel(attention, query, keys, values, merged_mask[rows, :, last].unsqueeze(2), dropout=0.0,
                       scaling=attention.scaling)
    output = attention.o_proj(output.reshape(batch, 1, -1))
    out = hidden[rows, last].unsqueeze(1) + layer.post_self_attn_layernorm(output)
    out = out + layer.post_feedforward_layernorm(layer.mlp(layer.pre_feedforward_layernorm(out)))
    return decoder.norm(out)[:, 0]
