"""Exact parity of the three baseline reranker families with their authors' scoring code, on random tiny checkpoints.

* qwen3:         `Qwen3Reranker` vs mteb's own `Qwen3RerankerWrapper` (installed mteb), same checkpoint directory;
* cross_encoder: `CrossEncoderReranker` vs `sentence_transformers.CrossEncoder(dir).predict`;
* bge_gemma:     `BgeGemmaReranker` vs an independent plain-transformers forward written below from FlagEmbedding's
                 `BaseLLMReranker.compute_score_single_gpu` (FlagOpen/FlagEmbedding 7ed43d67), sharing no code with it.

All in float32 on CPU, on PAIRS (20 pairs of varied lengths, one passage long enough to be truncated by every
family). The tolerance is 1e-5 on the authors' score scale: batching and padding differ between the
implementations (length-sorted batches, last-position-only logits), which moves float32 results by ~1e-7.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from kalm_eval.errors import ConfigError
from kalm_eval.checkpoints import FP16_MESSAGE
from kalm_eval.rerank.bge_gemma import BgeGemmaReranker
from kalm_eval.rerank.cross_encoder import CrossEncoderReranker
from kalm_eval.rerank.qwen3 import MODEL_CARD_INSTRUCTION, MTEB_DEFAULT_INSTRUCTION, Qwen3Reranker
from kalm_eval.testing.baselines import build_tiny_cross_encoder, build_tiny_gemma, build_tiny_qwen3

TOLERANCE = 1e-5

LONG_PASSAGE = " ".join(
    f"Section {i}: the water cycle moves water between the ocean, the air and the land; evaporation, "
    f"condensation and precipitation repeat in cycle number {i}." for i in range(40)
)  # ~5,000 characters: longer than every test max_length, in tokens, for every tiny tokenizer

# (query, instruction or None, passage): short and long texts, repeated queries, empty-ish and unicode inputs.
PAIRS: list[tuple[str, str | None, str]] = [
    ("what is the capital of china", None, "The capital of China is Beijing."),
    ("what is the capital of china", None, "Gravity attracts bodies toward one another."),
    ("what is the capital of china", "Given a question, retrieve passages that answer it",
     "Beijing is the capital of the People's Republic of China and its second largest city."),
    ("water", None, LONG_PASSAGE),
    ("water cycle", "Given a query, retrieve documents that answer the query", "Water evaporates, then rains."),
    ("yes or no", None, "no"),
    ("is the query relevant", None, "yes"),
    ("How many people live in Berlin?", None, "Berlin had a population of 3,520,031 in 2019."),
    ("How many people live in Berlin?", None, "Berlin is well known for its museums."),
    ("search engine ranking", "Given a web search query, retrieve relevant passages that answer the query",
     "Search engines rank documents by estimated relevance to the query, often with a learned reranker."),
    ("quantum", None, "Quantum mechanics describes nature at the smallest scales of energy levels of atoms."),
    ("a", None, "b"),
    ("capital of France", "Retrieve the answer", "Paris is the capital and most populous city of France, "
     "with an estimated population of 2,102,650 residents in January 2023 in an area of more than 105 km2."),
    ("Qu'est-ce que la photosynthèse ?", None, "La photosynthèse convertit la lumière en énergie chimique."),
    ("中国的首都在哪儿", None, "北京是中国的首都。"),
    ("document with braces {x}", None, "Braces {like these} and <Document>: tags stay literal."),
    ("long query " + "about the water and the air " * 6, None, "The air holds water vapour."),
    ("deep learning", "Given a claim, find documents that refute the claim",
     "Deep learning is a subset of machine learning that uses neural networks with many layers."),
    ("what is the capital of china", None, "The capital of China is Beijing. " * 8),
    ("tides", None, "The Moon's gravity causes the tides of the ocean."),
]


def max_abs_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def settings(family: str, directory, **extra):
    return {"name": f"tiny_{family}", "family": family, "path": str(directory), "dtype": "float32",
            "device": "cpu", **extra}


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
    return build_tiny_qwen3(tmp_path_factory.mktemp("qwen3"), seed=0)


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory):
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("cross_encoder"), seed=0)


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
    return build_tiny_gemma(tmp_path_factory.mktemp("gemma"), seed=0)


QWEN3_MAX_LENGTH = 512
CROSS_ENCODER_MAX_LENGTH = 128
GEMMA_MAX_LENGTH = 128


@pytest.fixture(scope="module")
def qwen3(qwen3_dir):
    return Qwen3Reranker.from_config(settings("qwen3", qwen3_dir, max_length=QWEN3_MAX_LENGTH), batch_size=4)


@pytest.fixture(scope="module")
def cross_encoder(cross_encoder_dir):
    return CrossEncoderReranker.from_config(
        settings("cross_encoder", cross_encoder_dir, max_length=CROSS_ENCODER_MAX_LENGTH), batch_size=4)


@pytest.fixture(scope="module")
def bge_gemma(gemma_dir):
    return BgeGemmaReranker.from_config(settings("bge_gemma", gemma_dir, max_length=GEMMA_MAX_LENGTH), batch_size=4)


def test_pairs_cover_truncation_and_spread(qwen3, cross_encoder, bge_gemma):
    """The fixture data exercises what parity must cover: >= 18 pairs, truncation, scores that differ."""
    assert len(PAIRS) >= 18
    long_index = [i for i, (_, _, p) in enumerate(PAIRS) if p == LONG_PASSAGE]
    assert len(qwen3.encode(PAIRS)[long_index[0]]) == QWEN3_MAX_LENGTH  # truncated to exactly max_length
    assert all(len(ids) < QWEN3_MAX_LENGTH for i, ids in enumerate(qwen3.encode(PAIRS)) if i not in long_index)
    tok = cross_encoder.model.tokenizer
    assert len(tok(PAIRS[3][0], LONG_PASSAGE)["input_ids"]) > CROSS_ENCODER_MAX_LENGTH
    passage_ids = bge_gemma.tokenizer("B: " + LONG_PASSAGE, add_special_tokens=False)["input_ids"]
    assert len(passage_ids) > GEMMA_MAX_LENGTH
    for reranker in (qwen3, cross_encoder, bge_gemma):
        margins = [s.margin for s in reranker.score_pairs(PAIRS)]
        assert np.std(margins) > 0.05, f"{reranker.name}: tiny model scores barely differ: {margins}"
        assert len(set(np.round(margins, 6))) >= len(PAIRS) - 3


# ---------------------------------------------------------------------------------------------------------------
# qwen3 vs mteb's wrapper
# ---------------------------------------------------------------------------------------------------------------


def mteb_qwen3_scores(model_dir, triples, *, instructions: bool, batch_size: int = 5) -> np.ndarray:
    """Scores from the installed mteb Qwen3RerankerWrapper.predict, fed the way mteb feeds it (two DataLoaders
    over datasets with "text" [+ "instruction"] columns). Its constructor takes a local directory as is."""
    from datasets import Dataset
    from mteb.models.model_implementations.qwen3_reranker import Qwen3RerankerWrapper
    from torch.utils.data import DataLoader

    wrapper = Qwen3RerankerWrapper(str(model_dir), device="cpu", max_length=QWEN3_MAX_LENGTH, dtype=torch.float32)
    queries = {"text": [q for q, _, _ in triples]}
    if instructions:
        queries["instruction"] = [i for _, i, _ in triples]
    passages = {"text": [p for _, _, p in triples]}
    return np.asarray(wrapper.predict(
        DataLoader(Dataset.from_dict(queries), batch_size=batch_size),
        DataLoader(Dataset.from_dict(passages), batch_size=batch_size),
        task_metadata=None, hf_split="test", hf_subset="default", batch_size=batch_size, show_progress_bar=False,
    ))


def test_qwen3_matches_mteb_wrapper(qwen3, qwen3_dir):
    ours = qwen3.score_pairs(PAIRS)
    # mteb reads None as *its* default; pass the model card's text, which is what our None means.
    explicit = [(q, MODEL_CARD_INSTRUCTION if i is None else i, p) for q, i, p in PAIRS]
    reference = mteb_qwen3_scores(qwen3_dir, explicit, instructions=True)
    delta = max_abs_diff([s.p_yes for s in ours], reference)
    print(f"\nqwen3 vs mteb Qwen3RerankerWrapper: {len(PAIRS)} pairs, max |delta P(yes)| = {delta:.3e}")
    assert delta <= TOLERANCE
    for score in ours:  # margin and P(yes) are one score on two scales
        assert abs(1 / (1 + math.exp(-score.margin)) - score.p_yes) <= 1e-6


def test_qwen3_default_instruction_model_card_vs_mteb(qwen3_dir, qwen3):
    """None means the model card's instruction here, mteb's own (different) text in mteb; both are reproducible."""
    no_instruction = [(q, None, p) for q, _, p in PAIRS]
    mteb_default = mteb_qwen3_scores(qwen3_dir, no_instruction, instructions=False)
    ours_card = [s.p_yes for s in qwen3.score_pairs(no_instruction)]
    assert max_abs_diff(ours_card, mteb_default) > 1e-3  # the two defaults really differ
    as_mteb = Qwen3Reranker.from_config(
        settings("qwen3", qwen3_dir, max_length=QWEN3_MAX_LENGTH, default_instruction=MTEB_DEFAULT_INSTRUCTION),
        batch_size=3)
    delta = max_abs_diff([s.p_yes for s in as_mteb.score_pairs(no_instruction)], mteb_default)
    print(f"\nqwen3 (default_instruction = mteb's) vs mteb without instructions: max |delta| = {delta:.3e}")
    assert delta <= TOLERANCE
    assert qwen3.identity().inputs["default_instruction_source"] == "Qwen3-Reranker model card"
    assert as_mteb.identity().inputs["default_instruction_source"] == "mteb Qwen3RerankerWrapper"


# ---------------------------------------------------------------------------------------------------------------
# cross_encoder vs sentence-transformers
# ---------------------------------------------------------------------------------------------------------------


def test_cross_encoder_matches_sentence_transformers(cross_encoder, cross_encoder_dir):
    from sentence_transformers import CrossEncoder

    reference = CrossEncoder(str(cross_encoder_dir), max_length=CROSS_ENCODER_MAX_LENGTH, device="cpu")
    pairs = [(q, p) for q, _, p in PAIRS]
    raw = reference.predict(pairs, batch_size=4, activation_fn=torch.nn.Identity(), show_progress_bar=False)
    default = reference.predict(pairs, batch_size=4, show_progress_bar=False)  # num_labels=1 -> Sigmoid
    ours = cross_encoder.score_pairs(PAIRS)
    delta_margin = max_abs_diff([s.margin for s in ours], raw)
    delta_p = max_abs_diff([s.p_yes for s in ours], default)
    print(f"\ncross_encoder vs CrossEncoder.predict: {len(PAIRS)} pairs, max |delta logit| = {delta_margin:.3e}, "
          f"max |delta predict()| = {delta_p:.3e}")
    assert delta_margin <= TOLERANCE and delta_p <= TOLERANCE
    assert cross_encoder.identity().inputs["predict_default_activation"] == "torch.nn.modules.activation.Sigmoid"
    assert np.all((default > 0) & (default < 1)) and np.any(raw < 0)  # predict() really returned sigmoid(logit)


def test_cross_encoder_ignores_instructions(cross_encoder):
    other = [(q, "Some instruction that must not matter", p) for q, _, p in PAIRS]
    assert [s.margin for s in cross_encoder.score_pairs(other)] == [s.margin for s in cross_encoder.score_pairs(PAIRS)]


# ---------------------------------------------------------------------------------------------------------------
# bge_gemma vs an independent FlagEmbedding-layout forward
# ---------------------------------------------------------------------------------------------------------------

FLAG_PROMPT = ("Given a query A and a passage B, determine whether the passage contains an answer to the query by "
               "providing a prediction of either 'Yes' or 'No'.")


def flag_embedding_reference(model_dir, pairs, *, max_length: int, batch_size: int = 4) -> tuple[list, list]:
    """FlagEmbedding `BaseLLMReranker.compute_score` (decoder_only/base.py @ 7ed43d67), transcribed step by step
    onto plain transformers: returns (raw 'Yes' logits, normalize=True scores) in input order."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    # AbsReranker.get_detailed_inputs with query_instruction_for_rerank="A: ", passage_...="B: ", format "{}{}"
    sentence_pairs = [["{}{}".format("A: ", q), "{}{}".format("B: ", p)] for q, p in pairs]
    query_max_length = max_length * 3 // 4
    all_queries_inputs = [tokenizer(q, return_tensors=None, add_special_tokens=False, max_length=query_max_length,
                                    truncation=True) for q, _ in sentence_pairs]
    all_passages_inputs = [tokenizer(p, return_tensors=None, add_special_tokens=False, max_length=max_length,
                                     truncation=True) for _, p in sentence_pairs]
    length_sorted_idx = np.argsort([-len(x["input_ids"]) - len(y["input_ids"])
                                    for x, y in zip(all_queries_inputs, all_passages_inputs)])
    prompt_inputs = tokenizer(FLAG_PROMPT, return_tensors=None, add_special_tokens=False)["input_ids"]
    sep_inputs = tokenizer("\n", return_tensors=None, add_special_tokens=False)["input_ids"]
    encode_max_length = max_length + len(sep_inputs) + len(prompt_inputs)
    yes_loc = tokenizer("Yes", add_special_tokens=False)["input_ids"][0]

    def prepare_for_model(ids, pair_ids, max_length):
        # transformers 4.x `prepare_for_model(truncation='only_second', add_special_tokens=False)`
        num_tokens_to_remove = len(ids) + len(pair_ids) - max_length
        if num_tokens_to_remove > 0 and len(pair_ids) > num_tokens_to_remove:
            if tokenizer.truncation_side == "right":
                pair_ids = pair_ids[:-num_tokens_to_remove]
            else:
                pair_ids = pair_ids[num_tokens_to_remove:]
        return {"input_ids": ids + pair_ids}

    all_scores = []
    for start in range(0, len(pairs), batch_size):
        batch_inputs = []
        for i in length_sorted_idx[start:start + batch_size]:
            query_ids, passage_ids = all_queries_inputs[i]["input_ids"], all_passages_inputs[i]["input_ids"]
            if tokenizer.bos_token_id is not None and tokenizer.bos_token_id != tokenizer.pad_token_id:
                item = prepare_for_model([tokenizer.bos_token_id] + query_ids, sep_inputs + passage_ids,
                                         encode_max_length)
            else:
                item = prepare_for_model(query_ids, sep_inputs + passage_ids, encode_max_length)
            item["input_ids"] = item["input_ids"] + sep_inputs + prompt_inputs
            item["attention_mask"] = [1] * len(item["input_ids"])
            batch_inputs.append(item)
        collated = tokenizer.pad(batch_inputs, padding=True, pad_to_multiple_of=8, return_tensors="pt")  # Collater
        with torch.no_grad():
            logits = model(**collated, output_hidden_states=True).logits
        mask = collated["attention_mask"]
        if mask[:, -1].sum() == mask.shape[0]:  # last_logit_pool
            pooled = logits[:, -1, :]
        else:
            lengths = mask.sum(dim=1) - 1
            pooled = torch.stack([logits[i, lengths[i], :] for i in range(logits.shape[0])], dim=0)
        all_scores.extend(pooled[:, yes_loc].cpu().float().tolist())
    all_scores = [all_scores[idx] for idx in np.argsort(length_sorted_idx)]
    return all_scores, [float(1 / (1 + np.exp(-s))) for s in all_scores]


