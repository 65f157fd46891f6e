"""Golden outputs of the real KaLM-Reranker-V1-Nano (model card / vLLM README, reference §6).

Runs only with local weights: KALM_NANO_PATH=<checkpoint dir>, or the pinned revision in the HF cache
(offline). Card values are bf16 on CUDA with chunk_size (= r) 4; on other hardware bf16 kernels round
differently, so margins are compared with a tolerance of a few bf16 steps."""

import math
import os
from pathlib import Path

import pytest

from kalm_eval.fbnl.model import load_model
from kalm_eval.fbnl.spec import ModelSpec
from kalm_eval.rerank.kalm import KalmReranker
from kalm_eval.testing.nano import hf_cache_snapshot, pinned_checkpoint
from kalm_eval.testing.reference import ReferenceScorer
from tests.fbnl.fbnl_testlib import kalm_scores

QUERY = "What is the capital of China?"
DOCS = {"beijing": "The capital of China is Beijing.", "gravity": "Gravity attracts bodies toward one another."}
GOLDEN = {
    None: {"p_yes": (9.9984646e-01, 6.8936106e-07), "margin": (8.78125, -14.1875)},
    "Given a web search query, retrieve passages that answer the query.": {"p_yes": (9.972850e-01, 5.896418e-07)},
}
MARGIN_TOL = 0.25


@pytest.fixture(scope="module")
def nano():
    hf_id, revision = pinned_checkpoint("nano")
    if os.environ.get("KALM_NANO_PATH"):
        spec = ModelSpec(name="nano", path=str(Path(os.environ["KALM_NANO_PATH"])), hf_id=hf_id, dtype="bfloat16")
    elif hf_cache_snapshot("nano") is not None:
        spec = ModelSpec(name="nano", hf_id=hf_id, revision=revision, dtype="bfloat16")
    else:
        pytest.skip(f"no local Nano weights: set KALM_NANO_PATH or cache {hf_id}@{revision[:10]} (offline run)")
    return load_model(spec)


def test_golden_outputs(nano):
    assert (nano.yes_id, nano.no_id) == (4443, 1904)
    reranker = KalmReranker(nano, compression=[4])
    for instruction, golden in GOLDEN.items():
        scores = kalm_scores(nano, DOCS, [(QUERY, instruction, list(DOCS))], 4, reranker=reranker)[1][0]
        for score, p_expected in zip(scores, golden["p_yes"]):
            expected_margin = math.log(p_expected) - math.log1p(-p_expected)
            assert abs(score.margin - expected_margin) <= MARGIN_TOL, (instruction, score, p_expected)
        for score, margin in zip(scores, golden.get("margin", ())):
            assert abs(score.margin - margin) <= MARGIN_TOL
    assert scores[0].p_yes > 0.99 and scores[1].p_yes < 1e-5


def test_decoupled_equals_reference_on_real_weights(nano):
    reference = ReferenceScorer(nano)
    for ratio in (1, 4):
        ours = [s.margin for s in kalm_scores(nano, DOCS, [(QUERY, None, list(DOCS))], ratio)[1][0]]
        ref = [s.margin for s in reference.score([(QUERY, None, d) for d in DOCS.values()], ratio)]
        assert max(abs(a - b) for a, b in zip(ours, ref)) <= 0.0625  # one bf16 step at |margin| ~ 8-16
