"""`kalm-eval-plan <same overrides as kalm-eval>`: what a configuration will cost, before the spend.

For one dataset or every unit of a suite: queries, (query, passage) pairs, unique passages (an upper bound:
min(pairs, corpus); candidate lists of different queries overlap, so the real number is lower), encoder and decoder
tokens, pooled vectors per passage and persisted-cache bytes per compression r under the run's cache policy, the
size of the rerank units, and an estimated device time from throughput figures: `plan.pairs_per_s` and
`plan.passages_per_s` (given), or a cost-benchmark file (`plan.cost_benchmark`, scripts/bench_cost.py --output; read with kalm_eval/bench/record.py).
Works offline from the dataset sizes stated in the benchmark configs (`sizes:`); nothing is loaded.

Token counts use `plan.tokens_per_word` (Gemma 3 tokens per word; 1.43 measured on SciFact, 1.44 on NFCorpus, 1.25
on ArguAna passages) and `plan.prompt_tokens` (the decoder prompt without instruction and query: 49 tokens).

Exact where it can be (`plan.count=true`, the default): when a dataset's first-stage run exists (given as
`retriever=trec_run`, or cached by an earlier run of the same config), the plan reads the data and that run
through the same code as the run (first_stage, RerankJob) and counts pairs, unique passages and (KaLM family, with
the model's own tokenizer) encoder tokens — every unique passage up to `plan.token_sample`, a seeded sample above —
and decoder tokens per pair. Every figure says whether it was counted or estimated.

Time from measurement (`plan.calibrate=<result dir or tree>`): records of the same model (dtype and device as
recorded) give encode passages/s, scored pairs/s per r and the harness's own time per dataset run (model load,
data and index, first-stage read, latency probe, merge, record writes: a fixed part and a part per pair, fitted
over the runs); the plan prints the wall time for `plan.workers` workers (default `workers`). `plan.output=<file>`
writes every figure as JSON, per dataset and in total, each with its basis."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import hydra
from omegaconf import DictConfig, OmegaConf

from kalm_eval.bench.record import CostBenchmarkError, load_cost_benchmark
from kalm_eval.config import CONFIG_PATH, RunConfig
from kalm_eval.errors import ConfigError, DataError, KalmEvalError, exit_with
from kalm_eval.report.labels import loaded_model
from kalm_eval.result import RECORD_FILE, find_record_dirs
from kalm_eval.run_status import read_status, status_path
from kalm_eval.space import estimate
from kalm_eval.storage import free_bytes, human_bytes, read_json, write_json_atomic
from kalm_eval.suite import expand_units

log = logging.getLogger("kalm_eval")
ENCODER_PREFIX_TOKENS = 4  # "<Document>: "
COUNTED, ESTIMATED = "counted", "estimated"
FIGURES = ("queries", "pairs", "unique_passages", "encoder_tokens", "decoder_tokens", "encode_s", "score_s",
           "harness_s", "wall_s")


@dataclass
class PlanSettings:
    tokens_per_word: float = 1.4
    prompt_tokens: int = 49
    pairs_per_s: float | dict[str, float] | None = None
    passages_per_s: float | None = None
    cost_benchmark: str | None = None
    state_bytes: int = 2
    count: bool = True
    token_sample: int = 20_000
    calibrate: str | None = None
    workers: int | None = None
    output: str | None = None
    calibration: Calibration | None = None  # filled by make_plan from `calibrate`, not a config key


@dataclass
class UnitPlan:
    name: str
    queries: int | None
    corpus: int | None
    pairs: int | None = None
    unique_passages: int | None = None
    passage_tokens: int | None = None
    encoder_tokens: int | None = None
    decoder_tokens: int | None = None
    vectors: dict[int, int] = field(default_factory=dict)  # r -> pooled vectors per passage
    cache_bytes: dict[int, int] = field(default_factory=dict)  # r -> persisted bytes (policy)
    all_bytes: dict[int, int] = field(default_factory=dict)  # r -> bytes if every r were persisted
    unit_bytes: int | None = None
    encode_s: float | None = None
    score_s: float | None = None
    harness_s: float | None = None  # the harness's own time for this dataset (calibrated)
    wall_s: float | None = None  # for `workers` workers (calibrated)
    rates_from: str | None = None  # the calibration's throughputs used: of this dataset, or of all its datasets
    note: str = ""
    basis: dict[str, str] = field(default_factory=dict)  # figure -> counted | estimated
    run_file: str | None = None  # the first-stage run the counts come from

    def figures(self) -> dict[str, dict[str, Any]]:
        return {name: {"value": getattr(self, name), "basis": self.basis.get(name, ESTIMATED)} for name in FIGURES
                if getattr(self, name) is not None}


def plan_unit(name: str, cfg: RunConfig, settings: PlanSettings, throughput: dict[int, float] | None) -> UnitPlan:
    sizes = cfg.benchmark.get("sizes") or {}
    queries, corpus = sizes.get("queries"), sizes.get("corpus")
    plan = UnitPlan(name, queries, corpus)
    if queries is None or corpus is None:
        plan.note = "sizes unknown (benchmark config states none)"
        return plan
    if cfg.reranker is None:
        plan.note = "first stage only"
        return plan
    depth = min(cfg.reranker.depth, cfg.retriever.depth)
    compressions = cfg.reranker.compressions_scored or (1,)
    plan.pairs = queries * depth
    plan.unique_passages = min(plan.pairs, corpus)
    doc_max_len = getattr(cfg.model, "doc_max_len", None) or getattr(cfg.model, "max_length", 512)
    plan.passage_tokens = min(doc_max_len, math.ceil(sizes.get("passage_words", 0) * settings.tokens_per_word)
                              + ENCODER_PREFIX_TOKENS)
    instruction_words = len((cfg.reranker.instruction or "").split())
    prompt = settings.prompt_tokens + math.ceil((instruction_words + sizes.get("query_words", 0)) * settings.tokens_per_word)
    plan.encoder_tokens = plan.unique_passages * plan.passage_tokens
    plan.decoder_tokens = plan.pairs * prompt * len(compressions)
    width = getattr(cfg.model, "d_model", None) or 0  # the preset's shape (kalm_eval.catalogue); 0 = not stated
    for r in compressions:
        plan.vectors[r] = math.ceil(plan.passage_tokens / r)
        plan.all_bytes[r] = plan.unique_passages * plan.vectors[r] * width * settings.state_bytes
        if r in cfg.cache.persist_compression:
            plan.cache_bytes[r] = plan.all_bytes[r]
    plan.unit_bytes = plan.pairs * len(compressions) * 16  # pair index + margin + P(yes) per variant
    if settings.passages_per_s:
        plan.encode_s = plan.unique_passages / settings.passages_per_s
    if throughput and all(r in throughput for r in compressions):
        plan.score_s = sum(plan.pairs / throughput[r] for r in compressions)
    return plan


# ---- counted from the first-stage run ----------------------------------------------------------------------------

def first_stage_available(cfg: RunConfig) -> bool:
    """A given run file (trec_run), or a first stage an earlier run of this config left in the cache."""
    if cfg.retriever.name == "trec_run":
        return Path(cfg.retriever.settings.path).exists()
    status = read_status(status_path(cfg.cache_dir, cfg.key())) or {}
    path = (status.get("first_stage") or {}).get("path")
    return bool(path) and Path(path).exists()


def count_unit(plan: UnitPlan, cfg: RunConfig, settings: PlanSettings) -> None:
    """Replace the estimates by counts from the first-stage run, read through the run's own code."""
    from kalm_eval.data.loaders import load_dataset
    from kalm_eval.rerank.engine import RerankJob
    from kalm_eval.retrieval.first_stage import cached_first_stage, first_stage

    started = time.perf_counter()
    dataset = load_dataset(cfg.benchmark, cfg.cache_dir)
    if cfg.retriever.name == "trec_run":  # reading a given file is the run's own first stage: cached for it
        run = first_stage(dataset, cfg.retriever, cfg.cache_dir, progress=False)
    else:
        run = cached_first_stage(dataset, cfg.retriever, cfg.cache_dir)
        if run is None:
            return
    job = RerankJob.build(run, depth=cfg.reranker.depth, query_text=lambda q: dataset.queries[q].text,
                          instruction=cfg.reranker.instruction, passage_text=dataset.passage,
                          chunk_passages=cfg.reranker.chunk_passages)
    compressions = cfg.reranker.compressions_scored or (1,)
    estimated_prompt = (plan.decoder_tokens or 0) / max(plan.pairs or 1, 1) / len(compressions)
    plan.run_file = str(run.path)
    plan.queries, plan.pairs, plan.unique_passages = len(dataset.queries), job.pairs, len(job.doc_ids)
    plan.corpus = len(dataset.corpus)
    plan.basis.update(queries=COUNTED, pairs=COUNTED, unique_passages=COUNTED)
    plan.unit_bytes = plan.pairs * len(compressions) * 16
    tokens = _token_counts(job, dataset, cfg, settings)
    if tokens is not None:
        passage_tokens, encoder_basis, prompt_tokens = tokens
        plan.encoder_tokens, plan.decoder_tokens = passage_tokens, prompt_tokens * len(compressions)
        plan.passage_tokens = round(passage_tokens / max(job.unique_texts, 1))
        plan.basis.update(encoder_tokens=encoder_basis, decoder_tokens=COUNTED)
        for r in compressions:
            plan.vectors[r] = math.ceil(plan.passage_tokens / r)
    else:
        plan.encoder_tokens = job.unique_texts * (plan.passage_tokens or 0)
        plan.decoder_tokens = round(plan.pairs * estimated_prompt * len(compressions))
    plan.note = f"counted from {run.path.name} in {time.perf_counter() - started:.1f} s"