def test_bge_gemma_matches_flag_embedding_layout(bge_gemma, gemma_dir):
    pairs = [(q, p) for q, _, p in PAIRS]
    raw, normalized = flag_embedding_reference(gemma_dir, pairs, max_length=GEMMA_MAX_LENGTH)
    ours = bge_gemma.score_pairs(PAIRS)
    delta_raw = max_abs_diff([s.margin for s in ours], raw)
    delta_p = max_abs_diff([s.p_yes for s in ours], normalized)
    print(f"\nbge_gemma vs FlagEmbedding-layout forward: {len(PAIRS)} pairs, max |delta Yes logit| = {delta_raw:.3e}, "
          f"max |delta sigmoid| = {delta_p:.3e}")
    assert delta_raw <= TOLERANCE and delta_p <= TOLERANCE


def test_bge_gemma_token_layout_text(bge_gemma):
    """The layout spelled out: <bos>A: {query}\\nB: {passage}\\n{prompt}, nothing else, no special tokens added."""
    (ids,) = bge_gemma.encode([("what is water", None, "water is wet")])
    text = bge_gemma.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    assert text == f"<bos>A: what is water\nB: water is wet\n{FLAG_PROMPT}"


def test_bge_gemma_right_padding_gives_same_scores(bge_gemma, tmp_path):
    """Same weights, tokenizer padding on the right: last-real-token pooling keeps every score."""
    right = build_tiny_gemma(tmp_path / "right", seed=0, padding_side="right")
    reranker = BgeGemmaReranker.from_config(settings("bge_gemma", right, max_length=GEMMA_MAX_LENGTH), batch_size=4)
    assert reranker.tokenizer.padding_side == "right"
    delta = max_abs_diff([s.margin for s in reranker.score_pairs(PAIRS)],
                         [s.margin for s in bge_gemma.score_pairs(PAIRS)])
    assert delta <= TOLERANCE


