"""LMEB (Long-horizon Memory Embedding Benchmark): 22 datasets, 193 subsets, 4 memory types.

One evaluated unit = one subset (`lmeb/<Dataset>/<subset>`); a dataset's score is the mean over its subsets.

Sources (`benchmark.source`):
- local: the upstream layout, i.e. the HF dataset `KaLM-Embedding/LMEB` downloaded to `path`
  (`<MemType>/<Folder>/[<subset>/]{queries.jsonl, qrels.tsv, corpus.jsonl, candidates.jsonl}`). Where each file
  lives differs per dataset: `layout:` in each conf/benchmark/lmeb/<Dataset>.yaml mirrors the reference code (KaLM-Embedding/LMEB @ 753bfc59,
  src/abstasks/LocalRetrieval.py and SubsetRetrieval.py).
- mteb: MTEB's `mteb/<Task>` datasets (configs `<subset>-corpus|queries|qrels|top_ranked`) or a local copy.

File formats (upstream): queries.jsonl `{"id", "text"}`; corpus.jsonl `{"id", "title", "text"}` (an `_id` column
is ignored, as upstream drops it); qrels.tsv `query-id<TAB>corpus-id<TAB>score` without header; candidates.jsonl
`{"scene_id", "candidate_doc_ids": [...]}`.

Scenes: the reference ranks the whole corpus, then keeps for each query only the docs of its scene. The scene of
a query is the query id itself (scene_key "query_id") or its first two `_`-separated parts (scene_key "prefix2",
e.g. `conv-26_3_q12` -> `conv-26_3`); a query whose scene is not listed keeps the whole corpus (as upstream).
Here the scene becomes `Dataset.candidates` and every first stage scores only those docs (same ranking, because
BM25 statistics and embeddings are corpus-level)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kalm_eval.data.dataset import Dataset, assemble, file_identity, materialize_corpus
from kalm_eval.data.docstore import DocStore
from kalm_eval.data.quirks import Quirks
from kalm_eval.errors import ConfigError, DataError
from kalm_eval.knobs import from_mapping, knob
from kalm_eval.data.readers import iter_jsonl, read_qrels
from kalm_eval.storage import sha256_file

log = logging.getLogger(__name__)

MEMORY_TYPES = ("Episodic", "Dialogue", "Semantic", "Procedural")


@dataclass(frozen=True)
class Layout:
    """Where one LMEB dataset's files live under the LMEB root: `layout:` in conf/benchmark/lmeb/<Dataset>.yaml
    (facts from the reference code's loaders, KaLM-Embedding/LMEB src/abstasks)."""

    upstream: str = knob(doc="task name in the reference code and in task_instructions.json")
    folder: str = knob(doc="under the LMEB root")
    nested: bool = knob(doc="true: one folder per subset; false: a single subset, files in `folder` itself")
    corpus_at: str = knob(choices=("dataset", "scenario", "subset"),
                          doc="dataset: shared by all subsets | scenario: parent of the subset folder | subset")
    candidates_at: str | None = knob(choices=("dataset", "subset"), doc="null = no scenes: rank the whole corpus")
    scene_key: str = knob("prefix2", choices=("query_id", "prefix2"))


def layout_of(cfg: dict[str, Any]) -> Layout:
    if cfg.get("memory_type") not in MEMORY_TYPES:
        raise ConfigError(f"benchmark.memory_type={cfg.get('memory_type')!r}: must be one of {', '.join(MEMORY_TYPES)}")
    return from_mapping(Layout, cfg.get("layout"), prefix="benchmark.layout")


@dataclass(frozen=True)
class SubsetFiles:
    queries: Path
    qrels: Path
    corpus: Path
    candidates: Path | None


def unit_name(dataset: str, subset: str) -> str:
    return f"lmeb/{dataset}/{subset}"


def subset_folder(layout: Layout, subset: str) -> str:
    """Subset key (MTEB form, `scenario__query_type` for nested scenarios) -> relative folder."""
    return subset.replace("__", "/") if layout.corpus_at == "scenario" else subset


def locate(root: Path, layout: Layout, subset: str) -> SubsetFiles:
    dataset_dir = root / layout.folder
    data_dir = dataset_dir / subset_folder(layout, subset) if layout.nested else dataset_dir
    corpus_dir = {"dataset": dataset_dir, "scenario": data_dir.parent, "subset": data_dir}[layout.corpus_at]
    cand_dir = {"dataset": dataset_dir, "subset": data_dir, None: None}[layout.candidates_at]
    files = SubsetFiles(data_dir / "queries.jsonl", data_dir / "qrels.tsv", corpus_dir / "corpus.jsonl",
                        cand_dir / "candidates.jsonl" if cand_dir else None)
    missing = [str(p) for p in (files.queries, files.qrels, files.corpus, files.candidates) if p and not p.exists()]
    if missing:
        raise DataError(f"LMEB {layout.upstream}/{subset}: missing file(s) {missing}; benchmark.path must be the root of "
                        "a download of the HF dataset KaLM-Embedding/LMEB (upstream layout), or use source=mteb")
    return files


def load_lmeb(cfg: dict[str, Any], cache_dir: Path) -> Dataset:
    dataset = cfg["dataset"]
    layout = layout_of(cfg)
    subsets = list(cfg.get("subsets") or {})
    subset = cfg.get("subset")
    if subset is None and len(subsets) == 1:
        subset = subsets[0]
    if subset is None:
        raise DataError(f"benchmark {cfg['name']!r} has {len(subsets)} subsets; run it as a suite (kalm_eval.suite."
                        f"run_suite) or pick one with benchmark.subset=<one of {subsets}>")
    if subset not in subsets:
        raise DataError(f"benchmark {cfg['name']!r}: unknown subset {subset!r}; known: {subsets}")
    quirks = Quirks.from_config(cfg.get("quirks"))
    name = unit_name(dataset, subset)
    source = cfg.get("source", "local")
    if source == "mteb":
        from kalm_eval.data.mteb_hf import HFSource, load_mteb_dataset

        src = HFSource(cfg.get("mteb_repo") or f"mteb/{dataset}", cfg.get("mteb_revision"), subset, cfg["split"])
        return load_mteb_dataset(src, name=name, quirks=quirks, joiner=cfg.get("joiner", " "), cache_dir=cache_dir,
                                 require_candidates=layout.candidates_at is not None, qrels_without_query="drop")
    if source != "local":
        raise DataError(f"benchmark {cfg.get('name')!r}: source must be local | mteb, got {source!r}")

    root = Path(cfg["path"])
    if not root.is_dir():
        raise DataError(f"{root}: LMEB root not found (benchmark.path); download the HF dataset KaLM-Embedding/LMEB "
                        "there (upstream layout), or use source=mteb")
    files = locate(root, layout, subset)
    instructions_file = root / "task_instructions.json"  # present when the GitHub repo's copy sits next to the data
    if instructions_file.exists():
        for problem in check_instructions(read_task_instructions(instructions_file), dataset, layout,
                                          {subset: (cfg.get("subsets") or {})[subset]}):
            log.warning("%s: configured instruction differs: %s", instructions_file, problem)
    queries = read_lmeb_queries(files.queries)
    qrels = read_qrels(files.qrels)
    corpus = DocStore(materialize_corpus(_corpus_rows(files.corpus), key={"lmeb_corpus": file_identity([files.corpus])},
                                         cache_dir=cache_dir), cache_dir)
    candidates = None
    digests = {"corpus": corpus.sha256, "queries": sha256_file(files.queries), "qrels": sha256_file(files.qrels)}
    if files.candidates:
        scenes = read_scenes(files.candidates)
        candidates = scenes_to_candidates(scenes, queries, layout.scene_key)
        digests["candidates"] = sha256_file(files.candidates)
    return assemble(
        name=name, split=cfg["split"], all_queries=queries, qrels=qrels, corpus=corpus, quirks=quirks,
        joiner=cfg.get("joiner", " "), files=digests, candidates=candidates, qrels_without_query="drop",
        sources={"queries": str(files.queries), "qrels": str(files.qrels), "corpus": str(files.corpus),
                 "candidates": str(files.candidates)},
        stats={"memory_type": cfg["memory_type"]},
    )


def read_lmeb_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for lineno, obj in iter_jsonl(path, ("text",)):
        qid = _row_id(obj, path, lineno)
        if qid in queries:
            raise DataError(f"{path}:{lineno}: duplicate query id {qid!r}")
        queries[qid] = str(obj["text"] or "")
    return queries


def _row_id(obj: dict, path: Path, lineno: int) -> str:
    # Upstream drops an `_id` column and reads `id`; accept `_id` only when `id` is absent.
    value = obj.get("id", obj.get("_id"))
    if value is None:
        raise DataError(f"{path}:{lineno}: missing field 'id'")
    return str(value)


def _corpus_rows(path: Path):
    for lineno, obj in iter_jsonl(path, ()):
        yield _row_id(obj, path, lineno), str(obj.get("title") or ""), str(obj.get("text") or "")


def read_scenes(path: Path) -> dict[str, tuple[str, ...]]:
    scenes: dict[str, tuple[str, ...]] = {}
    for lineno, obj in iter_jsonl(path, ("scene_id", "candidate_doc_ids")):
        ids = obj["candidate_doc_ids"]
        if not isinstance(ids, list):
            raise DataError(f"{path}:{lineno}: candidate_doc_ids must be a list")
        scene = str(obj["scene_id"])
        if scene in scenes:
            raise DataError(f"{path}:{lineno}: duplicate scene_id {scene!r}")
        scenes[scene] = tuple(str(d) for d in ids)
    return scenes


def scene_of(query_id: str, scene_key: str) -> str:
    return query_id if scene_key == "query_id" else "_".join(query_id.split("_")[:2])


def scenes_to_candidates(scenes: dict[str, tuple[str, ...]], queries: dict[str, str],
                         scene_key: str) -> dict[str, tuple[str, ...]]:
    """query id -> its scene's doc ids, for queries whose scene is listed (others rank the whole corpus)."""
    out = {}
    for qid in queries:
        scene = scene_of(qid, scene_key)
        if scene in scenes:
            out[qid] = scenes[scene]
    return out


def check_instructions(task_instructions: dict[str, dict[str, str]], dataset: str, layout: Layout,
                       subsets: dict[str, str]) -> list[str]:
    """Compare configured per-subset instructions with LMEB's task_instructions.json (reference code's lookup:
    EPBench/KnowMeBench/ReMe by the query-type part of the subset, MemGovern by its name); returns mismatches."""
    table = task_instructions.get(layout.upstream, {})
    problems = []
    for subset, instruction in subsets.items():
        key = subset.split("__")[-1] if layout.corpus_at == "scenario" else subset
        key = "MemGovern" if layout.upstream == "MemGovern" else key
        if table.get(key) != instruction:
            problems.append(f"{dataset}/{subset}: {instruction!r} != task_instructions {table.get(key)!r}")
    return problems


def read_task_instructions(path: Path) -> dict[str, dict[str, str]]:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