def _token_counts(job, dataset, cfg: RunConfig, settings: PlanSettings) -> tuple[int, str, int] | None:
    """(encoder tokens of the unique passage texts, their basis, decoder prompt tokens over all pairs) with the
    model's own tokenizer and templates; None for reranker families other than KaLM."""
    from kalm_eval.fbnl.spec import ModelSpec

    spec = cfg.model
    if not isinstance(spec, ModelSpec):
        return None
    from kalm_eval.fbnl.model import load_tokenizer
    from kalm_eval.fbnl.prompts import passage_token_ids_batch, prompt_token_ids

    tokenizer = load_tokenizer(spec)
    first_doc: dict[str, int] = {}
    for i, digest in enumerate(job.digests):
        first_doc.setdefault(digest, i)
    docs = list(first_doc.values())
    basis = COUNTED
    if len(docs) > settings.token_sample:
        picked = np.random.default_rng(0).choice(len(docs), size=settings.token_sample, replace=False)
        docs, basis = [docs[i] for i in sorted(picked.tolist())], ESTIMATED
    total = 0
    for start in range(0, len(docs), 1024):
        texts = [dataset.passage(job.doc_ids[d]) for d in docs[start:start + 1024]]
        total += sum(len(ids) for ids in passage_token_ids_batch(tokenizer, texts, spec.doc_max_len))
    if basis == ESTIMATED:
        total = round(total * len(first_doc) / len(docs))
    per_query = np.diff(job.query_offsets)
    prompt = sum(int(n) * len(prompt_token_ids(tokenizer, text, instruction, spec.query_max_len))
                 for n, (text, instruction) in zip(per_query.tolist(), job.queries))
    return total, basis, prompt


