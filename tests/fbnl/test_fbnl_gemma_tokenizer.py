"""The real Gemma 3 tokenizer (from the installed GGUF package): answer ids, special tokens, prompt ids.

The first run converts the tokenizer out of the GGUF file (~35-45 s, once per machine); later runs load the
converted copy from ~/.cache/kalm_eval in a few seconds."""

import pytest

from kalm_eval.testing.gemma_tokenizer import gemma3_tokenizer_unavailable_reason, load_gemma3_tokenizer
from kalm_eval.fbnl.model import answer_token_id
from kalm_eval.fbnl.prompts import passage_token_ids, prompt_token_ids

# Measured once with this tokenizer (65 tokens) for the card's golden query and the default instruction.
GOLDEN_PROMPT_IDS = [
    2, 105, 2364, 107, 92280, 3363, 506, 21685, 20239, 506, 6035, 2721, 580, 506, 30822, 532, 506, 134714,
    3847, 236761, 7918, 600, 506, 3890, 740, 1186, 577, 623, 4443, 236775, 653, 623, 1904, 3056, 108, 236820,
    218875, 109720, 17770, 496, 7609, 236764, 33205, 9413, 600, 3890, 506, 7609, 236761, 107, 236820, 7990,
    109720, 2900, 563, 506, 5279, 529, 5818, 236881, 106, 107, 105, 4368, 110,
]
QUERY_TOKENS = 7  # "What is the capital of China?" alone


@pytest.fixture(scope="module")
def gemma():
    reason = gemma3_tokenizer_unavailable_reason()
    if reason:
        pytest.skip(reason)
    return load_gemma3_tokenizer()


def test_answer_ids(gemma):
    assert answer_token_id(gemma, "yes") == 4443
    assert answer_token_id(gemma, "no") == 1904
    assert gemma.padding_side == "right" and gemma.pad_token_id == 0


def test_prompt_token_ids_are_exact(gemma):
    ids = prompt_token_ids(gemma, "What is the capital of China?", None, 512)
    assert len(ids) == 65
    assert ids == GOLDEN_PROMPT_IDS
    # special tokens are single ids inside the prompt (written literally, tokenised with no added specials)
    assert ids[:2] == [2, 105] and ids.count(2) == 1
    assert ids.count(105) == 2 and ids.count(106) == 1
    assert ids[-5:] == [106, 107, 105, 4368, 110]  # <end_of_turn> \n <start_of_turn> model \n\n\n\n
    tokens = gemma.convert_ids_to_tokens(ids)
    assert tokens[:2] == ["<bos>", "<start_of_turn>"] and tokens[-1] == "\n\n\n\n"


def test_query_truncation_with_gemma(gemma):
    long_query = "What is the capital of China? " * 100
    assert len(gemma(long_query, add_special_tokens=False)["input_ids"]) == 701
    base = len(GOLDEN_PROMPT_IDS) - QUERY_TOKENS
    assert len(prompt_token_ids(gemma, long_query, None, 512)) == base + 512
    assert len(prompt_token_ids(gemma, long_query, None, 16)) == base + 16


def test_encoder_text_ids(gemma):
    ids = passage_token_ids(gemma, "The capital of China is Beijing.", 1024)
    assert ids == [236820, 15124, 109720, 669, 5279, 529, 5818, 563, 30530, 236761]  # "<Document>: ...", no <bos>
    assert len(passage_token_ids(gemma, "word " * 2000, 1024)) == 1024
