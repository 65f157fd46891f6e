"""Reference-style KaLM scoring: what the checkpoint code / MTEB wrapper does (the oracle of the exactness tests and the
baseline of the cost benchmark).

Per pair it re-runs the encoder, optionally pools with the reference algorithm (`reference_pool`, a line-by-line
port of the checkpoint's `_pool_encoder_chunks`), runs the full `T5Gemma2ForConditionalGeneration` forward
(computing logits over the whole vocabulary at every decoder position) and reads the yes/no logits at the last
real position. Batching follows the reference too: sort pairs by descending character length, batch, tokenise
each batch with the tokenizer's own padding (encoder: longest; decoder: multiple of 8), restore order.

This is deliberately the slow path: nothing here is cached or trimmed. Use `KalmReranker` for real runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from transformers.modeling_outputs import BaseModelOutput

from kalm_eval.fbnl.batching import order_longest_first
from kalm_eval.fbnl.model import LoadedModel
from kalm_eval.fbnl.prompts import pad_right
from kalm_eval.checkpoints import FP16_MESSAGE
from kalm_eval.records import PairScore

# The checkpoint code's inputs, restated here from the model card and the checkpoint's kalm_reranker.py (reference
# §4) instead of imported from kalm_eval.fbnl.prompts: the exactness tests compare the product's prompts with an
# independent statement of them, so a change to fbnl/prompts.py cannot move both sides at once.
_DOCUMENT = "<Document>: {document}"
_PROMPT = ("<bos><start_of_turn>user\nJudge whether the Document meets the requirements based on the Query and the "
           'Instruct provided. Note that the answer can only be "yes" or "no".\n\n<Instruct>: {instruction}\n'
           "<Query>: {query}<end_of_turn>\n<start_of_turn>model\n\n\n\n")
_DEFAULT_INSTRUCTION = "Given a query, retrieve documents that answer the query."
_PAD_DECODER_TO_MULTIPLE_OF = 8


def _reference_prompt(tokenizer, query: str, instruction: str | None, query_max_len: int) -> str:
    """The checkpoint's decoder prompt: the query alone tokenised, cut to query_max_len, decoded back, inserted."""
    ids = tokenizer(query, add_special_tokens=False, truncation=True, max_length=query_max_len)["input_ids"]
    query = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return _PROMPT.format(instruction=_DEFAULT_INSTRUCTION if instruction is None else instruction, query=query)