# ---- calibrated from result records ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Calibration:
    """Throughputs and the harness's own time, measured by earlier runs of the same model, dtype and device."""

    source: str
    runs: int
    model: str
    dtype: str
    device: str
    passages_per_s: float
    pairs_per_s: dict[int, float]
    # dataset -> its own {"passages_per_s": x, "pairs_per_s": {r: y}}: a dataset's prompts and passages have their
    # own lengths (ArguAna's queries are whole arguments), so its own throughput predicts it best
    per_dataset: dict[str, dict[str, Any]]
    fixed_s: float  # per dataset run: model load, data, index, latency probe ... (intercept)
    per_pair_s: float  # per pair: first-stage read, merge, metrics, record writes (slope)
    model_load_s: float  # mean, part of fixed_s

    def to_dict(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in vars(self).items()}


def calibrate(root: str | Path, model: str, dtype: str | None = None, device: str | None = None) -> Calibration:
    """Fit from every reranked record under `root` made with `model` (and `dtype` / `device` when given)."""
    root = Path(root)
    if not root.exists():
        raise ConfigError(f"plan.calibrate={root}: no such result directory")
    runs: dict[tuple, dict[str, Any]] = {}
    seen: set[tuple[str, str]] = set()
    for directory in find_record_dirs(root):
        raw = read_json(directory / RECORD_FILE)
        timings, counts = raw.get("timings") or {}, raw.get("counts") or {}
        config = (raw.get("provenance") or {}).get("config") or {}
        latency = timings.get("latency") or {}
        reranker = (raw.get("protocol") or {}).get("reranker") or {}
        if timings.get("encode_s") is None or (config.get("model") or {}).get("name") != model:
            continue
        logged = ((raw.get("provenance") or {}).get("logged_knobs") or {}).get("model") or {}
        rec_dtype = str(loaded_model(reranker.get("model") or {}).get("dtype") or latency.get("dtype"))
        rec_device = str(latency.get("device") or logged.get("device"))  # a run too small for a latency probe
        if (dtype and rec_dtype != dtype) or (device and not rec_device.startswith(device)):
            continue
        seen.add((rec_dtype, rec_device))
        key = (raw.get("dataset"), ((raw.get("protocol") or {}).get("first_stage") or {}).get("signature"),
               timings["encode_s"])
        run = runs.setdefault(key, {"encode_s": timings["encode_s"], "passages": counts.get("passages_encoded", 0),
                                    "pairs": counts.get("pairs", 0), "score": {}, "total_s": 0.0,
                                    "model_load_s": timings.get("model_load_s") or 0.0})
        run["score"][int(reranker.get("compression") or 1)] = (timings.get("score_s") or 0.0, counts.get("pairs", 0))
        run["total_s"] = max(run["total_s"], timings.get("total_s") or 0.0)
    if not runs:
        raise ConfigError(f"plan.calibrate={root}: no reranked record of model {model!r}"
                          + (f" ({dtype}, {device})" if dtype or device else ""))
    if len(seen) > 1:
        raise ConfigError(f"plan.calibrate={root}: records of {model!r} on several dtypes/devices {sorted(seen)}; "
                          "give model.dtype and model.device")
    values = list(runs.values())
    per_dataset = {}
    for dataset in sorted({key[0] for key in runs}):
        own = [run for key, run in runs.items() if key[0] == dataset]
        per_dataset[dataset] = {"passages_per_s": _passages_per_s(own), "pairs_per_s": _pairs_per_s(own)}
    x = np.array([run["pairs"] for run in values], dtype=float)
    y = np.array([run["total_s"] - run["encode_s"] - sum(s for s, _ in run["score"].values()) for run in values])
    slope = 0.0
    if len(values) >= 3 and np.ptp(x) > 0:
        slope = max(0.0, float(np.polyfit(x, y, 1)[0]))
    intercept = float(np.mean(y - slope * x))
    (rec_dtype, rec_device), = seen
    return Calibration(source=str(root), runs=len(values), model=model, dtype=rec_dtype, device=rec_device,
                       passages_per_s=_passages_per_s(values), pairs_per_s=_pairs_per_s(values),
                       per_dataset=per_dataset, fixed_s=max(intercept, 0.0), per_pair_s=slope,
                       model_load_s=float(np.mean([r["model_load_s"] for r in values])))


