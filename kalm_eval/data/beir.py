"""BEIR datasets: the BEIR file layout (corpus.jsonl, queries.jsonl, qrels/<split>.tsv; each optionally gzipped)
under `benchmark.path`, fetched from the official BEIR zip (md5-checked) when absent and online, or MTEB's HF upload
(`benchmark.source=mteb`, mteb_repo at mteb_revision)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

from kalm_eval.data.dataset import Dataset, assemble
from kalm_eval.data.docstore import DocStore
from kalm_eval.data.quirks import Quirks
from kalm_eval.data.readers import find_file, read_qrels, read_queries
from kalm_eval.errors import DataError
from kalm_eval.storage import sha256_file

log = logging.getLogger(__name__)

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"


def load_beir_benchmark(cfg: dict[str, Any], cache_dir: Path) -> Dataset:
    """The `beir` loader of conf/benchmark/beir/<name>.yaml (and benchmark=local)."""
    quirks = Quirks.from_config(cfg.get("quirks"))
    if cfg.get("source", "local") == "mteb":  # optional: MTEB's HF upload (mteb/<name>) at a pinned revision
        from kalm_eval.data.mteb_hf import HFSource, load_mteb_dataset

        src = HFSource(cfg["mteb_repo"], cfg.get("mteb_revision"), None, cfg["split"])
        return load_mteb_dataset(src, name=cfg["name"], quirks=quirks, joiner=cfg.get("joiner", " "), cache_dir=cache_dir)
    path = Path(cfg["path"])
    if not path.exists() and cfg.get("md5"):
        path = download_beir(path.name, path.parent, cfg["md5"])
    return load_beir(path, name=cfg["name"], split=cfg["split"], quirks=quirks,
                     joiner=cfg.get("joiner", " "), cache_dir=cache_dir)


def load_beir(path: str | Path, *, name: str, split: str, quirks: Quirks, joiner: str, cache_dir: Path) -> Dataset:
    """Read a dataset in BEIR layout: corpus.jsonl, queries.jsonl, qrels/<split>.tsv (each optionally gzipped)."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: dataset directory not found")
    corpus_file = find_file(path, "corpus.jsonl")
    queries_file = find_file(path, "queries.jsonl")
    qrels_file = find_file(path / "qrels", f"{split}.tsv")

    corpus = DocStore(corpus_file, cache_dir)
    return assemble(
        name=name,
        split=split,
        all_queries=read_queries(queries_file),
        qrels=read_qrels(qrels_file),
        corpus=corpus,
        quirks=quirks,
        joiner=joiner,
        files={"corpus": corpus.sha256, "queries": sha256_file(queries_file), "qrels": sha256_file(qrels_file)},
        sources={"queries": str(queries_file), "qrels": str(qrels_file)},
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
