"""Retrieval datasets in MTEB's Hugging Face layout (`mteb/<Task>` repos), read with `datasets.load_dataset`.

Layout (mteb's RetrievalDatasetLoader): configs `<subset>-corpus` (id, title, text), `<subset>-queries` (id, text),
`<subset>-qrels` (query-id, corpus-id, score) and, for candidate-restricted tasks, `<subset>-top_ranked`
(query-id, corpus-ids). Without a subset the configs are `corpus`, `queries`, `default` (or `qrels`), `top_ranked`.
Older BEIR uploads use `_id` instead of `id` and put corpus/queries in splits named `corpus`/`queries`: when the
wanted split is absent and a config has a single split, that one is used (as mteb does).

`repo` may be a hub id (pinned by `revision`) or a local directory holding a copy of the dataset repo (README.md
with its `configs:` block + data files), for offline clusters. With HF_HUB_OFFLINE=1 a hub id works once the
revision is in the local datasets cache."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ir_measures import Qrel

from kalm_eval.errors import DataError

if TYPE_CHECKING:
    from kalm_eval.data.dataset import Dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HFSource:
    repo: str  # hub id ("mteb/LoCoMo") or a local directory with a copy of that repo
    revision: str | None  # commit sha; ignored for a local directory
    subset: str | None  # config prefix (mteb hf_subset), None for single-config datasets
    split: str

    @property
    def local(self) -> bool:
        return Path(self.repo).is_dir()

    def config(self, role: str) -> str:
        return f"{self.subset}-{role}" if self.subset else role

    def describe(self, role: str) -> str:
        where = str(Path(self.repo).resolve()) if self.local else f"hf:{self.repo}@{self.revision}"
        return f"{where} [{self.config(role)}/{self.split}]"

    def identity(self) -> dict[str, Any]:
        return {"repo": str(Path(self.repo).resolve()) if self.local else self.repo,
                "revision": None if self.local else self.revision, "subset": self.subset, "split": self.split}


def load_split(src: HFSource, role: str, cache_dir: Path, *, optional: bool = False):
    """One config's rows as a `datasets.Dataset`, or None when `optional` and the config does not exist."""
    import datasets

    config = src.config(role)
    kwargs: dict[str, Any] = {"cache_dir": str(cache_dir / "hf_datasets")}
    if not src.local:
        kwargs["revision"] = src.revision
    try:
        loaded = datasets.load_dataset(src.repo, config, **kwargs)
    except ValueError as err:
        # datasets raises ValueError for an unknown config name
        if optional and "config" in str(err).lower():
            return None
        raise DataError(f"{src.describe(role)}: {err}") from None
    except (FileNotFoundError, ConnectionError, OSError) as err:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = (" (HF_HUB_OFFLINE=1 and this revision is not in the local cache: download it once online, or point "
                "the benchmark's hf_repo at a local copy of the dataset repo)") if offline else ""
        raise DataError(f"{src.describe(role)}: could not load{hint}: {err}") from None
    if isinstance(loaded, datasets.DatasetDict):
        if src.split in loaded:
            return loaded[src.split]
        if len(loaded) == 1:
            return next(iter(loaded.values()))
        raise DataError(f"{src.describe(role)}: split {src.split!r} not in {list(loaded)}")
    return loaded


def _id(row: dict, where: str) -> str:
    for key in ("id", "_id"):
        if row.get(key) is not None:
            return str(row[key])
    raise DataError(f"{where}: row without 'id' or '_id': {sorted(row)}")


def read_queries(src: HFSource, cache_dir: Path) -> tuple[dict[str, str], str]:
    ds = load_split(src, "queries", cache_dir)
    out: dict[str, str] = {}
    for i, row in enumerate(ds):
        qid = _id(row, f"{src.describe('queries')} row {i}")
        if qid in out:
            raise DataError(f"{src.describe('queries')} row {i}: duplicate query id {qid!r}")
        out[qid] = str(row.get("text") or "")
    return out, ds._fingerprint


