"""Stand-in suites: one synthetic dataset per member of a suite (beir, miracl), at the member's own shape and path.

`write_standin("beir", out, scale=0.05)` writes, under `out` (never inside the repository):
- every member where `benchmark=<suite> data_dir=<out>` reads it, in the member's upstream layout: BEIR
  `beir/<name>/{corpus.jsonl, queries.jsonl, qrels/test.tsv}`; MIRACL the raw HF layout
  `miracl/<lang>/{topics/topics.miracl-v1.0-<lang>-dev.tsv, qrels/qrels.miracl-v1.0-<lang>-dev.tsv,
  docs-0.jsonl.gz}` (docid, title, text);
- `runs/<name>.trec.gz`: a first stage, top-`depth` per query, for `retriever=trec_run
  retriever.path=<out>/runs/{dataset}.trec.gz`;
- `standin.json`: what was asked and what was written (per member: queries, corpus, qrels rows, pairs, unique
  candidate passages). A second call with the same arguments finds it and writes nothing.

Shape per member, from its benchmark config's `sizes:` (queries, corpus, query_words, passage_words,
qrels_per_query, relevant_per_query), scaled by `scale` (queries and corpus together; at least one query and
`MIN_CORPUS` passages): passage and query lengths in words are log-normal with the config's mean
(sigma `PASSAGE_SIGMA` / `QUERY_SIGMA`); words from a fixed Zipf-distributed vocabulary; qrels rows per query
1 + Poisson(qrels_per_query - 1), the first round(relevant share) of them relevant (grade 1), the rest judged 0.

The first stage repeats candidates across queries as real runs do: each query's candidates are its judged
passages (each kept with probability `QREL_RECALL`) and draws from one popularity law over the corpus (Zipf with
exponent `POPULARITY_S` over a random order of the passages), so unique passages < pairs. The exponent is chosen
so that the unique/pairs ratio of the stand-ins of SciFact, NFCorpus and ArguAna is near the ratio of their real
BM25 top-100 runs (docs/rehearsal.md). Query ids (`q<n>`) never equal doc ids, so `ignore_identical_ids` keeps
every candidate. Deterministic: the same arguments write byte-identical files (gzip mtime 0)."""

from __future__ import annotations

import gzip
import json
import math
import string
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kalm_eval.retrieval.runfile import iter_trec
from kalm_eval.storage import write_json_atomic

MIN_CORPUS = 300
PASSAGE_SIGMA = 0.6
QUERY_SIGMA = 0.35
QREL_RECALL = 0.7
POPULARITY_S = 0.6
VOCABULARY = 30_000
ZIPF_WORDS = 1.07
SHARD_PASSAGES = 500_000
MANIFEST = "standin.json"
FORMAT = 1


@dataclass(frozen=True)
class MemberShape:
    """One suite member as the generator needs it (from its composed benchmark config)."""

    name: str  # short name = the key in the suite's `datasets:` (nq, sw, ...), the `{dataset}` of a run path
    dataset: str  # beir/nq, miracl/sw
    loader: str  # beir | miracl
    path: str  # where the loader reads topics (and, for BEIR, the corpus)
    corpus_path: str | None  # MIRACL: where the loader reads passages
    split: str
    language: str | None
    queries: int
    corpus: int
    query_words: float
    passage_words: float
    qrels_per_query: float
    relevant_per_query: float


@dataclass(frozen=True)
class MemberWritten:
    name: str
    queries: int
    corpus: int
    qrels: int
    pairs: int
    unique_passages: int
    passage_words_mean: float
    run: str


def members(suite: str, data_dir: Path, *, only: list[str] | None = None) -> list[MemberShape]:
    """The members of `benchmark=<suite>` with `data_dir=<data_dir>`, composed exactly as kalm-eval composes them."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from kalm_eval.config import CONFIG_MODULE

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"benchmark={suite}", f"data_dir={data_dir}"])
    datasets = OmegaConf.to_container(cfg.benchmark.datasets, resolve=True)
    out = []
    for key, bench in datasets.items():
        if only and key not in only:
            continue
        sizes = bench.get("sizes") or {}
        qpq = float(sizes.get("qrels_per_query", 1.0))
        out.append(MemberShape(
            name=key, dataset=bench["name"], loader=bench["loader"], path=bench["path"],
            corpus_path=bench.get("corpus_path"), split=bench["split"], language=bench.get("language"),
            queries=int(sizes["queries"]), corpus=int(sizes["corpus"]), query_words=float(sizes["query_words"]),
            passage_words=float(sizes["passage_words"]), qrels_per_query=qpq,
            relevant_per_query=float(sizes.get("relevant_per_query", qpq))))
    return out


def scaled(n: int, scale: float, floor: int) -> int:
    return max(floor, int(round(n * scale)))


def vocabulary(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed word list (English-like letters, short words frequent) and its Zipf cumulative distribution."""
    rng = np.random.default_rng([seed, 7])
    letters = np.frombuffer(string.ascii_lowercase.encode(), dtype=np.uint8)
    freq = np.array([8.2, 1.5, 2.8, 4.3, 12.7, 2.2, 2.0, 6.1, 7.0, 0.15, 0.77, 4.0, 2.4, 6.7, 7.5, 1.9, 0.095, 6.0,
                     6.3, 9.1, 2.8, 0.98, 2.4, 0.15, 2.0, 0.074])
    words: dict[str, None] = {}
    while len(words) < VOCABULARY:
        lengths = np.clip(np.round(rng.gamma(4.0, 1.4, size=VOCABULARY)), 1, 14).astype(int)
        chars = rng.choice(letters, size=int(lengths.sum()), p=freq / freq.sum()).tobytes().decode()
        pos = 0
        for length in lengths.tolist():
            words.setdefault(chars[pos:pos + length])
            pos += length
    base = sorted(list(words)[:VOCABULARY], key=lambda w: (len(w) + rng.normal(0, 2.0), w))
    cdf = np.cumsum(np.arange(1, VOCABULARY + 1, dtype=np.float64) ** -ZIPF_WORDS)
    return np.array(base, dtype=object), cdf / cdf[-1]


