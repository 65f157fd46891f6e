"""RunConfig: the composed Hydra config of one run, validated once, before any data is read or model loaded.

Hydra composes `kalm_eval.conf` (shipped in the package: `pkg://kalm_eval.conf`); `RunConfig.from_hydra` turns the
result into typed settings per stage — benchmark (a plain mapping, checked by its loader), retriever, reranker,
model, cache — checking every knob's type and range (kalm_eval.knobs) and the output and cache locations
(created and probe-written). Any problem is one ConfigError naming the knob and what it accepts.

User-level defaults: `home` = $KALM_EVAL_HOME, else the platform cache directory (~/.cache/kalm-eval on Linux);
`data_dir` = <home>/data and `cache_dir` = <home>/cache unless given; results go to `results/runs` under the
working directory unless `results_dir`/`output_dir` say otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from kalm_eval import __version__
from kalm_eval.checkpoints import HubCheckpoint
from kalm_eval.errors import ConfigError
from kalm_eval.knobs import check_value, from_mapping, keyed, logged
from kalm_eval.rerank import family as reranker_family
from kalm_eval.rerank.settings import CacheSettings, RerankSettings
from kalm_eval.retrieval import family as retriever_family
from kalm_eval.retrieval.first_stage import RetrieverSpec

log = logging.getLogger(__name__)

CONFIG_MODULE = "kalm_eval.conf"
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"
HOME_VARIABLE = "KALM_EVAL_HOME"
NO_RERANKER = "none"


def kalm_home() -> str:
    """$KALM_EVAL_HOME, else the user's platform cache directory for kalm-eval."""
    if os.environ.get(HOME_VARIABLE):
        return os.environ[HOME_VARIABLE]
    import platformdirs

    return platformdirs.user_cache_dir("kalm-eval")


OmegaConf.register_new_resolver("kalm_home", kalm_home, replace=True)


def plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else node


