"""Exact prompt texts, query truncation and padding (tiny tokenizer; the Gemma one is in its own test)."""

import torch
from tests.fbnl.fbnl_testlib import DEFAULT_INSTRUCTION as EXPECTED_DEFAULT
from tests.fbnl.fbnl_testlib import PROMPT

from kalm_eval.fbnl.prompts import (
    DEFAULT_INSTRUCTION,
    decoder_prompt,
    encoder_text,
    pad_right,
    passage_token_ids,
    prompt_token_ids,
    truncate_query,
)
from kalm_eval.fbnl.tiny_tokenizer import build_tiny_tokenizer

TOKENIZER = build_tiny_tokenizer()


def test_default_instruction():
    assert DEFAULT_INSTRUCTION == EXPECTED_DEFAULT


def test_decoder_prompt_is_exact():
    # (a query the word-level tokenizer round-trips unchanged: decode joins tokens with single spaces)
    text = decoder_prompt(TOKENIZER, "What is the capital of China", None, 512)
    assert text == PROMPT.format(instruction=EXPECTED_DEFAULT, query="What is the capital of China")
    assert text.endswith("<start_of_turn>model\n\n\n\n") and "<think>" not in text
    custom = decoder_prompt(TOKENIZER, "q { x }", "Given {a} claim", 512)  # braces stay literal
    assert "<Instruct>: Given {a} claim\n<Query>: q { x }<end_of_turn>" in custom


def test_encoder_text_and_truncation():
    assert encoder_text("The capital.") == "<Document>: The capital."
    ids = passage_token_ids(TOKENIZER, "the cell " * 50, doc_max_len=16)
    assert len(ids) == 16  # prefix counts toward the limit
    assert TOKENIZER.convert_ids_to_tokens(ids[:4]) == ["<", "Document", ">", ":"]
    assert TOKENIZER.bos_token_id not in ids  # no special tokens added on the encoder side


def test_query_truncation_keeps_exactly_query_max_len_tokens():
    long_query = " ".join(["protein expression in human cells"] * 30)  # 150 tokens
    truncated = truncate_query(TOKENIZER, long_query, 12)
    assert len(TOKENIZER(truncated, add_special_tokens=False)["input_ids"]) == 12
    full = prompt_token_ids(TOKENIZER, long_query, None, 12)
    short = prompt_token_ids(TOKENIZER, " ".join(long_query.split()[:12]), None, 12)
    assert full == short
    untruncated = prompt_token_ids(TOKENIZER, long_query, None, 512)
    assert len(untruncated) - len(full) == 150 - 12


def test_special_tokens_are_single_tokens_in_prompt():
    ids = prompt_token_ids(TOKENIZER, "What is the capital of China?", None, 512)
    tokens = TOKENIZER.convert_ids_to_tokens(ids)
    assert ids[0] == TOKENIZER.bos_token_id and tokens[:2] == ["<bos>", "<start_of_turn>"]
    assert tokens.count("<end_of_turn>") == 1 and tokens.count("<start_of_turn>") == 2
    assert tokens[-1] == "\n\n\n\n"


def test_pad_right_matches_tokenizer_padding():
    texts = ["the cell", "the capital of China is Beijing", "no"]
    expected = TOKENIZER(texts, padding=True, pad_to_multiple_of=8, add_special_tokens=False, return_tensors="pt")
    ids, mask = pad_right([TOKENIZER(t, add_special_tokens=False)["input_ids"] for t in texts],
                          TOKENIZER.pad_token_id, 8)
    assert torch.equal(ids, expected["input_ids"]) and torch.equal(mask, expected["attention_mask"])
    assert ids.shape[1] % 8 == 0


def test_template_constant_matches_builder():
    from kalm_eval.fbnl.prompts import DECODER_TEMPLATE, SYSTEM_INSTRUCTION

    built = decoder_prompt(TOKENIZER, "the cell", "Given a claim", 512)
    assert built == DECODER_TEMPLATE.format(system=SYSTEM_INSTRUCTION, instruction="Given a claim", query="the cell")
