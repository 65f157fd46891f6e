"""Parity with the authors' scorer as mteb ships it: kalm-eval's P(yes), produced through the CLI config path
(`run_overrides`: benchmark=local, retriever=bm25, reranker=kalm, model.path=<checkpoint>, float32,
compression=[1,4,32]) and read back from each record's scores.reranked.tsv.gz, equals the P(yes) of mteb's own
`KaLMRerankerWrapper` (mteb/models/model_implementations/kalm_reranker.py of the installed mteb) on the same
(query, passage) pairs with the same instruction, within 1e-6, at r = 1, 4 and 32.

What the wrapper runs: no `trust_remote_code` and no hub code. It loads the checkpoint with transformers'
`AutoModelForSeq2SeqLM` (T5Gemma2ForConditionalGeneration) and `AutoTokenizer`, tokenizes `<Document>: {doc}`
(no special tokens, max_length 1024) and its own copy of the Gemma chat prompt (query tokenized alone, truncated to
512 and decoded back), pools the encoder output over windows of `chunk_size` tokens (mask-aware mean, mask = any
real token) and reads softmax([z_yes, z_no])[0] at the last real decoder position. So it runs offline on a local
checkpoint as is: the test calls its public `predict` unchanged (length-sorted batches of 32), on data loaders
built by mteb's own `_create_dataloader_from_texts`, with passage texts built by mteb's own `_corpus_to_dict`
(title + " " + text, stripped), the form mteb's SearchCrossEncoderWrapper hands to `predict`.

The checkpoint is kalm-eval's random tiny T5Gemma 2 (hidden 64, 2 layers, sliding window 8, a word-level tokenizer
with yes/no as single tokens) saved with save_pretrained: random weights, but the exact code path of the real
models. The texts are long enough that r = 32 pools several windows with a partial last one, one passage exceeds the
1024-token encoder limit and one query the 512-token query limit, so truncation is compared too. r = 1 is compared
both ways the wrapper can run it: chunk_size=1 (pooling path) and chunk_size=None (plain forward with the mask)."""

from __future__ import annotations

import csv
import gzip
import json
import random
from pathlib import Path

import pytest

from kalm_eval.storage import read_json
from tests.helpers import run_overrides

RATIOS = (1, 4, 32)
DEPTH = 6
TOLERANCE = 1e-6
INSTRUCTION = "Given a scientific claim, retrieve documents that support or refute the claim"


def _texts():
    from kalm_eval.fbnl.tiny_tokenizer import _corpus_words

    words = [w for w in _corpus_words() if len(w) > 1]
    rng = random.Random(14)

    def sentence(n: int) -> str:
        out = []
        for i in range(n):
            out.append(rng.choice(words) if rng.random() > 0.05 else "zyzzyva")  # a few unknown words
            if i % 11 == 10:
                out[-1] += rng.choice([".", ",", ";", "?"])
        return " ".join(out)

    lengths = [7, 19, 33, 45, 64, 70, 97, 130, 150, 1100]  # 1100 words: beyond the 1024-token encoder limit
    corpus = [{"_id": f"d{i}", "title": sentence(3), "text": sentence(n)} for i, n in enumerate(lengths)]
    # queries share words with the corpus so BM25 retrieves several candidates each; the last one exceeds 512 tokens
    queries = [{"_id": f"q{i}", "text": " ".join(corpus[j]["text"].split()[k] for j, k in zip(range(i, i + 6), (0, 1, 2, 3, 4, 5)))
                + " " + sentence(4)} for i in range(4)]
    queries.append({"_id": "q4", "text": sentence(600) + " " + corpus[9]["text"].split()[0]})
    return corpus, queries