@dataclass(frozen=True)
class RunConfig:
    benchmark: dict[str, Any]
    retriever: RetrieverSpec
    reranker: RerankSettings | None  # None = first stage only
    model: Any | None  # the reranker family's model settings
    cache: CacheSettings
    cache_dir: Path
    results_dir: Path
    output_dir: Path | None = None
    force: bool = False
    progress: bool = True
    worker: int = 0
    workers: int = 1
    full_config: dict[str, Any] = field(default_factory=dict)

    @property
    def reranking(self) -> bool:
        return self.reranker is not None

    # ---- building ---------------------------------------------------------------------------------------------
    @classmethod
    def from_hydra(cls, cfg: DictConfig, *, probe_paths: bool = True) -> RunConfig:
        """Validate the whole composed config (every knob, then the output and cache locations)."""
        try:
            resolved = OmegaConf.to_container(cfg, resolve=True)
        except Exception as err:  # an interpolation that cannot resolve (e.g. a missing required value)
            raise ConfigError(f"config: {err}".splitlines()[0]) from None
        return cls.from_mapping(resolved, probe_paths=probe_paths)

    @classmethod
    def from_mapping(cls, resolved: dict[str, Any], *, probe_paths: bool = True) -> RunConfig:
        """The same from a plain mapping with the config's keys (results_dir defaults to results/runs)."""
        resolved = {"results_dir": "results/runs", **resolved}
        benchmark = _benchmark(resolved.get("benchmark"))
        retriever = _retriever(for_dataset(resolved.get("retriever") or {}, benchmark))
        reranker, model = _reranker_and_model(resolved.get("reranker") or {}, resolved.get("model") or {}, retriever.depth)
        config = cls(
            benchmark=benchmark,
            retriever=retriever,
            reranker=reranker,
            model=model,
            cache=from_mapping(CacheSettings, resolved.get("cache") or {}, prefix="cache"),
            cache_dir=Path(_required_str(resolved, "cache_dir")),
            results_dir=Path(_required_str(resolved, "results_dir")),
            output_dir=_job_output_dir(None if resolved.get("output_dir") is None else str(resolved["output_dir"])),
            force=check_value("force", resolved.get("force", False), bool),
            progress=check_value("progress", resolved.get("progress", True), bool),
            worker=check_value("worker", resolved.get("worker", 0), int, {"minimum": 0}),
            workers=check_value("workers", resolved.get("workers", 1), int, {"minimum": 1}),
            full_config=resolved,
        )
        if config.worker >= config.workers:
            raise ConfigError(f"worker={config.worker}: must be below workers={config.workers}")
        if reranker is not None and reranker.depth > retriever.depth:
            raise ConfigError(f"reranker.depth={reranker.depth}: must be <= retriever.depth={retriever.depth} (the "
                              "first stage retrieves the candidates the reranker reorders)")
        _check_device(model)
        if probe_paths:
            config.probe_paths()
        return config

    def probe_paths(self) -> None:
        """Create the cache and output locations and prove they are writable, before any work is spent."""
        places = [("cache_dir", self.cache_dir)]
        if self.output_dir is None:  # results go to results_dir; with output_dir the run never touches it
            places.append(("results_dir", self.results_dir))
        else:
            places.append(("output_dir", self.output_dir.parent))
            if self.output_dir.exists() and not self.output_dir.is_dir():
                raise ConfigError(f"output_dir={self.output_dir}: is a file, not a directory")
        for knob, path in places:
            _probe_writable(knob, path)

    def hub_checkpoints(self) -> list[HubCheckpoint]:
        """The Hugging Face hub checkpoints this run loads (first-stage encoder, reranker or baseline), each with the
        knob that points it at a local copy instead (kalm_eval.checkpoints.check_available checks them)."""
        found = []
        for owner, knob_for_copy, label in ((self.retriever.settings, "retriever.model", f"retriever={self.retriever.name}"),
                                            (self.model, "model.path", f"model={getattr(self.model, 'name', '?')}")):
            source = owner.hub_source() if hasattr(owner, "hub_source") else None
            if source is not None:
                found.append(HubCheckpoint(source[0], source[1], label, knob_for_copy))
        return found

    # ---- identity ---------------------------------------------------------------------------------------------
    def key(self) -> dict[str, Any]:
        """What identifies this run's results before anything is loaded (the suite ledger's key): every keyed
        setting, none of the logged-only ones (batch sizes, devices, workers)."""
        key: dict[str, Any] = {"benchmark": self.benchmark, "harness_version": __version__,
                               "retriever": {"name": self.retriever.name, "depth": self.retriever.depth,
                                             **_retriever_keyed(self.retriever.settings)}}
        if self.reranker is not None:
            key["reranker"] = keyed(self.reranker)
            key["model"] = keyed(self.model)
            key["cache"] = keyed(self.cache)
        return key

    def logged_knobs(self) -> dict[str, Any]:
        knobs: dict[str, Any] = {"worker": self.worker, "workers": self.workers, "progress": self.progress}
        if self.reranker is not None:
            knobs["reranker"] = logged(self.reranker)
            knobs["model"] = logged(self.model)
        return knobs


# ---- sections ---------------------------------------------------------------------------------------------------

def _benchmark(benchmark: Any) -> dict[str, Any]:
    if not isinstance(benchmark, dict):
        raise ConfigError("benchmark: missing (choose one: benchmark=beir/scifact, benchmark=local ...)")
    if "datasets" in benchmark:
        raise ConfigError(f"benchmark={benchmark.get('name')!r} is a suite; run it with kalm_eval.suite.run_suite")
    for knob in ("name", "split"):
        check_value(f"benchmark.{knob}", benchmark.get(knob), str)
    check_value("benchmark.joiner", benchmark.get("joiner", " "), str)
    from kalm_eval.data.loaders import INPUT_POLICIES

    for knob, choices in INPUT_POLICIES.items():
        check_value(f"benchmark.{knob}", benchmark.get(knob, choices[0]), str, {"choices": choices})
    from kalm_eval.data.quirks import Quirks

    try:
        Quirks.from_config(benchmark.get("quirks"))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"benchmark.quirks: {err}") from None
    return benchmark


DATASET_PLACEHOLDER = "{dataset}"


def dataset_short_name(benchmark: dict[str, Any]) -> str:
    """nq for beir/nq, sw for miracl/sw, LoCoMo for lmeb/LoCoMo: what `{dataset}` stands for."""
    return str(benchmark.get("name", "")).split("/", 1)[-1]


