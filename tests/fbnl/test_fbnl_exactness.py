"""The decoupled path (cached pooled states -> decoder only -> two logits) equals the stock full forward.

Reference numbers come from fbnl_testlib.hf_margins: the unmodified Hugging Face model, one pair at a time,
full logits; at r > 1 its encoder output is pooled by an independent brute-force loop. fp32, |diff| <= 1e-4."""

import dataclasses

import pytest
import torch

from kalm_eval.fbnl.prompts import prompt_token_ids
from kalm_eval.testing.reference import ReferenceScorer
from tests.fbnl.fbnl_testlib import hf_margins, kalm_scores

TOL = 1e-4

QUERIES = [
    "What is the capital of China?",
    "Does the protein increase risk of cancer in mice?",
]
DOCS = {
    # lengths chosen so that tails are partial for r = 2, 4, 8 and some passages are much longer than others
    "beijing": "The capital of China is Beijing.",
    "gravity": "Gravity attracts bodies toward one another.",
    "long": "The protein expression in human cells was increased in patients with cancer, " * 6,
    "mid": "Mice with the gene had a higher risk of disease after treatment with the drug.",
    "one": "no",
}


def _scores(loaded, ratio, batch_size=32, docs=DOCS, queries=QUERIES):
    reranker, scores, _ = kalm_scores(loaded, docs, [(q, None, list(docs)) for q in queries], ratio, batch_size=batch_size)
    return reranker, scores


@pytest.mark.parametrize("ratio", [1, 2, 4, 8, 32])
def test_tiny_decoupled_equals_full_forward(tiny, ratio):
    _, results = _scores(tiny, ratio)
    for query, scores in zip(QUERIES, results):
        expected = hf_margins(tiny, [query] * len(DOCS), list(DOCS.values()), ratio)
        got = [s.margin for s in scores]
        assert max(abs(a - b) for a, b in zip(got, expected)) <= TOL, (ratio, got, expected)
        for s in scores:
            assert s.p_yes == pytest.approx(1 / (1 + torch.exp(torch.tensor(-s.margin)).item()), abs=1e-7)


def test_tiny_margins_are_not_trivial(tiny):
    # guards the tests above against a degenerate model (all margins ~0 would make 1e-4 meaningless)
    _, results = _scores(tiny, 4)
    margins = [s.margin for scores in results for s in scores]
    assert max(margins) - min(margins) > 0.5


@pytest.mark.parametrize("ratio", [1, 4])
def test_pair_alone_equals_pair_in_padded_batch(tiny, ratio):
    alone = {}
    for query in QUERIES:
        for doc_id in DOCS:
            _, result = _scores(tiny, ratio, docs={doc_id: DOCS[doc_id]}, queries=[query])
            alone[query, doc_id] = result[0][0].margin
    # one batch mixing both prompt lengths and all passage lengths (heavy padding on both sides)
    _, batched = _scores(tiny, ratio, batch_size=64)
    for query, scores in zip(QUERIES, batched):
        for doc_id, score in zip(DOCS, scores):
            assert abs(score.margin - alone[query, doc_id]) <= TOL
    # and small batches with different neighbours
    _, small = _scores(tiny, ratio, batch_size=3)
    for query, scores in zip(QUERIES, small):
        for doc_id, score in zip(DOCS, scores):
            assert abs(score.margin - alone[query, doc_id]) <= TOL


def test_reference_scorer_matches_stock_forward(tiny):
    triples = [(q, None, d) for q in QUERIES for d in DOCS.values()]
    for ratio in (1, 4):
        got = [s.margin for s in ReferenceScorer(tiny, batch_size=4).score(triples, ratio)]
        expected = [m for q in QUERIES for m in hf_margins(tiny, [q] * len(DOCS), list(DOCS.values()), ratio)]
        assert max(abs(a - b) for a, b in zip(got, expected)) <= TOL


def test_query_truncation(tiny):
    tiny_short = dataclasses.replace(tiny, spec=dataclasses.replace(tiny.spec, query_max_len=8))
    long_query = "does the protein increase the risk of cancer in human cells after treatment with the drug"
    assert len(tiny.tokenizer(long_query, add_special_tokens=False)["input_ids"]) == 16
    ids = prompt_token_ids(tiny.tokenizer, long_query, None, 8)
    full = prompt_token_ids(tiny.tokenizer, long_query, None, 512)
    assert len(full) - len(ids) == 16 - 8
    head = " ".join(long_query.split()[:8])
    _, [scores], result = kalm_scores(tiny_short, DOCS, [(long_query, None, list(DOCS))], 2)
    truncated = [s.margin for s in scores]
    expected = hf_margins(tiny, [head] * len(DOCS), list(DOCS.values()), 2)
    assert max(abs(a - b) for a, b in zip(truncated, expected)) <= TOL
    assert result.variant_counters["r2"]["prompt_tokens"] == len(ids) * len(DOCS)


def test_nano_shape_exactness(nano_fp32):
    """Real Nano shape (random weights, fp32): r = 1 and r = 4 on short texts, decoupled vs full forward."""
    docs = {"beijing": DOCS["beijing"], "mid": DOCS["mid"]}
    for ratio in (1, 4):
        _, results = _scores(nano_fp32, ratio, docs=docs, queries=QUERIES[:1])
        expected = hf_margins(nano_fp32, QUERIES[:1] * len(docs), list(docs.values()), ratio)
        got = [s.margin for s in results[0]]
        assert max(abs(a - b) for a, b in zip(got, expected)) <= TOL, (ratio, got, expected)
    assert max(abs(m) for m in got) > 1e-3  # non-trivial margins


