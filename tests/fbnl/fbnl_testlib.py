"""Independent helpers for tests: brute-force pooling and a plain Hugging Face forward.

Nothing here imports kalm_eval.fbnl.pooling / prompts / scorer, so the tests compare against code that
shares no logic with the implementation under test."""

from __future__ import annotations

import math

import torch
from transformers.modeling_outputs import BaseModelOutput

PROMPT = (
    "<bos><start_of_turn>user\n"
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".\n\n'
    "<Instruct>: {instruction}\n"
    "<Query>: {query}<end_of_turn>\n"
    "<start_of_turn>model\n\n\n\n"
)
DEFAULT_INSTRUCTION = "Given a query, retrieve documents that answer the query."


def brute_force_pool(hidden: torch.Tensor, mask: torch.Tensor, ratio: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Python loops over windows and tokens, accumulating in float64."""
    batch, seq_len, width = hidden.shape
    windows = math.ceil(seq_len / ratio)
    pooled = torch.zeros(batch, windows, width, dtype=torch.float64)
    pooled_mask = torch.zeros(batch, windows, dtype=torch.long)
    for b in range(batch):
        for w in range(windows):
            total = torch.zeros(width, dtype=torch.float64)
            count = 0
            for t in range(w * ratio, min((w + 1) * ratio, seq_len)):
                if int(mask[b, t]) == 1:
                    total += hidden[b, t].double()
                    count += 1
            if count:
                pooled[b, w] = total / count
                pooled_mask[b, w] = 1
    return pooled.to(hidden.dtype), pooled_mask


def hf_margins(
    loaded,
    queries: list[str],
    documents: list[str],
    ratio: int = 1,
    instruction: str = DEFAULT_INSTRUCTION,
) -> list[float]:
    """Margins z_yes - z_no from the stock model forward (full logits), one pair at a time (no padding).

    ratio 1: plain model(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask).
    ratio > 1: encoder output pooled by brute_force_pool, passed as encoder_outputs."""
    tokenizer, model = loaded.tokenizer, loaded.model
    yes = tokenizer("yes", add_special_tokens=False)["input_ids"][0]
    no = tokenizer("no", add_special_tokens=False)["input_ids"][0]
    margins = []
    with torch.inference_mode():
        for query, document in zip(queries, documents):
            enc = tokenizer(f"<Document>: {document}", add_special_tokens=False, truncation=True,
                            max_length=loaded.spec.doc_max_len, return_tensors="pt")
            dec = tokenizer(PROMPT.format(instruction=instruction, query=query), add_special_tokens=False,
                            return_tensors="pt")
            if ratio == 1:
                out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                            decoder_input_ids=dec["input_ids"], decoder_attention_mask=dec["attention_mask"])
            else:
                hidden = model.get_encoder()(input_ids=enc["input_ids"],
                                             attention_mask=enc["attention_mask"]).last_hidden_state
                pooled, pooled_mask = brute_force_pool(hidden, enc["attention_mask"], ratio)
                out = model(encoder_outputs=BaseModelOutput(last_hidden_state=pooled), attention_mask=pooled_mask,
                            decoder_input_ids=dec["input_ids"], decoder_attention_mask=dec["attention_mask"])
            logits = out.logits[0, -1].float()
            margins.append(float(logits[yes] - logits[no]))
    return margins


def kalm_scores(loaded, docs: dict[str, str], requests, compression: int, reranker=None, **settings):
    """Score `requests` = [(query, instruction or None, [doc ids])] through KalmReranker.score_chunk (one chunk holding
    `docs`), at one compression. Returns (reranker, scores per request, the ChunkScores)."""
    from kalm_eval.rerank.base import ScoringChunk
    from kalm_eval.rerank.kalm import KalmReranker

    reranker = reranker or KalmReranker(loaded, compression=[compression], **settings)
    index = {doc_id: i for i, doc_id in enumerate(docs)}
    chunk = ScoringChunk(passages=[(d, docs[d]) for d in docs], queries=[(q, inst) for q, inst, _ in requests],
                         pairs=[(qi, index[d]) for qi, (_, _, ids) in enumerate(requests) for d in ids])
    result = reranker.score_chunk(chunk)
    flat, out, start = result.scores[f"r{compression}"], [], 0
    for _, _, ids in requests:
        out.append(flat[start : start + len(ids)])
        start += len(ids)
    return reranker, out, result