def _passages_per_s(runs: list[dict[str, Any]]) -> float:
    return sum(r["passages"] for r in runs) / max(sum(r["encode_s"] for r in runs), 1e-9)


def _pairs_per_s(runs: list[dict[str, Any]]) -> dict[int, float]:
    rates = {}
    for r in sorted({c for run in runs for c in run["score"]}):
        seconds = sum(run["score"][r][0] for run in runs if r in run["score"])
        rates[r] = sum(run["score"][r][1] for run in runs if r in run["score"]) / max(seconds, 1e-9)
    return rates


def apply_calibration(plan: UnitPlan, calibration: Calibration, compressions: tuple[int, ...], workers: int) -> None:
    """Device time from measured throughput (the dataset's own when the calibration holds it at every r, else that
    of all its datasets) and wall time for `workers` workers sharing the units."""
    if plan.pairs is None or plan.unique_passages is None:
        return
    own = calibration.per_dataset.get(plan.name)
    usable = own is not None and own["passages_per_s"] > 0 and all(r in own["pairs_per_s"] for r in compressions)
    rates = own if usable else {"passages_per_s": calibration.passages_per_s, "pairs_per_s": calibration.pairs_per_s}
    plan.rates_from = "this dataset" if rates is own else "all datasets"
    plan.encode_s = plan.unique_passages / rates["passages_per_s"]
    if all(r in rates["pairs_per_s"] for r in compressions):
        plan.score_s = sum(plan.pairs / rates["pairs_per_s"][r] for r in compressions)
    plan.harness_s = calibration.fixed_s + calibration.per_pair_s * plan.pairs
    if plan.score_s is not None:
        plan.wall_s = plan.harness_s + (plan.encode_s + plan.score_s) / workers