def read_qrels(src: HFSource, cache_dir: Path) -> tuple[list[Qrel], str]:
    ds = load_split(src, "qrels", cache_dir, optional=src.subset is None)
    if ds is None:  # single-config BEIR uploads keep qrels in the `default` config
        ds = load_split(src, "default", cache_dir)
    qrels: list[Qrel] = []
    seen: set[tuple[str, str]] = set()
    for i, row in enumerate(ds):
        try:
            qid, did, score = str(row["query-id"]), str(row["corpus-id"]), int(row["score"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{src.describe('qrels')} row {i}: needs query-id, corpus-id and an integer score") from None
        if (qid, did) in seen:
            raise DataError(f"{src.describe('qrels')} row {i}: duplicate judgement for ({qid}, {did})")
        seen.add((qid, did))
        qrels.append(Qrel(qid, did, score))
    if not qrels:
        raise DataError(f"{src.describe('qrels')}: no judgements")
    return qrels, ds._fingerprint


def corpus_rows(src: HFSource, cache_dir: Path) -> tuple[Iterator[tuple[str, str, str]], str]:
    ds = load_split(src, "corpus", cache_dir)
    where = src.describe("corpus")

    def rows() -> Iterator[tuple[str, str, str]]:
        for i, row in enumerate(ds):
            yield _id(row, f"{where} row {i}"), str(row.get("title") or ""), str(row.get("text") or "")

    return rows(), ds._fingerprint


def read_top_ranked(src: HFSource, cache_dir: Path) -> tuple[dict[str, tuple[str, ...]] | None, str | None]:
    """Per-query candidate lists (mteb `top_ranked`), or (None, None) when the dataset has none."""
    ds = load_split(src, "top_ranked", cache_dir, optional=True)
    if ds is None:
        return None, None
    out: dict[str, tuple[str, ...]] = {}
    for i, row in enumerate(ds):
        try:
            out[str(row["query-id"])] = tuple(str(d) for d in row["corpus-ids"])
        except (KeyError, TypeError):
            raise DataError(f"{src.describe('top_ranked')} row {i}: needs query-id and corpus-ids") from None
    return out, ds._fingerprint


def load_mteb_dataset(src: HFSource, *, name: str, quirks, joiner: str, cache_dir: Path,
                      require_candidates: bool = False, qrels_without_query: str = "error") -> "Dataset":
    """A Dataset from an MTEB-layout repo; `top_ranked` (when present) becomes the per-query candidate sets."""
    from kalm_eval.data.dataset import assemble, materialize_corpus
    from kalm_eval.data.docstore import DocStore

    queries, q_fp = read_queries(src, cache_dir)
    qrels, r_fp = read_qrels(src, cache_dir)
    candidates, t_fp = read_top_ranked(src, cache_dir)
    if require_candidates and candidates is None:
        raise DataError(f"{src.describe('top_ranked')}: this task ranks each query only against its own candidates, "
                        "but the dataset has no top_ranked config; use the upstream layout (source=local) instead")
    rows, c_fp = corpus_rows(src, cache_dir)
    corpus_file = materialize_corpus(rows, key={"source": src.identity(), "fingerprint": c_fp}, cache_dir=cache_dir)
    corpus = DocStore(corpus_file, cache_dir)
    files = {"corpus": corpus.sha256, "queries": f"hf-fingerprint:{q_fp}", "qrels": f"hf-fingerprint:{r_fp}"}
    if t_fp:
        files["candidates"] = f"hf-fingerprint:{t_fp}"
    return assemble(
        name=name, split=src.split, all_queries=queries, qrels=qrels, corpus=corpus, quirks=quirks, joiner=joiner,
        files=files, candidates=candidates, qrels_without_query=qrels_without_query,
        sources={role: src.describe(role) for role in ("queries", "qrels", "corpus", "top_ranked")}
        | {"candidates": src.describe("top_ranked")},
        stats={"source": src.identity()},
    )
