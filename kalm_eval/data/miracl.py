"""MIRACL (dev topics, qrels and the per-language Wikipedia passage corpus).

Sources (`benchmark.source`):
- local: topics + qrels in `path`, either BEIR layout (queries.jsonl[.gz], qrels/<split>.tsv; ../shared/data/miracl)
  or the raw layout of the HF repo `miracl/miracl` (topics/topics.miracl-v1.0-<lang>-<split>.tsv: `qid<TAB>query`;
  qrels/qrels.miracl-v1.0-<lang>-<split>.tsv: `qid Q0 docid rel`), and the corpus in `corpus_path`, either
  corpus.jsonl[.gz] (BEIR: _id, title, text) or the shards of HF `miracl/miracl-corpus`
  (miracl-corpus-v1.0-<lang>/docs-*.jsonl.gz: docid, title, text).
- hf: the same raw files fetched from `miracl/miracl` and `miracl/miracl-corpus` at pinned revisions with
  huggingface_hub (HF_HUB_OFFLINE=1 works once they are in the hub cache).
- mteb: MTEB's `mteb/MIRACLRetrieval` (configs <lang>-corpus / -queries / -qrels, split dev), or a local copy.

Protocol (harness-lessons §3.4): doc ids `<wikipedia-id>#<n>` are strings; qrels keep the judged-0 rows (grade 0
= judged non-relevant; relevance_threshold 1); identical query/doc ids are NOT dropped (MIRACL de/es/fa/fr/hi/yo/zh
have query ids that equal relevant passage ids). Passage = title + joiner + text (joiner " " like BEIR)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kalm_eval.data.dataset import Dataset, assemble, file_identity, materialize_corpus
from kalm_eval.data.docstore import DocStore
from kalm_eval.data.quirks import Quirks
from kalm_eval.errors import DataError
from kalm_eval.data.readers import find_file, iter_jsonl, read_lines, read_qrels, read_queries
from kalm_eval.storage import sha256_file

log = logging.getLogger(__name__)

LANGUAGES = ("ar", "bn", "de", "en", "es", "fa", "fi", "fr", "hi", "id", "ja", "ko", "ru", "sw", "te", "th", "yo", "zh")
TOPICS_REPO = "miracl/miracl"
CORPUS_REPO = "miracl/miracl-corpus"
WHERE_TO_GET = (f"get the passages from Hugging Face {CORPUS_REPO} (miracl-corpus-v1.0-<lang>/docs-*.jsonl.gz), "
                "or use benchmark.source=hf (pinned download) or benchmark.source=mteb (mteb/MIRACLRetrieval)")


@dataclass(frozen=True)
class TopicFiles:
    queries: Path
    qrels: Path
    layout: str  # "beir" | "miracl"


def load_miracl(cfg: dict[str, Any], cache_dir: Path) -> Dataset:
    lang = cfg["language"]
    if lang not in LANGUAGES:
        raise DataError(f"benchmark {cfg.get('name')!r}: unknown MIRACL language {lang!r}; known: {list(LANGUAGES)}")
    quirks = Quirks.from_config(cfg.get("quirks"))
    source = cfg.get("source", "local")
    if source == "mteb":
        from kalm_eval.data.mteb_hf import HFSource, load_mteb_dataset

        src = HFSource(cfg.get("mteb_repo") or "mteb/MIRACLRetrieval", cfg.get("mteb_revision"), lang, cfg["split"])
        return load_mteb_dataset(src, name=cfg["name"], quirks=quirks, joiner=cfg.get("joiner", " "), cache_dir=cache_dir)
    if source == "hf":
        topics_dir, corpus_dir = _download(cfg)
    elif source == "local":
        topics_dir, corpus_dir = Path(cfg["path"]), Path(cfg["corpus_path"]) if cfg.get("corpus_path") else None
    else:
        raise DataError(f"benchmark {cfg.get('name')!r}: source must be local | hf | mteb, got {source!r}")

    topics = find_topics(topics_dir, lang, cfg["split"])
    # Check the corpus before reading anything large: a run without passages must stop here, before any model loads.
    corpus_files = find_corpus(corpus_dir, lang)
    all_queries = read_topics(topics)
    qrels = read_qrels(topics.qrels)
    corpus_file = _corpus_jsonl(corpus_files, cache_dir)
    corpus = DocStore(corpus_file, cache_dir)
    return assemble(
        name=cfg["name"], split=cfg["split"], all_queries=all_queries, qrels=qrels, corpus=corpus, quirks=quirks,
        joiner=cfg.get("joiner", " "),
        files={"corpus": corpus.sha256, "queries": sha256_file(topics.queries), "qrels": sha256_file(topics.qrels)},
        sources={"queries": str(topics.queries), "qrels": str(topics.qrels), "corpus": str(corpus_dir)},
        stats={"qrels_judged_nonrelevant": sum(1 for q in qrels if q.relevance <= 0),
               "corpus_files": len(corpus_files)},
    )


def find_topics(directory: Path, lang: str, split: str) -> TopicFiles:
    """BEIR layout (queries.jsonl[.gz] + qrels/<split>.tsv) or raw miracl layout (topics/ + qrels/ TSVs)."""
    if not directory.is_dir():
        raise DataError(f"{directory}: MIRACL topics directory not found (benchmark.path); it needs queries.jsonl[.gz] + "
                        f"qrels/{split}.tsv, or topics/ and qrels/ from HF {TOPICS_REPO} miracl-v1.0-{lang}/")
    raw_topics = directory / "topics" / f"topics.miracl-v1.0-{lang}-{split}.tsv"
    raw_qrels = directory / "qrels" / f"qrels.miracl-v1.0-{lang}-{split}.tsv"
    if raw_topics.exists() and raw_qrels.exists():
        return TopicFiles(raw_topics, raw_qrels, "miracl")
    return TopicFiles(find_file(directory, "queries.jsonl"), find_file(directory / "qrels", f"{split}.tsv"), "beir")


def find_corpus(directory: Path | None, lang: str) -> list[Path]:
    """corpus.jsonl[.gz] (BEIR) or docs-*.jsonl.gz shards (miracl-corpus), in shard order; DataError if absent."""
    expected = (f"corpus.jsonl[.gz] (BEIR layout) or docs-*.jsonl.gz shards (miracl-corpus-v1.0-{lang}/)")
    if directory is None:
        raise DataError(f"MIRACL-{lang}: no passages configured (benchmark.corpus_path is empty); expected {expected}. "
                        f"{WHERE_TO_GET}")
    if not directory.is_dir():
        raise DataError(f"{directory}: MIRACL-{lang} passages missing: the directory does not exist; expected "
                        f"{expected} there. {WHERE_TO_GET}")
    for name in ("corpus.jsonl", "corpus.jsonl.gz"):
        if (directory / name).exists():
            return [directory / name]
    shards = sorted(directory.glob("docs-*.jsonl*"), key=_shard_number)
    if shards:
        return shards
    raise DataError(f"{directory}: MIRACL-{lang} passages missing: none of {expected} found there. {WHERE_TO_GET}")


def _shard_number(path: Path) -> tuple[int, str]:
    stem = path.name.split(".")[0].removeprefix("docs-")
    return (int(stem), path.name) if stem.isdigit() else (1 << 30, path.name)


def read_topics(topics: TopicFiles) -> dict[str, str]:
    if topics.layout == "beir":
        return read_queries(topics.queries)
    queries: dict[str, str] = {}
    for lineno, line in read_lines(topics.queries):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(f"{topics.queries}:{lineno}: expected 'qid<TAB>query', got {len(fields)} field(s)")
        qid = fields[0].strip()
        if qid in queries:
            raise DataError(f"{topics.queries}:{lineno}: duplicate query id {qid!r}")
        queries[qid] = fields[1]
    return queries


def _corpus_jsonl(files: list[Path], cache_dir: Path) -> Path:
    """A BEIR corpus file is used as is; miracl-corpus shards (`docid`) are copied once into BEIR form."""
    if len(files) == 1 and files[0].name.startswith("corpus.jsonl"):
        return files[0]
    return materialize_corpus(_shard_rows(files), key={"miracl_corpus": file_identity(files)}, cache_dir=cache_dir)


def _shard_rows(files: list[Path]) -> Iterator[tuple[str, str, str]]:
    for path in files:
        for _, obj in iter_jsonl(path, ("docid", "text")):
            yield str(obj["docid"]), str(obj.get("title") or ""), str(obj["text"])


def _download(cfg: dict[str, Any]) -> tuple[Path, Path]:
    """Fetch topics/qrels and the corpus shards at the pinned revisions (or find them in the hub cache)."""
    from huggingface_hub import snapshot_download

    lang, split = cfg["language"], cfg["split"]
    hf = cfg.get("hf") or {}
    try:
        topics_root = snapshot_download(
            TOPICS_REPO, repo_type="dataset", revision=hf.get("topics_revision"),
            allow_patterns=[f"miracl-v1.0-{lang}/topics/*-{split}.tsv", f"miracl-v1.0-{lang}/qrels/*-{split}.tsv"])
        corpus_root = snapshot_download(
            CORPUS_REPO, repo_type="dataset", revision=hf.get("corpus_revision"),
            allow_patterns=[f"miracl-corpus-v1.0-{lang}/*"])
    except Exception as err:  # hub errors differ by version (offline, missing entry, HTTP)
        raise DataError(f"MIRACL-{lang}: could not fetch {TOPICS_REPO}@{hf.get('topics_revision')} / "
                        f"{CORPUS_REPO}@{hf.get('corpus_revision')} ({type(err).__name__}: {err}); with "
                        "HF_HUB_OFFLINE=1 the files must already be in the hub cache, or use source=local") from None
    return Path(topics_root) / f"miracl-v1.0-{lang}", Path(corpus_root) / f"miracl-corpus-v1.0-{lang}"