def _lognormal_lengths(rng: np.random.Generator, mean: float, sigma: float, n: int, low: int, high: int) -> np.ndarray:
    mu = math.log(max(mean, 1.0)) - sigma * sigma / 2  # so the mean is `mean`
    return np.clip(np.round(rng.lognormal(mu, sigma, n)), low, high).astype(np.int64)


def doc_id(shape: MemberShape, i: int) -> str:
    return f"{i // 8}#{i % 8}" if shape.loader == "miracl" else f"doc{i}"


def _passages(shape: MemberShape, n: int, rng: np.random.Generator, vocab: np.ndarray,
              cdf: np.ndarray) -> Iterator[tuple[str, str, str]]:
    batch = 20_000
    for b0 in range(0, n, batch):
        count = min(batch, n - b0)
        lengths = _lognormal_lengths(rng, shape.passage_words, PASSAGE_SIGMA, count, 3, 4000)
        titled = rng.random(count) < 0.5
        words = vocab[np.searchsorted(cdf, rng.random(int(lengths.sum())))].tolist()
        pos = 0
        for i in range(count):
            length = int(lengths[i])
            title_len = min(4, length // 5) if titled[i] else 0
            title = " ".join(words[pos:pos + title_len]).capitalize()
            text = " ".join(words[pos + title_len:pos + length]).capitalize() + "."
            pos += length
            yield doc_id(shape, b0 + i), title, text


def _gz(path: Path):
    return gzip.GzipFile(filename="", mode="wb", fileobj=open(path, "wb"), mtime=0, compresslevel=1)


def write_member(shape: MemberShape, scale: float, *, runs_dir: Path, depth: int, seed: int,
                 popularity_s: float = POPULARITY_S) -> MemberWritten:
    rng = np.random.default_rng([seed, zlib.crc32(shape.dataset.encode())])
    vocab, cdf = vocabulary(seed)
    n_docs = scaled(shape.corpus, scale, MIN_CORPUS)
    n_queries = scaled(shape.queries, scale, 1)
    topics = Path(shape.path)
    topics.mkdir(parents=True, exist_ok=True)
    (topics / "qrels").mkdir(exist_ok=True)

    # corpus, streamed; word counts kept for the queries' text
    words_total = 0
    lines: list[bytes] = []
    if shape.loader == "miracl":
        corpus_dir = Path(shape.corpus_path or shape.path)
        corpus_dir.mkdir(parents=True, exist_ok=True)
        shard_of = lambda k: _gz(corpus_dir / f"docs-{k}.jsonl.gz")  # noqa: E731
        id_key = "docid"
    else:
        shard_of = lambda k: open(topics / "corpus.jsonl", "wb")  # noqa: E731
        id_key = "_id"
    fh = shard_of(0)
    try:
        for i, (did, title, text) in enumerate(_passages(shape, n_docs, rng, vocab, cdf)):
            if shape.loader == "miracl" and i and i % SHARD_PASSAGES == 0:
                fh.write(b"".join(lines))
                lines.clear()
                fh.close()
                fh = shard_of(i // SHARD_PASSAGES)
            words_total += len(title.split()) + len(text.split())
            lines.append((json.dumps({id_key: did, "title": title, "text": text}, ensure_ascii=False) + "\n").encode())
            if len(lines) >= 20_000:
                fh.write(b"".join(lines))
                lines.clear()
        fh.write(b"".join(lines))
    finally:
        fh.close()

    # qrels: 1 + Poisson(qpq - 1) rows per query, distinct passages; the first ones relevant
    share = min(1.0, shape.relevant_per_query / max(shape.qrels_per_query, 1e-9))
    qids = [f"q{i}" for i in range(n_queries)]
    judged: list[np.ndarray] = []
    qrel_rows = 0
    for _ in qids:
        k = min(n_docs, 1 + int(rng.poisson(max(shape.qrels_per_query - 1.0, 0.0))))
        judged.append(rng.choice(n_docs, size=k, replace=False))
        qrel_rows += k
    # query text: words drawn like passages (the exact words do not matter to any cost)
    q_lengths = _lognormal_lengths(rng, shape.query_words, QUERY_SIGMA, n_queries, 1, 512)
    q_words = vocab[np.searchsorted(cdf, rng.random(int(q_lengths.sum())))].tolist()
    texts, pos = [], 0
    for length in q_lengths.tolist():
        texts.append(" ".join(q_words[pos:pos + length]).capitalize() + "?")
        pos += length
    if shape.loader == "miracl":
        lang, split = shape.language, shape.split
        (topics / "topics").mkdir(exist_ok=True)
        with open(topics / "topics" / f"topics.miracl-v1.0-{lang}-{split}.tsv", "w", encoding="utf-8") as out:
            out.writelines(f"{qid}\t{text}\n" for qid, text in zip(qids, texts))
        with open(topics / "qrels" / f"qrels.miracl-v1.0-{lang}-{split}.tsv", "w", encoding="utf-8") as out:
            for qid, docs in zip(qids, judged):
                n_rel = max(1, int(round(len(docs) * share)))
                out.writelines(f"{qid} Q0 {doc_id(shape, int(d))} {1 if j < n_rel else 0}\n" for j, d in enumerate(docs))
    else:
        with open(topics / "queries.jsonl", "w", encoding="utf-8") as out:
            out.writelines(json.dumps({"_id": qid, "text": text}) + "\n" for qid, text in zip(qids, texts))
        with open(topics / "qrels" / f"{shape.split}.tsv", "w", encoding="utf-8") as out:
            out.write("query-id\tcorpus-id\tscore\n")
            for qid, docs in zip(qids, judged):
                out.writelines(f"{qid}\t{doc_id(shape, int(d))}\t1\n" for d in docs)

    # first stage: judged passages (kept with QREL_RECALL) + popularity draws, top `depth` distinct per query
    runs_dir.mkdir(parents=True, exist_ok=True)
    order = rng.permutation(n_docs)
    pop = np.cumsum(np.arange(1, n_docs + 1, dtype=np.float64) ** -popularity_s)
    pop /= pop[-1]
    per_query = min(depth, n_docs)
    seen: set[int] = set()
    run_path = runs_dir / f"{shape.name}.trec.gz"
    with _gz(run_path) as out:
        for qid, docs in zip(qids, judged):
            chosen = dict.fromkeys(int(d) for d in docs[rng.random(len(docs)) < QREL_RECALL][:per_query])
            while len(chosen) < per_query:
                draws = order[np.minimum(np.searchsorted(pop, rng.random(2 * per_query)), n_docs - 1)]
                for d in draws.tolist():
                    chosen.setdefault(d)
                    if len(chosen) == per_query:
                        break
            ranked = list(chosen)
            rng.shuffle(ranked)  # judged passages anywhere in the list, not always on top
            seen.update(ranked)
            out.write("".join(f"{qid} Q0 {doc_id(shape, d)} {r} {per_query - r + 1:.4f} standin\n"
                              for r, d in enumerate(ranked, start=1)).encode())
    return MemberWritten(name=shape.name, queries=n_queries, corpus=n_docs, qrels=qrel_rows,
                         pairs=n_queries * per_query, unique_passages=len(seen),
                         passage_words_mean=round(words_total / n_docs, 2), run=str(run_path))


def write_standin(suite: str, out: Path, *, scale: float, depth: int = 100, seed: int = 0,
                  only: list[str] | None = None, log=print) -> dict[str, Any]:
    """Write the stand-in of `suite` under `out` (see the module docstring); returns the manifest."""
    out = Path(out).resolve()
    request = {"format": FORMAT, "suite": suite, "scale": scale, "depth": depth, "seed": seed, "only": only,
               "popularity_s": POPULARITY_S}
    manifest_path = out / f"{suite}.{MANIFEST}"
    if manifest_path.exists():
        found = json.loads(manifest_path.read_text())
        if found.get("request") == request:
            log(f"{manifest_path}: already written with the same arguments")
            return found
    written = []
    for shape in members(suite, out, only=only):
        member = write_member(shape, scale, runs_dir=out / "runs", depth=depth, seed=seed)
        log(f"{shape.dataset}: {member.queries:,} queries, {member.corpus:,} passages, {member.pairs:,} pairs, "
            f"{member.unique_passages:,} unique ({member.unique_passages / member.pairs:.3f})")
        written.append(asdict(member))
    manifest = {"request": request, "data_dir": str(out), "runs": str(out / "runs" / "{dataset}.trec.gz"),
                "members": written,
                "total": {k: sum(m[k] for m in written) for k in ("queries", "corpus", "qrels", "pairs",
                                                                    "unique_passages")}}
    write_json_atomic(manifest_path, manifest)
    return manifest


def unique_ratio(run_path: Path, depth: int = 100) -> tuple[int, int]:
    """(pairs, unique passages) of the top `depth` per query of a run written in rank order (a record's
    run.first_stage.trec.gz, a stand-in's run), read with the runs' own reader."""
    pairs, unique = 0, set()
    for ranking in iter_trec(Path(run_path)):
        head = [c.doc_id for c in ranking.candidates[:depth]]
        pairs += len(head)
        unique.update(head)
    return pairs, len(unique)
