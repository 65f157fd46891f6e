#!/usr/bin/env python
"""Write a synthetic BEIR-layout dataset of N passages for scale tests of the first stage (never committed).

    python scripts/synthetic_corpus.py --docs 10000000 --out /tmp/syn10m            # corpus.jsonl, queries, qrels
    python scripts/synthetic_corpus.py --docs 5000000 --out /tmp/syn5m --queries 200 --gzip

Shape, chosen to look like BEIR / MIRACL passages to a tokenizer, an index and a JSON parser:
- passage length in words ~ log-normal (median 60, long tail, 3..1000 words), about half with a 2-8 word title;
- words from a fixed vocabulary (default 300k types) under a Zipf law (s=1.07) whose most frequent ranks are
  English stopwords and short words, with English-like word lengths (2..15 letters, mean ~6); a third of the
  words also appear with -s / -ing / -ed suffixes, so stemming merges them;
- a share of tokens (default 0.7%) are fresh rare strings (numbers, codes, names), which makes the vocabulary
  grow with the corpus as real ones do (Heaps' law: ~2.5M distinct terms at 5M passages);
- ids like MIRACL's `<article>#<passage>`; queries are 3-8 non-stopwords from one passage, which is their qrel.
Deterministic for a given --seed."""

from __future__ import annotations

import argparse
import gzip
import json
import string
import sys
import time
from pathlib import Path

import numpy as np

STOPWORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which but "
             "have an they you were her she there been one all we their has would when if so no what more can "
             "out about its into who them than only some could these two may other then do first any my now "
             "such like our over man me even most made after also did many before must through back years").split()
LETTERS = np.frombuffer(string.ascii_lowercase.encode(), dtype=np.uint8)
# English letter frequencies (a..z), for pronounceable-looking words
LETTER_P = np.array([8.2, 1.5, 2.8, 4.3, 12.7, 2.2, 2.0, 6.1, 7.0, 0.15, 0.77, 4.0, 2.4, 6.7, 7.5, 1.9, 0.095, 6.0,
                     6.3, 9.1, 2.8, 0.98, 2.4, 0.15, 2.0, 0.074])
LETTER_P /= LETTER_P.sum()


def vocabulary(rng: np.random.Generator, types: int) -> list[str]:
    """Stopwords first, then random words whose frequency rank roughly follows their length (short = frequent)."""
    lengths = np.clip(np.round(rng.gamma(shape=6.0, scale=1.0, size=types * 2)), 2, 15).astype(int)
    words: dict[str, None] = dict.fromkeys(STOPWORDS)
    letters = rng.choice(LETTERS, size=int(lengths.sum()), p=LETTER_P).tobytes().decode()
    pos = 0
    for length in lengths.tolist():
        words.setdefault(letters[pos:pos + length])
        pos += length
        if len(words) >= types:
            break
    base = list(words)[len(STOPWORDS):]
    # frequent ranks get shorter words: sort by length plus noise
    noisy = np.array([len(w) for w in base]) + rng.normal(0, 2.0, len(base))
    base = [base[i] for i in np.argsort(noisy, kind="stable")]
    out = list(STOPWORDS)
    for i, word in enumerate(base):
        out.append(word)
        if i % 3 == 0:  # inflected forms share a stem
            out.append(word + ("s", "ing", "ed")[i % 9 // 3])
    return out[:types]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--vocab", type=int, default=300_000)
    parser.add_argument("--rare", type=float, default=0.007, help="share of tokens that are fresh rare strings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gzip", action="store_true", help="write corpus.jsonl.gz")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    vocab = vocabulary(rng, args.vocab)
    vocab_arr = np.array(vocab, dtype=object)
    ranks = np.arange(1, len(vocab) + 1, dtype=np.float64)
    cdf = np.cumsum(ranks ** -1.07)
    cdf /= cdf[-1]
    stop = set(STOPWORDS)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "qrels").mkdir(exist_ok=True)
    corpus_path = args.out / ("corpus.jsonl.gz" if args.gzip else "corpus.jsonl")
    opener = (lambda p: gzip.open(p, "wt", encoding="utf-8", compresslevel=1)) if args.gzip else \
        (lambda p: open(p, "w", encoding="utf-8"))
    query_docs = set(rng.choice(args.docs, size=min(args.queries, args.docs), replace=False).tolist())
    queries: list[tuple[str, str, str]] = []
    article = 0
    passage_no = 0
    batch = 20_000
    total_words = 0
    with opener(corpus_path) as fh:
        for b0 in range(0, args.docs, batch):
            count = min(batch, args.docs - b0)
            lengths = np.clip(np.round(rng.lognormal(mean=np.log(60), sigma=0.65, size=count)), 3, 1000).astype(np.int64)
            title_lengths = np.where(rng.random(count) < 0.5, rng.integers(2, 9, size=count), 0)
            n_words = int(lengths.sum() + title_lengths.sum())
            words = vocab_arr[np.searchsorted(cdf, rng.random(n_words))]
            rare = np.flatnonzero(rng.random(n_words) < args.rare)
            codes = rng.integers(0, 36 ** 7, size=len(rare))
            words[rare] = [np.base_repr(int(c), 36).lower() for c in codes]
            words = words.tolist()
            pos = 0
            lines = []
            for i in range(count):
                tl, ln = int(title_lengths[i]), int(lengths[i])
                title = " ".join(words[pos:pos + tl]).capitalize()
                pos += tl
                text_words = words[pos:pos + ln]
                pos += ln
                text = " ".join(text_words).capitalize() + "."
                if rng.random() < 0.3 or passage_no > 40:
                    article += 1
                    passage_no = 0
                doc_id = f"{article}#{passage_no}"
                passage_no += 1
                lines.append(json.dumps({"_id": doc_id, "title": title, "text": text}, ensure_ascii=False))
                if b0 + i in query_docs:
                    content = [w for w in text_words if w not in stop] or text_words
                    picked = rng.choice(len(content), size=min(len(content), int(rng.integers(3, 9))), replace=False)
                    queries.append((f"q{len(queries)}", " ".join(content[j] for j in sorted(picked.tolist())), doc_id))
            total_words += n_words
            fh.write("\n".join(lines) + "\n")
            if (b0 // batch) % 50 == 0:
                print(f"{b0 + count:,} / {args.docs:,} passages, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    with open(args.out / "queries.jsonl", "w", encoding="utf-8") as fh:
        for qid, text, _ in queries:
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with open(args.out / "qrels" / "test.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, _, doc_id in queries:
            fh.write(f"{qid}\t{doc_id}\t1\n")
    print(json.dumps({"docs": args.docs, "queries": len(queries), "words": total_words,
                      "mean_words_per_passage": round(total_words / args.docs, 1),
                      "corpus_bytes": corpus_path.stat().st_size, "seconds": round(time.perf_counter() - started, 1),
                      "path": str(args.out)}))


if __name__ == "__main__":
    main()
