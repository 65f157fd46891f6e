"""An mteb predictions file as the first stage (`retriever=mteb_predictions`).

mteb (2.x) saves a retrieval task's search results when run with `mteb.evaluate(..., prediction_folder=DIR)`:
`AbsTask._save_task_predictions` writes `DIR/<TaskName>_predictions.json` with `json.dump`, one JSON object

    {"mteb_model_meta": {"model_name": ..., "revision": ...},
     "<hf_subset>": {"<split>": {"<query id>": {"<doc id>": <score>, ...}, ...}, ...}, ...}

(one key per hf_subset, "default" for single-subset tasks; every later subset/split of the same task is merged into
the same file). The scores are the raw search output (`RetrievalEvaluator.__call__`), saved before mteb drops
identical query/doc ids, so quirks.ignore_identical_ids is applied here as for any first stage.

Reading it: the file (or the prediction_folder + `retriever.task`) is parsed once; `retriever.subset` and
`retriever.split` pick one block (default: the file's only subset / only split of it); the split must be the
benchmark's. Every query and doc id is checked against the dataset (`on_unknown`: error naming the file and the
JSON path, or drop and count). JSON objects cannot hold a doc twice for a query, but a hand-edited file can repeat
a key, which `json.load` would silently resolve to the last one: that is an error here. Scores must be finite
numbers. Equal scores are ranked by TIE_BREAK (score desc, then doc id desc), which is also how mteb's own
pytrec_eval scoring of that dict orders them, so the metrics of this first stage match mteb's for the same file;
(mteb's `convert_to_reranking` cuts its top-k by the dict's insertion order instead, which differs only for ties
at the cut). The identity (run signature) holds the file's sha256, its task, subset and split, and the model meta
it names."""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kalm_eval.data import Dataset
from kalm_eval.data.dataset import restrict_to_candidates
from kalm_eval.errors import DataError
from kalm_eval.knobs import knob
from kalm_eval.records import RankedList
from kalm_eval.retrieval.runfile import TIE_BREAK, rank
from kalm_eval.storage import sha256_file

log = logging.getLogger(__name__)

META_KEY = "mteb_model_meta"
FILE_SUFFIX = "_predictions.json"  # mteb: AbsTask.prediction_file_name = f"{task_name}_predictions.json"


@dataclass(frozen=True)
class MtebPredictionsSettings:
    path: str = knob(doc="an mteb <Task>_predictions.json, or the prediction_folder holding it (then set task)")
    task: str | None = knob(None, doc="mteb task name: picks <task>_predictions.json in a folder; checked against a file name")
    subset: str | None = knob(None, doc="hf_subset key of the file; null = the file's only subset")
    split: str | None = knob(None, doc="split key; null = the subset's only split (must equal benchmark.split)")
    on_unknown: str = knob("error", choices=("error", "drop"), doc="query or doc ids the dataset does not know")


def _no_duplicate_keys(path: Path):
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise DataError(f"{path}: key {key!r} appears twice in one JSON object (a query or doc listed "
                                "twice; json.load would keep only the last, mteb's writer never writes this)")
            out[key] = value
        return out

    return hook


def _task_of(file: Path) -> str | None:
    match = re.fullmatch(r"(.+)" + re.escape(FILE_SUFFIX), file.name)
    return match.group(1) if match else None


