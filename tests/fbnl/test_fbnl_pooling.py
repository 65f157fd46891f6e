"""MEP pooling vs an independent brute-force loop."""

import warnings

import pytest
import torch
from tests.fbnl.fbnl_testlib import brute_force_pool

from kalm_eval.fbnl.pooling import mep_pool, pooled_length
from kalm_eval.testing.reference import reference_pool


def _batch(lengths, seq_len, width=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(len(lengths), seq_len, width, generator=generator)
    mask = torch.zeros(len(lengths), seq_len, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    return hidden, mask


@pytest.mark.parametrize("ratio", [2, 4, 8, 32])
def test_matches_brute_force_with_partial_and_padding_windows(ratio):
    # seq_len 13 is not a multiple of any ratio (partial tail); short rows leave all-padding windows.
    hidden, mask = _batch([13, 9, 1, 4], seq_len=13)
    pooled, pooled_mask = mep_pool(hidden, mask, ratio)
    expected, expected_mask = brute_force_pool(hidden, mask, ratio)
    assert pooled.shape == (4, -(-13 // ratio), 5)
    assert torch.equal(pooled_mask, expected_mask)
    torch.testing.assert_close(pooled, expected, rtol=1e-6, atol=1e-6)


def test_all_padding_windows_are_masked_and_zero():
    hidden, mask = _batch([3], seq_len=16)
    pooled, pooled_mask = mep_pool(hidden, mask, 4)
    assert pooled_mask.tolist() == [[1, 0, 0, 0]]
    assert torch.count_nonzero(pooled[0, 1:]) == 0
    # the one real window is the mean of the 3 real tokens only (a partial window)
    torch.testing.assert_close(pooled[0, 0], hidden[0, :3].mean(dim=0))


def test_ratio_one_is_identity():
    hidden, mask = _batch([7, 3], seq_len=7)
    pooled, pooled_mask = mep_pool(hidden, mask, 1)
    assert pooled is hidden and pooled_mask is mask


def test_untrained_compression_warns_in_the_config_but_works():
    from kalm_eval.knobs import from_mapping
    from kalm_eval.rerank.settings import RerankSettings

    with pytest.warns(UserWarning, match="outside the trained set"):
        from_mapping(RerankSettings, {"name": "kalm", "compression": [3]}, prefix="reranker")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_mapping(RerankSettings, {"name": "kalm", "compression": [4]}, prefix="reranker")  # trained: silent
    hidden, mask = _batch([7], seq_len=7)
    pooled, _ = mep_pool(hidden, mask, 3)
    torch.testing.assert_close(pooled, brute_force_pool(hidden, mask, 3)[0])


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_invalid_ratio_raises(bad):
    hidden, mask = _batch([7], seq_len=7)
    with pytest.raises(ValueError):
        mep_pool(hidden, mask, bad)


def test_bfloat16_bitwise_equal_to_reference_algorithm():
    # The cache must hold exactly what the reference feeds its decoder (model-dtype arithmetic).
    hidden, mask = _batch([13, 9, 2], seq_len=13, width=64)
    hidden = hidden.bfloat16()
    for ratio in (2, 4, 8):
        ours, ours_mask = mep_pool(hidden, mask, ratio)
        ref, ref_mask = reference_pool(hidden, mask, ratio)
        assert ours.dtype == torch.bfloat16
        assert torch.equal(ours, ref) and torch.equal(ours_mask, ref_mask)
        # and both are the definition (mask-aware window mean, computed in float64 here) to bf16's precision:
        # model-dtype arithmetic rounds the sum and then the quotient, each by at most bf16's unit roundoff (2**-8,
        # 8 significant bits) of its magnitude, so |ours - mean| <= 2 * 2**-8 * (window mean of |h|)
        exact, exact_mask = brute_force_pool(hidden.double(), mask, ratio)
        magnitude = brute_force_pool(hidden.double().abs(), mask, ratio)[0]
        assert torch.equal(ours_mask, exact_mask)
        assert torch.all((ours.double() - exact).abs() <= 2 * 2**-8 * magnitude)


def test_pooled_length():
    assert [pooled_length(n, 4) for n in (1, 4, 5, 8, 9)] == [1, 1, 2, 2, 3]
