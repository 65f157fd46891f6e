"""Small synthetic BEIR-layout datasets for first-stage tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

from kalm_eval.data.beir import load_beir
from kalm_eval.data.dataset import Dataset
from kalm_eval.data.quirks import Quirks

WORDS = ("alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega running runner runs ran cells cell "
         "protein proteins binding bound the of and to in is was it for on with as at by an be this that").split()


def make_dataset(root: Path, cache_dir: Path, *, n_docs: int = 300, n_queries: int = 12, seed: int = 0,
                 ignore_identical_ids: bool = False, duplicates: int = 0) -> Dataset:
    """Random word soup with a Zipf-ish word choice, an empty and a stopword-only document, optional duplicates."""
    rng = random.Random(seed)
    weights = [1 / (i + 1) for i in range(len(WORDS))]
    docs = []
    for i in range(n_docs):
        length = rng.choice([0, 1, 3, 8, 20, 60]) if i > 1 else 0
        text = " ".join(rng.choices(WORDS, weights, k=length))
        docs.append({"_id": f"doc{i}", "title": rng.choice(["", "Title " + rng.choice(WORDS)]), "text": text})
    docs[1]["text"], docs[1]["title"] = "the of and to", ""  # only stopwords: zero tokens
    for j in range(duplicates):  # identical texts: exact score ties
        docs.append({**docs[10 + j % 5], "_id": f"dup{j}"})
    queries = [{"_id": f"q{i}", "text": " ".join(rng.choices(WORDS, weights, k=rng.randint(1, 5)))} for i in range(n_queries)]
    queries.append({"_id": "qempty", "text": "the of"})
    if ignore_identical_ids:
        queries.append({"_id": "doc5", "text": docs[5]["text"] or "alpha"})
    if duplicates:  # a query whose best matches are the duplicated passages: a wide tie at the top
        original = docs[10]
        queries.append({"_id": "qdup", "text": f"{original['title']} {original['text']}".strip() if original["title"]
                        else original["text"].strip()})
    root.mkdir(parents=True, exist_ok=True)
    (root / "qrels").mkdir(exist_ok=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(d) + "\n" for d in docs)
    with open(root / "queries.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(q) + "\n" for q in queries)
    with open(root / "qrels" / "test.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for q in queries:
            fh.write(f"{q['_id']}\tdoc{rng.randrange(n_docs)}\t1\n")
    return load_beir(root, name="local/synthetic", split="test", quirks=Quirks(ignore_identical_ids=ignore_identical_ids),
                     joiner=" ", cache_dir=cache_dir)