# ---------------------------------------------------------------------------------------------------------------
# Batching, identity, configuration errors
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["qwen3", "cross_encoder", "bge_gemma"])
def test_batch_composition_does_not_change_scores(family, qwen3_dir, cross_encoder_dir, gemma_dir):
    cls, directory, max_length = {
        "qwen3": (Qwen3Reranker, qwen3_dir, QWEN3_MAX_LENGTH),
        "cross_encoder": (CrossEncoderReranker, cross_encoder_dir, CROSS_ENCODER_MAX_LENGTH),
        "bge_gemma": (BgeGemmaReranker, gemma_dir, GEMMA_MAX_LENGTH),
    }[family]
    scores = {}
    for batch_size in (1, 7):
        reranker = cls.from_config(settings(family, directory, max_length=max_length), batch_size=batch_size)
        scores[batch_size] = reranker.score_pairs(PAIRS)
    delta = max(max_abs_diff([s.margin for s in scores[1]], [s.margin for s in scores[7]]),
                max_abs_diff([s.p_yes for s in scores[1]], [s.p_yes for s in scores[7]]))
    print(f"\n{family}: batch 1 vs 7, max |delta| = {delta:.3e}")
    assert delta <= TOLERANCE


def test_identity_tracks_weights_and_records_no_path(qwen3, qwen3_dir, cross_encoder, bge_gemma, tmp_path):
    other = build_tiny_qwen3(tmp_path / "other", seed=1)
    changed = Qwen3Reranker.from_config(settings("qwen3", other, max_length=QWEN3_MAX_LENGTH), batch_size=4)
    assert changed.identity().checkpoint["weights_fingerprint"] != qwen3.identity().checkpoint["weights_fingerprint"]
    assert {k: v for k, v in changed.identity().checkpoint.items() if k != "weights_fingerprint"} == \
        {k: v for k, v in qwen3.identity().checkpoint.items() if k != "weights_fingerprint"}
    assert changed.identity().inputs == qwen3.identity().inputs
    for reranker in (qwen3, changed, cross_encoder, bge_gemma):
        identity = {**reranker.identity().checkpoint, **reranker.identity().inputs}
        text = json.dumps(identity)
        assert str(tmp_path.parent) not in text and str(qwen3_dir) not in text and "/tmp" not in text
        assert identity["checkpoint"] == "local" and identity["revision"] is None
        assert identity["weights_fingerprint"].startswith("sha256:")
        assert identity["dtype"] == "float32" and identity["max_length"] > 0 and identity["score"]
        assert "prompt_template_sha256" in identity
    assert qwen3.describe_device() == {"device": "cpu", "dtype": "float32"}