def for_dataset(values: dict[str, Any], benchmark: dict[str, Any]) -> dict[str, Any]:
    """`{dataset}` in a retriever string setting, replaced by this dataset's short name, so one override gives each
    member of a suite its own file: `retriever.path="runs/{dataset}.trec.gz"` -> runs/nq.trec.gz, runs/sw.trec.gz
    (the run, the plan and the status alike: each builds one RunConfig per member)."""
    short = dataset_short_name(benchmark)
    return {k: v.replace(DATASET_PLACEHOLDER, short) if isinstance(v, str) else v for k, v in values.items()}


def _retriever(values: dict[str, Any]) -> RetrieverSpec:
    name = check_value("retriever.name", values.get("name"), str)
    depth = check_value("retriever.depth", values.get("depth", 100), int, {"minimum": 1})
    chosen = retriever_family(name)
    settings = from_mapping(chosen.settings, {k: v for k, v in values.items() if k not in ("name", "depth")},
                            prefix="retriever")
    return RetrieverSpec(name=name, depth=depth, settings=settings)


def _retriever_keyed(settings: Any) -> dict[str, Any]:
    """Retriever knobs minus the ones that never change a ranking (batch size, device, knobs marked logged)."""
    logged_names = {f.name for f in dataclasses.fields(settings) if f.metadata.get("logged")} \
        if dataclasses.is_dataclass(settings) else set()
    return {k: v for k, v in vars(settings).items() if k not in ("batch_size", "device") and k not in logged_names}


def _reranker_and_model(values: dict[str, Any], model_values: dict[str, Any],
                        retriever_depth: int) -> tuple[RerankSettings | None, Any]:
    name = check_value("reranker.name", values.get("name", NO_RERANKER), str)
    if name == NO_RERANKER:
        return None, None
    chosen = reranker_family(name)
    values = dict(values)
    if values.get("depth") is None:
        # A value the user did not set follows the ones they did: a cascade's first step, else everything the
        # first stage returns. Only two explicit values can conflict (RerankSettings checks them).
        cascade = values.get("cascade")
        first_step_depth = cascade[0].get("depth") if cascade and isinstance(cascade[0], dict) else None
        values["depth"] = first_step_depth if first_step_depth is not None else retriever_depth
    compression = values.pop("compression", None)
    if chosen.uses_compression:
        values["compression"] = _compression_list(compression)
    settings = from_mapping(RerankSettings, values, prefix="reranker")
    model_family = model_values.get("family", "kalm")
    if model_family != name:
        raise ConfigError(f"reranker={name} with model={model_values.get('name')!r} (a {model_family} model): choose "
                          f"a {name} model preset or set model.path")
    model = chosen.parse_model(model_values)
    return settings, model


def _check_device(model: Any) -> None:
    """A device the run cannot use is refused now, not after the data load and first stage."""
    device = str(getattr(model, "device", "auto") or "auto")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"model.device={device}: no CUDA device is visible here (use auto or cpu)")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"model.device={device}: only {torch.cuda.device_count()} CUDA device(s) visible")


def _compression_list(value: Any) -> list[int]:
    """`compression=4` or `compression=[1,4,32]` (a bare value or a list), each a positive integer."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ConfigError("compression=[]: give at least one MEP compression ratio, e.g. compression=4")
    checked = [check_value("compression", v, int, {"minimum": 1}) for v in values]
    return checked


def _required_str(resolved: dict[str, Any], knob: str) -> str:
    value = resolved.get(knob)
    value = str(value) if isinstance(value, os.PathLike) else value
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{knob}={value!r}: expected a directory path")
    return value


def _job_output_dir(value: Any) -> Path | None:
    """An explicit output_dir, made unique per job of a multirun by the job's overrides (jobs of a sweep would
    overwrite each other otherwise). `worker`/`workers` are left out of that name (config.yaml), so the workers
    of one job array share one output directory."""
    if value in (None, ""):
        return None
    check_value("output_dir", value, str)
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN and HydraConfig.get().job.override_dirname:
        return Path(value) / HydraConfig.get().job.override_dirname.replace("/", "_")  # one level, paths flattened
    return Path(value)


def _probe_writable(knob: str, path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".kalm-eval-probe-"):
            pass
    except OSError as err:
        raise ConfigError(f"{knob}={path}: not a writable directory ({err.strerror or err})") from None