def throughput_of(settings: PlanSettings, model_name: str, compressions: tuple[int, ...]) -> dict[int, float] | None:
    """pairs/s per compression: plan.pairs_per_s (a number or {r: n}), else the cost benchmark's ms/pair."""
    if isinstance(settings.pairs_per_s, (int, float)):
        return {r: float(settings.pairs_per_s) for r in compressions}
    if isinstance(settings.pairs_per_s, dict):
        return {int(r): float(v) for r, v in settings.pairs_per_s.items()}
    if settings.cost_benchmark:
        path = Path(settings.cost_benchmark)
        if not path.exists():
            raise ConfigError(f"plan.cost_benchmark={path}: no such file")
        try:
            benchmark = load_cost_benchmark(path)
        except CostBenchmarkError as err:
            raise ConfigError(f"plan.cost_benchmark={path}: {err}") from None
        found = {row.r: 1000.0 / row.ms_median for row in benchmark.rows
                 if row.model.lower().endswith(model_name.lower()) and row.r is not None}
        return found or None
    return None


def _bytes(n: int | None) -> str:
    return "—" if n is None else human_bytes(n)


def _count(n: int | None) -> str:
    return "—" if n is None else f"{n:,}"


def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds:.0f} s"


def render(plans: list[UnitPlan], compressions: tuple[int, ...]) -> str:
    import pandas as pd

    def mark(p: UnitPlan, name: str, text: str, estimated: str = "~") -> str:
        return text if text == "—" or p.basis.get(name) == COUNTED else estimated + text

    rows = [{"unit": p.name, "queries": _count(p.queries), "corpus": _count(p.corpus),
             "pairs": mark(p, "pairs", _count(p.pairs)),
             "unique passages": mark(p, "unique_passages", _count(p.unique_passages), "≤"),
             "passage tokens": _count(p.passage_tokens),
             "encoder tokens": mark(p, "encoder_tokens", _count(p.encoder_tokens)),
             "decoder tokens": mark(p, "decoder_tokens", _count(p.decoder_tokens)),
             **{f"vectors r={r}": _count(p.vectors.get(r)) for r in compressions},
             "persisted cache": _bytes(sum(p.cache_bytes.values())) if p.cache_bytes else "0 (policy: none)",
             **{f"states r={r} if kept": _bytes(p.all_bytes.get(r)) for r in compressions},
             "encode": _hours(p.encode_s), "score": _hours(p.score_s), "wall": _hours(p.wall_s),
             "note": p.note} for p in plans]
    known = [p for p in plans if p.pairs is not None]
    total = {"unit": f"total ({len(known)}/{len(plans)} with sizes)", "queries": _count(sum(p.queries or 0 for p in plans)),
             "corpus": _count(sum(p.corpus or 0 for p in plans)), "pairs": _count(sum(p.pairs for p in known)),
             "unique passages": _count(sum(p.unique_passages for p in known)),
             "encoder tokens": _count(sum(p.encoder_tokens for p in known)),
             "decoder tokens": _count(sum(p.decoder_tokens for p in known)),
             "persisted cache": _bytes(sum(sum(p.cache_bytes.values()) for p in known)),
             **{f"states r={r} if kept": _bytes(sum(p.all_bytes.get(r, 0) for p in known)) for r in compressions},
             "encode": _hours(sum(p.encode_s for p in known)) if all(p.encode_s is not None for p in known) else "—",
             "score": _hours(sum(p.score_s for p in known)) if all(p.score_s is not None for p in known) else "—",
             "wall": _hours(sum(p.wall_s for p in known)) if known and all(p.wall_s is not None for p in known) else "—"}
    frame = pd.DataFrame(rows + [total]).fillna("")
    return frame.to_markdown(index=False)


def disk_line(cfg: DictConfig) -> str:
    """What the configuration writes to disk (kalm_eval.space's estimates), and the free space there now."""
    needs = [n for unit in expand_units(cfg)
             if (n := estimate(RunConfig.from_hydra(unit.config, probe_paths=False))) is not None]
    if not needs:
        return "disk: unknown (the benchmark config states no sizes)"
    total = sum(needs[1:], needs[0])
    free = {place: free_bytes(place) for place in (total.cache_dir, total.output)}
    parts = " · ".join(f"{name} {human_bytes(size)}" for name, size in total.parts.items())
    return (f"disk (estimate): cache_dir {total.cache_dir} {human_bytes(total.cache_bytes)} (free "
            f"{human_bytes(free[total.cache_dir] or 0)}) · results {total.output} {human_bytes(total.output_bytes)} "
            f"(free {human_bytes(free[total.output] or 0)}) — {parts}")