def reference_pool(
    hidden_states: torch.Tensor, attention_mask: torch.Tensor, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The checkpoint's MEP, same operations in the same order (model dtype throughout)."""
    batch_size, sequence_length, hidden_size = hidden_states.shape
    num_chunks = (sequence_length + chunk_size - 1) // chunk_size
    pad_length = num_chunks * chunk_size - sequence_length
    if pad_length:
        hidden_states = F.pad(hidden_states, (0, 0, 0, pad_length))
        attention_mask = F.pad(attention_mask, (0, pad_length))
    hidden_states = hidden_states.view(batch_size, num_chunks, chunk_size, hidden_size)
    chunk_mask = attention_mask.view(batch_size, num_chunks, chunk_size)
    expanded_mask = chunk_mask.unsqueeze(-1).to(hidden_states.dtype)
    pooled_hidden = (hidden_states * expanded_mask).sum(dim=2)
    pooled_hidden /= chunk_mask.sum(dim=2).clamp(min=1).unsqueeze(-1)
    pooled_mask = (chunk_mask.sum(dim=2) > 0).to(attention_mask.dtype)
    return pooled_hidden, pooled_mask


class ReferenceScorer:
    """Slow, faithful scorer. `ratio=1` runs the plain full forward (no pooling code path at all)."""

    def __init__(self, loaded: LoadedModel, batch_size: int = 32):
        self.loaded = loaded
        self.batch_size = batch_size

    def score(
        self, triples: Sequence[tuple[str, str | None, str]], ratio: int = 1
    ) -> list[PairScore]:
        """triples = (query, instruction or None for the default, document); results in input order."""
        order = sorted(range(len(triples)), key=lambda i: -(len(triples[i][0]) + len(triples[i][2])))
        scores: dict[int, PairScore] = {}
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            batch = self._score_batch([triples[i] for i in rows], ratio)
            scores.update(zip(rows, batch))
        return [scores[i] for i in range(len(triples))]

    @torch.inference_mode()
    def _score_batch(self, triples: list[tuple[str, str | None, str]], ratio: int) -> list[PairScore]:
        spec, tokenizer, model, device = self.loaded.spec, self.loaded.tokenizer, self.loaded.model, self.loaded.device
        tokenizer.padding_side = "right"
        encoder_batch = tokenizer(
            [_DOCUMENT.format(document=doc) for _, _, doc in triples],
            padding=True, truncation=True, max_length=spec.doc_max_len,
            add_special_tokens=False, return_tensors="pt",
        ).to(device)
        decoder_batch = tokenizer(
            [_reference_prompt(tokenizer, q, inst, spec.query_max_len) for q, inst, _ in triples],
            padding=True, pad_to_multiple_of=_PAD_DECODER_TO_MULTIPLE_OF, add_special_tokens=False, return_tensors="pt",
        ).to(device)
        if ratio == 1:
            outputs = model(
                input_ids=encoder_batch["input_ids"],
                attention_mask=encoder_batch["attention_mask"],
                decoder_input_ids=decoder_batch["input_ids"],
                decoder_attention_mask=decoder_batch["attention_mask"],
                return_dict=True,
            )
        else:
            encoded = model.get_encoder()(
                input_ids=encoder_batch["input_ids"], attention_mask=encoder_batch["attention_mask"], return_dict=True
            )
            pooled, pooled_mask = reference_pool(encoded.last_hidden_state, encoder_batch["attention_mask"], ratio)
            outputs = model(
                encoder_outputs=BaseModelOutput(last_hidden_state=pooled),
                attention_mask=pooled_mask,
                decoder_input_ids=decoder_batch["input_ids"],
                decoder_attention_mask=decoder_batch["attention_mask"],
                return_dict=True,
            )
        last_positions = decoder_batch["attention_mask"].sum(dim=1) - 1
        last_logits = outputs.logits[torch.arange(outputs.logits.shape[0], device=device), last_positions]
        yes_no = torch.stack((last_logits[:, self.loaded.yes_id], last_logits[:, self.loaded.no_id]), dim=-1).float()
        if not torch.isfinite(yes_no).all():
            raise RuntimeError(f"non-finite yes/no logits. {FP16_MESSAGE}")
        probabilities = torch.softmax(yes_no, dim=-1)[:, 0]
        margins = yes_no[:, 0] - yes_no[:, 1]
        return [PairScore(float(m), float(p)) for m, p in zip(margins.tolist(), probabilities.tolist())]


class FullLogitsScorer:
    """Reference-style scoring from the *same* pooled states and prompt ids as `DecoderScorer`.

    Runs the stock `model(encoder_outputs=..., attention_mask=..., decoder_input_ids=..., ...)` forward, i.e.
    the LM head over the whole 262k vocabulary at every decoder position, then reads the last real position.
    Only the output side differs from `DecoderScorer`, so timing the two isolates what skipping full logits
    (and the model wrapper) buys; the batches are identical (same order, same padding)."""

    def __init__(self, loaded: LoadedModel, batch_size: int = 32):
        self.loaded = loaded
        self.batch_size = batch_size

    def score(self, prompts: Sequence[Sequence[int]], passages: Sequence[torch.Tensor]) -> list[PairScore]:
        order = order_longest_first([(len(p), int(s.shape[0])) for p, s in zip(prompts, passages)])
        results: dict[int, PairScore] = {}
        device, model = self.loaded.device, self.loaded.model
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            ids, mask = pad_right([prompts[i] for i in rows], self.loaded.tokenizer.pad_token_id,
                                  _PAD_DECODER_TO_MULTIPLE_OF)
            states = pad_sequence([passages[i] for i in rows], batch_first=True)
            lengths = torch.tensor([int(passages[i].shape[0]) for i in rows])
            states_mask = (torch.arange(states.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)).long()
            with torch.inference_mode():
                logits = model(
                    encoder_outputs=BaseModelOutput(last_hidden_state=states.to(device, self.loaded.dtype)),
                    attention_mask=states_mask.to(device),
                    decoder_input_ids=ids.to(device),
                    decoder_attention_mask=mask.to(device),
                    return_dict=True,
                ).logits  # [B, S, vocab]
                last = logits[torch.arange(len(rows), device=device), mask.to(device).sum(dim=1) - 1]
                yes_no = torch.stack((last[:, self.loaded.yes_id], last[:, self.loaded.no_id]), dim=-1).float()
            margins = (yes_no[:, 0] - yes_no[:, 1]).cpu()
            probabilities = torch.softmax(yes_no, dim=-1)[:, 0].cpu()
            for row, m, p in zip(rows, margins.tolist(), probabilities.tolist()):
                results[row] = PairScore(float(m), float(p))
        return [results[i] for i in range(len(prompts))]
