"""The Dataset record every later stage consumes, and the BEIR-layout loader."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ir_measures import Qrel

from kalm_eval.data.docstore import DocStore
from kalm_eval.data.quirks import Quirks
from kalm_eval.data.readers import DataError, find_file, read_qrels, read_queries
from kalm_eval.records import Query, sha256_file

log = logging.getLogger(__name__)

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"


@dataclass
class Dataset:
    name: str  # e.g. "beir/scifact"
    split: str
    queries: dict[str, Query]  # only queries judged in this split, in file order
    qrels: list[Qrel]
    corpus: DocStore
    quirks: Quirks
    joiner: str  # title/text joiner of passage texts
    files: dict[str, str] = field(default_factory=dict)  # role -> sha256, for provenance
    stats: dict[str, Any] = field(default_factory=dict)  # counts and reported data issues

    def passage(self, doc_id: str) -> str:
        return self.corpus[doc_id].passage(self.joiner)

    def qrels_by_query(self) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = defaultdict(dict)
        for qrel in self.qrels:
            table[qrel.query_id][qrel.doc_id] = qrel.relevance
        return dict(table)

    def identity(self) -> dict[str, Any]:
        """What about the data affects a number (for run signatures)."""
        return {"name": self.name, "split": self.split, "files": self.files, "quirks": self.quirks.to_dict(), "joiner": self.joiner}


def load_beir(path: str | Path, *, name: str, split: str, quirks: Quirks, joiner: str, cache_dir: Path) -> Dataset:
    """Read a dataset in BEIR layout: corpus.jsonl, queries.jsonl, qrels/<split>.tsv (each optionally gzipped)."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: dataset directory not found")
    corpus_file = find_file(path, "corpus.jsonl")
    queries_file = find_file(path, "queries.jsonl")
    qrels_file = find_file(path / "qrels", f"{split}.tsv")

    all_queries = read_queries(queries_file)
    qrels = read_qrels(qrels_file)
    corpus = DocStore(corpus_file, cache_dir)

    judged = list(dict.fromkeys(q.query_id for q in qrels))
    missing_queries = [qid for qid in judged if qid not in all_queries]
    if missing_queries:
        raise DataError(
            f"{qrels_file}: {len(missing_queries)} judged query id(s) not in {queries_file}, e.g. {missing_queries[:5]}"
        )
    # Qrels pointing at documents absent from the corpus exist upstream (ArguAna: 5); keep them (they count as
    # unretrievable relevant docs, as in BEIR/MTEB) and report the count.
    missing_docs = sorted({q.doc_id for q in qrels if q.doc_id not in corpus})
    if missing_docs:
        log.warning("%s: %d judged doc id(s) not in the corpus, e.g. %s", qrels_file, len(missing_docs), missing_docs[:5])
    judged_set = set(judged)
    queries = {qid: Query(qid, text) for qid, text in all_queries.items() if qid in judged_set}
    return Dataset(
        name=name,
        split=split,
        queries=queries,
        qrels=qrels,
        corpus=corpus,
        quirks=quirks,
        joiner=joiner,
        files={"corpus": corpus.sha256, "queries": sha256_file(queries_file), "qrels": sha256_file(qrels_file)},
        stats={
            "docs": len(corpus),
            "queries": len(queries),
            "qrels": len(qrels),
            "qrels_docs_missing_from_corpus": len(missing_docs),
        },
    )


def download_beir(name: str, target: Path, md5: str) -> Path:
    """Fetch the official BEIR zip into target/<name>/ and check its md5 (used only when the data dir lacks it)."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("KALM_EVAL_OFFLINE") == "1":
        raise DataError(f"{target / name}: dataset missing and offline mode is on; place the BEIR files there")
    url = BEIR_URL.format(name=name)
    log.info("downloading %s", url)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        archive = Path(tmp) / f"{name}.zip"
        try:
            urllib.request.urlretrieve(url, archive)
        except OSError as err:
            raise DataError(f"{target / name}: dataset missing and download of {url} failed: {err}") from None
        digest = hashlib.md5(archive.read_bytes()).hexdigest()
        if digest != md5:
            raise DataError(f"{url}: md5 {digest} != expected {md5}")
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        shutil.move(str(Path(tmp) / name), target / name)
    return target / name