@pytest.mark.parametrize("cls", [Qwen3Reranker, CrossEncoderReranker, BgeGemmaReranker])
@pytest.mark.parametrize("dtype", ["float16", "fp16", "half"])
def test_fp16_refused(cls, dtype, tmp_path):
    with pytest.raises(ConfigError) as error:
        cls.from_config(settings(cls.name, tmp_path, dtype=dtype), batch_size=4)
    assert "model.dtype" in str(error.value) and FP16_MESSAGE in str(error.value)


@pytest.mark.parametrize("change, knob", [
    ({"path": None, "hf_id": "Qwen/Qwen3-Reranker-0.6B"}, "model.revision"),
    ({"path": None, "hf_id": "Qwen/Qwen3-Reranker-0.6B", "revision": "main"}, "model.revision"),
    ({"path": None}, "model.hf_id"),
    ({"path": "/nonexistent/checkpoint"}, "model.path"),
    ({"family": "bge_gemma"}, "model.family"),
    ({"max_lenght": 512}, "model.max_lenght"),
    ({"dtype": "int8"}, "model.dtype"),
    ({"device": "gpu"}, "model.device"),
    ({"max_length": "8192"}, "model.max_length"),
])
def test_config_errors_name_the_knob(change, knob, qwen3_dir):
    with pytest.raises(ConfigError, match=knob.replace(".", r"\.")):
        Qwen3Reranker.from_config({**settings("qwen3", qwen3_dir), **change}, batch_size=4)


