"""`kalm-eval-plan <same overrides as kalm-eval>`: what a configuration will cost, before the spend.

For one dataset or every unit of a suite: queries, (query, passage) pairs, unique passages (an upper bound:
min(pairs, corpus); candidate lists of different queries overlap, so the real number is lower), encoder and decoder
tokens, pooled vectors per passage and persisted-cache bytes per compression r under the run's cache policy, the
size of the rerank units, and an estimated device time from throughput figures: `plan.pairs_per_s` and
`plan.passages_per_s` (given), or a cost-benchmark file (`plan.cost_benchmark`, scripts/bench_cost.py --output; read with kalm_eval/bench/record.py).
Works offline from the dataset sizes stated in the benchmark configs (`sizes:`); nothing is loaded.

Token counts use `plan.tokens_per_word` (Gemma 3 tokens per word; 1.43 measured on SciFact, 1.44 on NFCorpus, 1.25
on ArguAna passages) and `plan.prompt_tokens` (the decoder prompt without instruction and query: 49 tokens)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from kalm_eval.bench.record import CostBenchmarkError, load_cost_benchmark
from kalm_eval.config import CONFIG_PATH, RunConfig
from kalm_eval.errors import ConfigError, KalmEvalError, exit_with
from kalm_eval.space import estimate
from kalm_eval.storage import free_bytes, human_bytes
from kalm_eval.suite import expand_units

log = logging.getLogger("kalm_eval")
ENCODER_PREFIX_TOKENS = 4  # "<Document>: "


@dataclass
class PlanSettings:
    tokens_per_word: float = 1.4
    prompt_tokens: int = 49
    pairs_per_s: float | dict[str, float] | None = None
    passages_per_s: float | None = None
    cost_benchmark: str | None = None
    d_model: dict[str, int] = field(default_factory=dict)
    state_bytes: int = 2


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
    note: str = ""


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
    width = settings.d_model.get(getattr(cfg.model, "name", ""), 0)
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
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def _count(n: int | None) -> str:
    return "—" if n is None else f"{n:,}"


def _hours(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds / 3600:.2f} h"


def render(plans: list[UnitPlan], compressions: tuple[int, ...]) -> str:
    import pandas as pd

    rows = [{"unit": p.name, "queries": _count(p.queries), "corpus": _count(p.corpus), "pairs": _count(p.pairs),
             "unique passages ≤": _count(p.unique_passages), "passage tokens": _count(p.passage_tokens),
             "encoder tokens": _count(p.encoder_tokens), "decoder tokens": _count(p.decoder_tokens),
             **{f"vectors r={r}": _count(p.vectors.get(r)) for r in compressions},
             "persisted cache": _bytes(sum(p.cache_bytes.values())) if p.cache_bytes else "0 (policy: none)",
             **{f"states r={r} if kept": _bytes(p.all_bytes.get(r)) for r in compressions},
             "encode": _hours(p.encode_s), "score": _hours(p.score_s), "note": p.note} for p in plans]
    known = [p for p in plans if p.pairs is not None]
    total = {"unit": f"total ({len(known)}/{len(plans)} with sizes)", "queries": _count(sum(p.queries or 0 for p in plans)),
             "corpus": _count(sum(p.corpus or 0 for p in plans)), "pairs": _count(sum(p.pairs for p in known)),
             "unique passages ≤": _count(sum(p.unique_passages for p in known)),
             "encoder tokens": _count(sum(p.encoder_tokens for p in known)),
             "decoder tokens": _count(sum(p.decoder_tokens for p in known)),
             "persisted cache": _bytes(sum(sum(p.cache_bytes.values()) for p in known)),
             **{f"states r={r} if kept": _bytes(sum(p.all_bytes.get(r, 0) for p in known)) for r in compressions},
             "encode": _hours(sum(p.encode_s for p in known)) if all(p.encode_s is not None for p in known) else "—",
             "score": _hours(sum(p.score_s for p in known)) if all(p.score_s is not None for p in known) else "—"}
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
    for unit in expand_units(cfg):
        run_cfg = RunConfig.from_hydra(unit.config, probe_paths=False)
        compressions = (run_cfg.reranker.compressions_scored or (1,)) if run_cfg.reranker else ()
        model_name = getattr(run_cfg.model, "name", "")
        plans.append(plan_unit(unit.name, run_cfg, settings, throughput_of(settings, model_name, compressions)))
    return plans, compressions, settings


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        plans, compressions, settings = make_plan(cfg)
    except KalmEvalError as err:
        exit_with(err, "kalm-eval-plan")
    print(render(plans, compressions))
    print(disk_line(cfg))
    print(f"\nassumptions: {settings.tokens_per_word} tokens/word, {settings.prompt_tokens} prompt tokens + instruction "
          f"+ query, states {settings.state_bytes} bytes/value; unique passages are an upper bound; time = pairs / "
          f"pairs_per_s ({settings.pairs_per_s or settings.cost_benchmark or 'not given'}) and unique passages / "
          f"passages_per_s ({settings.passages_per_s or 'not given'})")


if __name__ == "__main__":
    main()
