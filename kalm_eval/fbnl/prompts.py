"""Exact text inputs of KaLM-Reranker-V1 (reference §4), identical to the checkpoint code / MTEB wrapper.

Encoder (the passage side, cacheable):  "<Document>: {document}", no special tokens added, truncated to
doc_max_len tokens (prefix included), right padding.

Decoder (the online side, one per query): the Gemma chat prompt below; special tokens are written literally
and the text is tokenised with add_special_tokens=False. Only the query is truncated: tokenise it alone,
keep query_max_len tokens, decode back (special tokens kept, no space clean-up) and insert. The prompt as a
whole is never truncated. Batches pad on the right to a multiple of 8.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from kalm_eval.storage import sha256_text

DEFAULT_INSTRUCTION = "Given a query, retrieve documents that answer the query."
SYSTEM_INSTRUCTION = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".'
)
ENCODER_TEMPLATE = "<Document>: {document}"
# Ends with `<start_of_turn>model` + FOUR newlines (no <think> tags).
DECODER_TEMPLATE = (
    "<bos><start_of_turn>user\n"
    "{system}\n\n"
    "<Instruct>: {instruction}\n"
    "<Query>: {query}<end_of_turn>\n"
    "<start_of_turn>model\n\n\n\n"
)
PAD_TO_MULTIPLE_OF = 8


def prompt_template_sha256() -> str:
    """Hash of everything textual that shapes the inputs (goes into run signatures)."""
    return sha256_text("\x00".join([ENCODER_TEMPLATE, DECODER_TEMPLATE, SYSTEM_INSTRUCTION]))


def encoder_text(document: str) -> str:
    return ENCODER_TEMPLATE.format(document=document)


def truncate_query(tokenizer: PreTrainedTokenizerBase, query: str, query_max_len: int) -> str:
    """Tokenise the query alone, keep at most query_max_len tokens, decode back exactly as the reference does."""
    ids = tokenizer(query, add_special_tokens=False, truncation=True, max_length=query_max_len)["input_ids"]
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def decoder_prompt(
    tokenizer: PreTrainedTokenizerBase, query: str, instruction: str | None, query_max_len: int
) -> str:
    # Concatenation instead of str.format on user text: braces in queries stay literal either way, but this
    # also keeps the exact template order obvious.
    truncated = truncate_query(tokenizer, query, query_max_len)
    instruction = DEFAULT_INSTRUCTION if instruction is None else instruction
    return (
        "<bos><start_of_turn>user\n"
        + SYSTEM_INSTRUCTION
        + "\n\n<Instruct>: "
        + instruction
        + "\n<Query>: "
        + truncated
        + "<end_of_turn>\n<start_of_turn>model\n\n\n\n"
    )


def prompt_token_ids(
    tokenizer: PreTrainedTokenizerBase, query: str, instruction: str | None, query_max_len: int
) -> list[int]:
    text = decoder_prompt(tokenizer, query, instruction, query_max_len)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def passage_token_ids(tokenizer: PreTrainedTokenizerBase, document: str, doc_max_len: int) -> list[int]:
    text = encoder_text(document)
    return list(tokenizer(text, add_special_tokens=False, truncation=True, max_length=doc_max_len)["input_ids"])


def passage_token_ids_batch(tokenizer: PreTrainedTokenizerBase, documents: Sequence[str], doc_max_len: int
                            ) -> list[list[int]]:
    """`passage_token_ids` of many documents in one tokenizer call (a fast tokenizer encodes the batch in Rust:
    ~2x faster than one call per passage). Same ids: each text is encoded alone, no padding."""
    if not documents:
        return []
    texts = [encoder_text(document) for document in documents]
    encoded = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=doc_max_len)["input_ids"]
    return [list(ids) for ids in encoded]


def pad_right(
    sequences: Sequence[Sequence[int]], pad_id: int, multiple_of: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists into (ids [B, S], mask [B, S]) int64 tensors, S rounded up to `multiple_of`.

    Same result as `tokenizer(..., padding=True, pad_to_multiple_of=...)` with right padding."""
    longest = max(len(s) for s in sequences)
    if multiple_of:
        longest = -(-longest // multiple_of) * multiple_of
    ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.as_tensor(list(sequence), dtype=torch.long)
        mask[row, : len(sequence)] = 1
    return ids, mask