def test_gemma_query_budget_checked(gemma_dir):
    with pytest.raises(ConfigError, match=r"model\.query_max_length"):
        BgeGemmaReranker.from_config(settings("bge_gemma", gemma_dir, max_length=64, query_max_length=65),
                                     batch_size=2)


BF16_BOUND = {"qwen3": 0.14, "cross_encoder": 0.16, "bge_gemma": 0.025}


@pytest.mark.parametrize("family", ["qwen3", "cross_encoder", "bge_gemma"])
def test_bfloat16_scores_follow_float32(family, qwen3, cross_encoder, bge_gemma, qwen3_dir, cross_encoder_dir,
                                         gemma_dir):
    """dtype bfloat16 loads in bf16 and still upcasts the score to float32 (close to the fp32 scores)."""
    cls, directory, max_length, fp32 = {
        "qwen3": (Qwen3Reranker, qwen3_dir, QWEN3_MAX_LENGTH, qwen3),
        "cross_encoder": (CrossEncoderReranker, cross_encoder_dir, CROSS_ENCODER_MAX_LENGTH, cross_encoder),
        "bge_gemma": (BgeGemmaReranker, gemma_dir, GEMMA_MAX_LENGTH, bge_gemma),
    }[family]
    half = cls.from_config(settings(family, directory, max_length=max_length, dtype="bfloat16"), batch_size=4)
    assert half.identity().checkpoint["dtype"] == "bfloat16" and half.describe_device()["dtype"] == "bfloat16"
    low = [s.margin for s in half.score_pairs(PAIRS)]
    high = [s.margin for s in fp32.score_pairs(PAIRS)]
    # bf16 vs fp32 on these pairs, measured at 1 and 2 threads: qwen3 0.0698, cross_encoder 0.0783, bge_gemma 0.0126
    # (the same at both); bounds at 2x that, so a wrong upcast or a bf16 score path would show
    assert np.all(np.isfinite(low)) and max_abs_diff(low, high) < BF16_BOUND[family]