@pytest.mark.slow
@pytest.mark.parametrize("ratio", [1, 2, 8, 32])
def test_nano_shape_exactness_long_and_batched(nano_fp32, ratio):
    _, results = _scores(nano_fp32, ratio, batch_size=4)
    for query, scores in zip(QUERIES, results):
        expected = hf_margins(nano_fp32, [query] * len(DOCS), list(DOCS.values()), ratio)
        assert max(abs(s.margin - e) for s, e in zip(scores, expected)) <= TOL


@pytest.mark.parametrize("kernel", ["eager", "sdpa"])
def test_attention_kernels_agree(tiny, kernel):
    """The tiny fixture runs the CPU default (grouped); eager and sdpa give the same margins."""
    from kalm_eval.fbnl.spec import ModelSpec
    from kalm_eval.fbnl.synthetic import build_tiny_model

    assert tiny.identity["attn_implementation"] == "grouped"
    other = build_tiny_model(spec=ModelSpec(name="tiny", attn_implementation=kernel, dtype="float32", device="cpu"))
    assert other.identity["attn_implementation"] == kernel
    for ratio in (1, 4):
        _, a = _scores(tiny, ratio)
        _, b = _scores(other, ratio)
        assert max(abs(x.margin - y.margin) for xs, ys in zip(a, b) for x, y in zip(xs, ys)) <= TOL


@pytest.mark.parametrize("mask_kind", ["bool", "additive", "per_head", "none_causal"])
def test_grouped_kernel_matches_torch_sdpa(mask_kind):
    """Grouped-query attention folded into two matmuls == torch's sdpa with repeated K/V, for every mask form."""
    from types import SimpleNamespace

    from kalm_eval.fbnl.attention import grouped_attention

    g = torch.Generator().manual_seed(0)
    batch, heads, kv_heads, q_len, k_len, dim = 3, 6, 2, 5, 9, 16
    query = torch.randn(batch, heads, q_len, dim, generator=g)
    key, value = (torch.randn(batch, kv_heads, k_len, dim, generator=g) for _ in range(2))
    allowed = torch.rand(batch, 1, q_len, k_len, generator=g) > 0.3
    allowed[..., 0] = True
    if mask_kind == "per_head":
        allowed = allowed.expand(batch, heads, q_len, k_len).clone()
        allowed[:, 1, :, 1:] = False  # one head sees only key 0
    expected_mask = {"none_causal": torch.ones(q_len, k_len, dtype=torch.bool).tril(k_len - q_len)}.get(mask_kind, allowed)
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, key.repeat_interleave(heads // kv_heads, 1), value.repeat_interleave(heads // kv_heads, 1),
        attn_mask=expected_mask, scale=0.3).transpose(1, 2)
    mask = {"bool": allowed, "per_head": allowed, "none_causal": None,
            "additive": torch.where(allowed, 0.0, torch.finfo(torch.float32).min)}[mask_kind]
    got, weights = grouped_attention(SimpleNamespace(training=False, is_causal=True), query, key, value, mask,
                                     scaling=0.3)
    assert weights is None and got.shape == (batch, q_len, heads, dim)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_grouped_kernel_fully_masked_row_is_finite():
    from types import SimpleNamespace

    from kalm_eval.fbnl.attention import grouped_attention

    query, key = torch.randn(1, 2, 2, 4), torch.randn(1, 1, 3, 4)
    mask = torch.ones(1, 1, 2, 3, dtype=torch.bool)
    mask[0, 0, 1] = False  # a padding row that may attend nothing (sdpa would give NaN)
    got, _ = grouped_attention(SimpleNamespace(training=False), query, key, key, mask)
    assert torch.isfinite(got).all()


@pytest.mark.parametrize("last_layer", ["full_attention", "sliding_attention"])
def test_last_position_hidden_equals_full_decoder(last_layer):
    """The scorer's last layer, computed at the scored position only, == the stock decoder's last hidden state there
    (ragged prompts, ragged pooled states, a sliding window of 8 that long prompts cross)."""
    from torch.nn.utils.rnn import pad_sequence

    from kalm_eval.fbnl.prompts import pad_right
    from kalm_eval.fbnl.scorer import last_position_hidden
    from kalm_eval.fbnl.spec import ModelSpec
    from kalm_eval.fbnl.synthetic import TINY_TEXT_CONFIG, random_t5gemma2, t5gemma2_config

    text = dict(TINY_TEXT_CONFIG, layer_types=["full_attention", "sliding_attention"][:: 1 if last_layer == "sliding_attention" else -1])
    model = random_t5gemma2(t5gemma2_config(text, ModelSpec(name="tiny", device="cpu").resolved_attn_implementation()),
                            seed=1, std=0.1).eval()
    decoder = model.get_decoder()
    assert decoder.config.layer_types[-1] == last_layer
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 200, (n,), generator=g).tolist() for n in (3, 17, 11, 24)]
    ids, mask = pad_right(prompts, 0, 8)
    lengths = [5, 1, 12, 7]
    states = pad_sequence([torch.randn(n, text["hidden_size"], generator=g) for n in lengths], batch_first=True)
    states_mask = (torch.arange(states.shape[1])[None] < torch.tensor(lengths)[:, None]).long()
    with torch.inference_mode():
        full = decoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=states,
                       encoder_attention_mask=states_mask, use_cache=False).last_hidden_state
        expected = full[torch.arange(len(prompts)), mask.sum(1) - 1]
        got = last_position_hidden(decoder, ids, mask, states, states_mask)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not decoder.layers[-1]._forward_pre_hooks  # the capture hook is gone