def make_plan(cfg: DictConfig) -> tuple[list[UnitPlan], tuple[int, ...], PlanSettings]:
    settings = PlanSettings(**OmegaConf.to_container(cfg.get("plan") or {}, resolve=True))
    plans, compressions = [], ()
    calibration = None
    workers = settings.workers or int(cfg.get("workers", 1))
    for unit in expand_units(cfg):
        run_cfg = RunConfig.from_hydra(unit.config, probe_paths=False)
        compressions = (run_cfg.reranker.compressions_scored or (1,)) if run_cfg.reranker else ()
        model_name = getattr(run_cfg.model, "name", "")
        plan = plan_unit(unit.name, run_cfg, settings, throughput_of(settings, model_name, compressions))
        if settings.count and run_cfg.reranker is not None and first_stage_available(run_cfg):
            try:
                count_unit(plan, run_cfg, settings)
            except DataError as err:
                plan.note = f"not counted: {err}"
        if settings.calibrate and run_cfg.reranker is not None:
            if calibration is None:
                spec = run_cfg.model
                dtype = None if getattr(spec, "dtype", "auto") == "auto" else spec.dtype
                device = None if getattr(spec, "device", "auto") == "auto" else spec.device
                calibration = calibrate(settings.calibrate, model_name, dtype, device)
            apply_calibration(plan, calibration, compressions, workers)
        plans.append(plan)
    settings.calibration = calibration
    settings.workers = workers
    return plans, compressions, settings


def to_json(plans: list[UnitPlan], settings: PlanSettings) -> dict[str, Any]:
    """Every figure per dataset and in total, each with its basis (a total is counted when all its parts are)."""
    units = {p.name: {"figures": p.figures(), "run_file": p.run_file, "note": p.note, "rates_from": p.rates_from}
             for p in plans}
    total: dict[str, Any] = {}
    for name in FIGURES:
        parts = [p for p in plans if getattr(p, name) is not None]
        if parts and len(parts) == len(plans):
            total[name] = {"value": sum(getattr(p, name) for p in parts),
                           "basis": COUNTED if all(p.basis.get(name) == COUNTED for p in parts) else ESTIMATED}
    calibration = settings.calibration
    return {"units": units, "total": total, "workers": settings.workers,
            "calibration": calibration.to_dict() if calibration else None,
            "assumptions": {"tokens_per_word": settings.tokens_per_word, "prompt_tokens": settings.prompt_tokens,
                            "token_sample": settings.token_sample}}


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        plans, compressions, settings = make_plan(cfg)
    except KalmEvalError as err:
        exit_with(err, "kalm-eval-plan")
    print(render(plans, compressions))
    print(disk_line(cfg))
    calibration = settings.calibration
    if calibration is not None:
        wall = [p.wall_s for p in plans if p.wall_s is not None]
        print(f"\ncalibrated from {calibration.runs} run(s) under {calibration.source} ({calibration.model}, "
              f"{calibration.dtype}, {calibration.device}): encode {calibration.passages_per_s:.1f} passages/s, score "
              + ", ".join(f"r={r} {v:.1f} pairs/s" for r, v in calibration.pairs_per_s.items())
              + f", harness {calibration.fixed_s:.1f} s per dataset + {calibration.per_pair_s * 1e3:.3f} ms per pair "
              f"(model load {calibration.model_load_s:.1f} s); "
              f"{sum(p.rates_from == 'this dataset' for p in plans)} of {len(plans)} dataset(s) timed with their own "
              "throughput (the calibration holds them), the rest with all datasets'")
        if wall:
            print(f"wall time with {settings.workers} worker(s): {sum(wall):,.0f} s ({sum(wall) / 3600:.2f} h)")
    if settings.output:
        write_json_atomic(Path(settings.output), to_json(plans, settings))
        print(f"figures written to {settings.output}")
    print(f"\nassumptions: {settings.tokens_per_word} tokens/word, {settings.prompt_tokens} prompt tokens + instruction "
          f"+ query, states {settings.state_bytes} bytes/value; ~ = estimated, ≤ = upper bound, plain = counted from the first-stage run; time = pairs / "
          f"pairs_per_s ({settings.pairs_per_s or settings.cost_benchmark or 'not given'}) and unique passages / "
          f"passages_per_s ({settings.passages_per_s or 'not given'})")


if __name__ == "__main__":
    main()