class MtebPredictionsRetriever:
    tie_break = TIE_BREAK

    def __init__(self, settings: MtebPredictionsSettings):
        self.settings = settings
        self.report: dict[str, Any] = {}
        self._parsed: tuple[dict[str, Any], dict[str, Any]] | None = None  # (identity, predictions of the block)

    # ---- the file -----------------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        given = Path(self.settings.path)
        if given.is_dir():
            if not self.settings.task:
                found = sorted(p.name for p in given.glob("*" + FILE_SUFFIX))
                raise DataError(f"{given}: a prediction folder; set retriever.task to pick one of {found or 'its files'} "
                                f"(mteb names them <TaskName>{FILE_SUFFIX})")
            return given / f"{self.settings.task}{FILE_SUFFIX}"
        return given

    def _load(self) -> tuple[dict[str, Any], dict[str, Any]]:
        if self._parsed is not None:
            return self._parsed
        path, s = self.path, self.settings
        if not path.is_file():
            raise DataError(f"{path}: mteb predictions file not found (retriever.path)")
        file_task = _task_of(path)
        if s.task and file_task and s.task != file_task:
            raise DataError(f"{path}: the file name says task {file_task!r}, retriever.task says {s.task!r}")
        try:
            with path.open("r", encoding="utf-8") as fh:
                data = json.load(fh, object_pairs_hook=_no_duplicate_keys(path))
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{err.lineno}: not valid JSON: {err.msg} (column {err.colno})") from None
        if not isinstance(data, dict):
            raise DataError(f"{path}: expected a JSON object of mteb predictions, got {type(data).__name__}")
        meta = data.get(META_KEY)
        if meta is None:
            log.warning("%s: no %r block (mteb always writes one); the producing model is not recorded", path, META_KEY)
        elif not isinstance(meta, dict):
            raise DataError(f"{path}: [{META_KEY!r}] must be an object with model_name and revision")
        subsets = {k: v for k, v in data.items() if k != META_KEY}
        subset = self._pick(path, "subset", s.subset, subsets, "", "retriever.subset")
        splits = subsets[subset]
        if not isinstance(splits, dict):
            raise DataError(f"{path}: [{subset!r}] must map split names to predictions, got {type(splits).__name__}")
        split = self._pick(path, "split", s.split, splits, f"[{subset!r}]", "retriever.split")
        predictions = splits[split]
        if not isinstance(predictions, dict):
            raise DataError(f"{path}: [{subset!r}][{split!r}] must map query ids to {{doc id: score}}, "
                            f"got {type(predictions).__name__}")
        identity = {"kind": "mteb_predictions", "path": str(path.resolve()), "sha256": sha256_file(path),
                    "task": file_task or s.task, "subset": subset, "split": split, "mteb_model_meta": meta,
                    "on_unknown": s.on_unknown, "scores": "as given; ties by " + TIE_BREAK}
        self._parsed = (identity, predictions)
        return self._parsed

    @staticmethod
    def _pick(path: Path, what: str, wanted: str | None, options: dict[str, Any], where: str, knob_name: str) -> str:
        if wanted is not None:
            if wanted not in options:
                raise DataError(f"{path}: {where or 'the file'} has no {what} {wanted!r}; it has {sorted(options)}")
            return wanted
        if len(options) != 1:
            raise DataError(f"{path}: {where or 'the file'} holds {len(options)} {what}s {sorted(options)}; "
                            f"choose one with {knob_name}=<name>")
        return next(iter(options))

    # ---- the retriever interface --------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        return dict(self._load()[0])

    def retrieve(self, dataset: Dataset, depth: int) -> Iterator[RankedList]:
        identity, predictions = self._load()
        path, split = self.path, identity["split"]
        if split != dataset.split:
            raise DataError(f"{path}: predictions of split {split!r}, but the benchmark evaluates split "
                            f"{dataset.split!r} (set retriever.split or benchmark.split)")
        where = f"[{identity['subset']!r}][{split!r}]"
        drop = self.settings.on_unknown == "drop"
        report = {"queries_in_file": len(predictions), "pairs": 0, "unknown_query_ids": 0, "unknown_doc_ids": 0,
                  "tied_docs": 0}
        cut = depth if dataset.candidates is None else 1 << 62  # scenes: cut after filtering

        def unknown(kind: str, what: str) -> None:
            """An id the dataset does not know: refused naming it, or dropped and counted (retriever.on_unknown)."""
            if not drop:
                raise DataError(f"{path}: {what}; retriever.on_unknown=drop to skip)")
            report[f"unknown_{kind}_ids"] += 1

        rankings: list[RankedList] = []
        for qid, docs in predictions.items():
            if not isinstance(docs, dict):
                raise DataError(f"{path}: {where}[{qid!r}] must map doc ids to scores, got {type(docs).__name__}")
            if qid not in dataset.queries:
                unknown("query", f"{where}[{qid!r}]: unknown query id {qid!r} (not a judged query of "
                                 f"{dataset.name} {dataset.split}")
                continue
            scored: list[tuple[str, float]] = []
            for doc_id, score in docs.items():
                if isinstance(score, bool) or not isinstance(score, (int, float)) or not _finite(score):
                    raise DataError(f"{path}: {where}[{qid!r}][{doc_id!r}]: score {score!r} is not a finite number")
                if doc_id not in dataset.corpus:
                    unknown("doc", f"{where}[{qid!r}][{doc_id!r}]: unknown doc id {doc_id!r} (not in the corpus of "
                                   f"{dataset.name}")
                    continue
                scored.append((doc_id, float(score)))
            report["pairs"] += len(scored)
            report["tied_docs"] += sum(n for n in Counter(score for _, score in scored).values() if n > 1)
            rankings.append(rank(qid, scored, cut, ignore_identical_ids=dataset.quirks.ignore_identical_ids,
                                 source=f"{path} {where}"))
        if dataset.candidates is not None:
            # LMEB scenes: predictions over the whole corpus; keep each query's scene docs, then its top `depth`.
            rankings, scene_report = restrict_to_candidates(rankings, dataset)
            rankings = [ranking.head(depth) for ranking in rankings]
            report.update(scene_report)
        report["queries"] = len(rankings)
        report["queries_without_candidates"] = len(dataset.queries) - len(rankings)
        for key in ("unknown_query_ids", "unknown_doc_ids", "queries_without_candidates", "scene_filtered_lines"):
            if report.get(key):
                log.warning("%s %s: %s = %d", path, where, key, report[key])
        self.report = report
        order = {qid: i for i, qid in enumerate(dataset.queries)}
        yield from sorted(rankings, key=lambda r: order[r.query_id])


def _finite(score: int | float) -> bool:
    """A finite float once converted (JSON's NaN / Infinity / 1e400 are not; nor an integer beyond the float range)."""
    try:
        return math.isfinite(float(score))
    except OverflowError:
        return False