def _write_beir(root: Path, corpus, queries) -> Path:
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    qrels = "".join(f"q{i}\td{(2 * i) % 10}\t1\n" for i in range(5))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return root


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    from kalm_eval.fbnl.synthetic import build_tiny_model

    tmp = tmp_path_factory.mktemp("parity")
    checkpoint = build_tiny_model(seed=3).save_pretrained(tmp / "ckpt")
    corpus, queries = _texts()
    beir_dir = _write_beir(tmp / "beir", corpus, queries)
    outputs = run_overrides("benchmark=local", f"benchmark.path={beir_dir}", "benchmark.label=parity",
                            "retriever=bm25", f"retriever.depth={DEPTH}", "reranker=kalm", f"reranker.depth={DEPTH}",
                            f"reranker.instruction='{INSTRUCTION}'", "model=tiny", f"model.path={checkpoint}",
                            "model.dtype=float32", "model.device=cpu", "compression=[1,4,32]",
                            "reranker.latency_batches=0", f"cache_dir={tmp / 'cache'}", f"output_dir={tmp / 'out'}")
    scores = {}
    for out in outputs:
        with gzip.open(out / "scores.reranked.tsv.gz", "rt") as fh:
            scores[int(out.name[1:])] = {(r["query_id"], r["doc_id"]): float(r["p_yes"])
                                         for r in csv.DictReader(fh, delimiter="\t")}
    return checkpoint, corpus, queries, outputs, scores


def _mteb_scores(checkpoint: Path, pairs, corpus, queries, chunk_size):
    pytest.importorskip("mteb")
    from mteb._create_dataloaders import _corpus_to_dict, _create_dataloader_from_texts
    from mteb.models.model_implementations.kalm_reranker import KaLMRerankerWrapper

    wrapper = KaLMRerankerWrapper(str(checkpoint), device="cpu", dtype="float32", chunk_size=chunk_size,
                                  instruction=INSTRUCTION)
    docs = {d["_id"]: _corpus_to_dict({"id": d["_id"], "title": d["title"], "text": d["text"]})["text"] for d in corpus}
    texts = {q["_id"]: q["text"] for q in queries}
    p_yes = wrapper.predict(_create_dataloader_from_texts([texts[q] for q, _ in pairs]),
                            _create_dataloader_from_texts([docs[d] for _, d in pairs]),
                            task_metadata=None, hf_split="test", hf_subset="default")
    return dict(zip(pairs, (float(p) for p in p_yes)))


def test_records_cover_the_hard_cases(records):
    _, _, _, outputs, scores = records
    assert [o.name for o in outputs] == ["r1", "r4", "r32"]
    for out in outputs:
        reranker = read_json(out / "metrics.json")["protocol"]["reranker"]
        assert reranker["instruction"] == INSTRUCTION and reranker["model"]["checkpoint"]["dtype"] == "float32"
    pairs = set(scores[1])
    assert pairs == set(scores[4]) == set(scores[32]) and len(pairs) >= 20
    assert any(d == "d9" for _, d in pairs) and any(q == "q4" for q, _ in pairs)  # both truncations exercised
    spread = [p for p in scores[4].values()]
    assert max(spread) - min(spread) > 0.05  # scores differ between pairs: the comparison is not trivially flat


@pytest.mark.parametrize("ratio, chunk_size", [(1, 1), (1, None), (4, 4), (32, 32)])
def test_p_yes_equals_mtebs_kalm_wrapper(records, ratio, chunk_size):
    checkpoint, corpus, queries, _, scores = records
    ours = scores[ratio]
    pairs = sorted(ours)
    theirs = _mteb_scores(checkpoint, pairs, corpus, queries, chunk_size)
    deltas = {pair: abs(ours[pair] - theirs[pair]) for pair in pairs}
    worst = max(deltas, key=deltas.get)
    print(f"r={ratio} chunk_size={chunk_size}: {len(pairs)} pairs, max |dP(yes)| = {deltas[worst]:.3e} at {worst}")
    assert deltas[worst] <= TOLERANCE, (worst, ours[worst], theirs[worst])
    if ratio != 1:  # pooling matters: the same pairs at r = 1 score differently
        assert max(abs(ours[p] - scores[1][p]) for p in pairs) > 100 * TOLERANCE
