"""Every dataset of every suite composes (Hydra compose API over conf/) and resolves to a loader, a split, an
instruction and the registry's quirk set; the first stage and the reranker see the unit's instruction."""

from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from kalm_eval.data.lmeb import MEMORY_TYPES, layout_of
from kalm_eval.data.loaders import LOADERS
from kalm_eval.data.miracl import LANGUAGES
from kalm_eval.data.quirks import Quirks, expected_quirks
from kalm_eval.config import CONFIG_MODULE
from kalm_eval.suite import expand_units, is_suite


BEIR_13 = ["arguana", "climate-fever", "dbpedia-entity", "fever", "fiqa", "hotpotqa", "nfcorpus", "nq", "quora",
           "scidocs", "scifact", "trec-covid", "webis-touche2020"]
# reference-scores.md §6 (subsets per task) and mteb's LMEB "Memory Type" grouping
LMEB_SUBSETS = {"ConvoMem": 6, "CovidQA": 1, "DeepPlanning": 3, "EPBench": 54, "ESGReports": 1, "Gorilla": 3,
                "KnowMeBench": 15, "LMEBMLDR": 1, "LMEB_SciFact": 1, "LoCoMo": 5, "LongMemEval": 6, "LooGLE": 2,
                "MemBench": 10, "MemGovern": 48, "NovelQA": 7, "PeerQA": 1, "ProceduralMemBench": 3, "QASPER": 1,
                "REALTALK": 3, "ReMe": 9, "TMD": 12, "ToolBench": 1}
LMEB_TYPES = {"Episodic": {"EPBench", "KnowMeBench"},
              "Dialogue": {"LoCoMo", "LongMemEval", "REALTALK", "TMD", "MemBench", "ConvoMem"},
              "Semantic": {"QASPER", "NovelQA", "PeerQA", "CovidQA", "ESGReports", "LMEBMLDR", "LooGLE", "LMEB_SciFact"},
              "Procedural": {"Gorilla", "ToolBench", "ReMe", "ProceduralMemBench", "MemGovern", "DeepPlanning"}}
SUITES = {"beir": 13, "miracl": 18, "lmeb": 22, "lmeb_dialogue": 6}
SPLITS = {"beir": "test", "miracl": "dev", "lmeb": "test"}


@pytest.fixture(scope="module", autouse=True)
def _hydra():
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        yield


def _compose(*overrides: str):
    return compose("config", overrides=list(overrides))


def _check_unit(unit) -> None:
    b = unit.benchmark
    assert b["loader"] in LOADERS, unit.name
    assert b["split"] == SPLITS[b["loader"]], unit.name
    assert isinstance(b["instruction"], str) and b["instruction"].strip(), unit.name
    quirks = Quirks.from_config(b["quirks"])
    entry = expected_quirks(unit.name)
    assert entry is not None and quirks == entry[0], (unit.name, quirks)
    if b["loader"] == "lmeb":
        assert layout_of(b).folder.startswith(b["memory_type"] + "/")  # a valid layout, stated once per dataset
        assert b["subset"] in b["subsets"] and b["instruction"] == b["subsets"][b["subset"]]
    if b["loader"] == "miracl":
        assert b["language"] in LANGUAGES and quirks.ignore_identical_ids is False


@pytest.mark.parametrize("suite", list(SUITES))
def test_every_dataset_of_every_suite_resolves(suite):
    cfg = _compose(f"benchmark={suite}", "retriever=kalm_embedding", "reranker=kalm")
    assert is_suite(cfg.benchmark)
    assert len(cfg.benchmark.datasets) == SUITES[suite]
    units = expand_units(cfg)
    for unit in units:
        _check_unit(unit)
        # the paper's first stage and the reranker are instructed per unit
        assert unit.config.retriever.instruction == unit.benchmark["instruction"]
        assert unit.config.reranker.instruction == unit.benchmark["instruction"]
    if suite == "lmeb":
        assert len(units) == 193
    if suite == "lmeb_dialogue":
        assert len(units) == 5 + 6 + 3 + 12 + 10 + 6


def test_each_dataset_selectable_alone():
    # BEIR / MIRACL files are uniform (the suite test above resolves all of them): a sample keeps this fast.
    for name in ["beir/arguana", "beir/webis-touche2020", "beir/quora", "miracl/ar", "miracl/yo", "miracl/zh"]:
        cfg = _compose(f"benchmark={name}")
        assert not is_suite(cfg.benchmark)
        (unit,) = expand_units(cfg)
        assert unit.name == name
        _check_unit(unit)
        assert OmegaConf.to_container(cfg.benchmark, resolve=True)["name"] == name
    for dataset, count in LMEB_SUBSETS.items():
        cfg = _compose(f"benchmark=lmeb/{dataset}")
        assert is_suite(cfg.benchmark)  # an LMEB dataset = a suite of its subsets
        units = expand_units(cfg)
        assert len(units) == count and {u.dataset for u in units} == {f"lmeb/{dataset}"}
        subsets = list(cfg.benchmark.subsets)
        assert [u.name for u in units] == [f"lmeb/{dataset}/{s}" for s in subsets]
        _check_unit(units[-1])  # every unit is resolved by the suite test above


def test_lmeb_inventory_matches_reference():
    cfg = _compose("benchmark=lmeb")
    datasets = OmegaConf.to_container(cfg.benchmark.datasets, resolve=True)
    assert {name: len(d["subsets"]) for name, d in datasets.items()} == LMEB_SUBSETS
    assert sum(LMEB_SUBSETS.values()) == 193
    for memory_type, members in LMEB_TYPES.items():
        assert {n for n, d in datasets.items() if d["memory_type"] == memory_type} == members
    assert all(layout_of(d).upstream for d in datasets.values()) and set(MEMORY_TYPES) == set(LMEB_TYPES)
    dialogue = _compose("benchmark=lmeb_dialogue")
    assert set(dialogue.benchmark.datasets) == LMEB_TYPES["Dialogue"]
    # spot-check LMEB's task_instructions.json lookups (scenario datasets by query type, MemGovern by name)
    assert datasets["EPBench"]["subsets"]["world_news_claude_short__Times"] == (
        "Given a specific event description, retrieve passages that contain when the event occurred")
    assert set(datasets["MemGovern"]["subsets"].values()) == {
        "Given a query, retrieve experiences or solutions that help to solve the query"}
    assert datasets["LoCoMo"]["subsets"]["multi_hop"] == (
        "Given a multi-hop question, retrieve documents from multiple sessions to answer the question")


def test_beir_is_the_13_without_cqadupstack_and_miracl_has_18():
    beir = _compose("benchmark=beir")
    assert sorted(beir.benchmark.datasets) == sorted(BEIR_13)
    assert not any("cqadupstack" in n or "msmarco" in n for n in beir.benchmark.datasets)
    identical = {n for n, d in beir.benchmark.datasets.items() if d.quirks.ignore_identical_ids}
    assert identical == {"arguana", "quora"}
    miracl = _compose("benchmark=miracl")
    assert sorted(miracl.benchmark.datasets) == sorted(LANGUAGES) and len(LANGUAGES) == 18
    assert all(d.split == "dev" and d.quirks.relevance_threshold == 1 for d in miracl.benchmark.datasets.values())


def test_instruction_overrides():
    units = expand_units(_compose("benchmark=beir", "retriever=kalm_embedding", "benchmark.instruction=Do it"))
    assert {u.benchmark["instruction"] for u in units} == {"Do it"}
    assert {u.config.retriever.instruction for u in units} == {"Do it"}
    (unit,) = expand_units(_compose("benchmark=lmeb/LoCoMo", "benchmark.subset=multi_hop", "reranker=kalm"))
    assert unit.name == "lmeb/LoCoMo/multi_hop"
    assert unit.config.reranker.instruction.startswith("Given a multi-hop question")
    cfg = _compose("benchmark=lmeb/LoCoMo", "benchmark.subset=multi_hop")
    assert not is_suite(cfg.benchmark)  # one subset runs as a plain pipeline run
    (unit,) = expand_units(_compose("benchmark=lmeb/CovidQA", "benchmark.instruction="))
    assert unit.benchmark["instruction"] == ""  # "" = without instruction (LMEB's wo_inst axis)
    units = expand_units(_compose("benchmark=lmeb_dialogue", "benchmark.datasets.TMD.subset=dates_time_qs"))
    assert [u.name for u in units if u.dataset == "lmeb/TMD"] == ["lmeb/TMD/dates_time_qs"]


@pytest.mark.parametrize("suite", list(SUITES))
def test_paper_experiments(suite):
    cfg = _compose(f"+experiment=paper_{suite}")
    assert cfg.benchmark.name == suite and len(cfg.benchmark.datasets) == SUITES[suite]
    assert cfg.retriever.model == "KaLM-Embedding/KaLM-embedding-multilingual-mini-instruct-v2.5"
    assert cfg.retriever.depth == 100 and cfg.reranker.name == "kalm" and cfg.reranker.depth == 100
    assert cfg.benchmark.paper_retriever == "kalm_embedding"
    unit = expand_units(cfg)[0]
    assert unit.config.retriever.instruction == unit.benchmark["instruction"]


def test_cli_cfg_job_prints_a_suite(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "kalm_eval", "--cfg", "job", "benchmark=lmeb/LoCoMo",
                          "retriever=kalm_embedding"], cwd=tmp_path, capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "loader: lmeb" in out.stdout and "single_hop:" in out.stdout


def test_bm25_analysis_follows_the_benchmark_language():
    def analysis(benchmark: str) -> tuple:
        retriever = OmegaConf.to_container(_compose(f"benchmark={benchmark}", "retriever=bm25").retriever, resolve=True)
        return retriever["stopwords"], retriever["stemmer"]

    assert analysis("beir/scifact") == ("en", "english")  # MTEB's bm25s settings
    assert analysis("miracl/de") == ("de", "german")
    assert analysis("miracl/zh") == ("zh", None)
    assert analysis("miracl/sw") == (None, None)  # no stopword list or stemmer for Swahili: none rather than English


@pytest.mark.parametrize(("overrides", "expected"), [
    (["retriever.depth=5"], 5),                          # default: everything the first stage returns
    (["retriever.depth=50", "reranker.depth=20"], 20),   # or an explicit smaller cut
])
def test_reranker_depth_defaults_to_the_retriever_depth(tmp_path, overrides, expected):
    from kalm_eval.config import RunConfig

    cfg = _compose("benchmark=beir/scifact", "retriever=bm25", "reranker=kalm", "model=tiny", *overrides,
                   f"cache_dir={tmp_path / 'c'}", f"results_dir={tmp_path / 'r'}")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert RunConfig.from_mapping(resolved, probe_paths=False).reranker.depth == expected


# ---- every shipped configuration validates ----------------------------------------------------------------------
# Every benchmark member (each dataset file under conf/benchmark/, as a suite member, one alone), every first stage
# (conf/retriever/*) and every reranker preset (conf/reranker/* x the conf/model/* presets of its family) go through
# the run's own validation (RunConfig; no path probed, no data read, no model loaded). Pairwise, to stay fast: every
# member with every first stage and with every reranker family; every first stage with every reranker family; every
# model preset with its family. The sections meet only through interpolations into `benchmark` (instruction,
# analyzer) and the depth rule; a model preset interpolates nothing (asserted), so a preset that validates with its
# family validates wherever that family does.

CONF = Path(__file__).resolve().parents[1] / "conf"
PLACEHOLDER = "/nonexistent/required-by-the-user"  # a value for every `???` knob the user must set (paths)
PINNED = "0" * 40  # for a preset that ships without a pin on purpose (bge_reranker_v2_gemma: model.revision=<commit>)


def _names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


RETRIEVERS, RERANKERS = _names("retriever"), _names("reranker")


def _reranker_presets() -> list[tuple[str, str | None]]:
    """(reranker, model preset) for every family and every model preset of it; families without presets alone."""
    families = {p.stem: OmegaConf.load(p).get("family") for p in (CONF / "model").glob("*.yaml")}
    presets = []
    for reranker in RERANKERS:
        models = sorted(m for m, family in families.items() if family == reranker)
        presets += [(reranker, m) for m in models] or [(reranker, None)]
    return presets


def _suite_members() -> dict[str, list[str]]:
    """Selection -> the dataset names of its members: each suite, and `local`."""
    return {"beir": [f"beir/{n}" for n in BEIR_13], "miracl": [f"miracl/{n}" for n in LANGUAGES],
            "lmeb": [f"lmeb/{n}" for n in LMEB_SUBSETS],
            "lmeb_dialogue": [f"lmeb/{n}" for n in LMEB_TYPES["Dialogue"]], "local": ["local/unnamed"]}


def _validated(*overrides: str) -> dict:
    """Compose, fill the knobs the user must set, validate every member (one unit per LMEB dataset: its subsets
    differ only in their instruction string); member -> its RunConfig."""
    from kalm_eval.config import RunConfig

    cfg = _compose(*overrides, "cache_dir=/nonexistent/cache", "results_dir=/nonexistent/results")
    for key in OmegaConf.missing_keys(cfg):
        OmegaConf.update(cfg, key, PLACEHOLDER)
    if cfg.reranker.name != "none" and cfg.model.get("hf_id") and cfg.model.get("revision") is None:
        cfg.model.revision = PINNED
    validated = {}
    for unit in expand_units(cfg):
        if unit.dataset in validated:
            continue
        try:
            validated[unit.dataset] = RunConfig.from_hydra(unit.config, probe_paths=False)
        except Exception as err:
            raise AssertionError(f"{' '.join(overrides)}: {unit.name}: {type(err).__name__}: {err}") from None
    return validated


def test_shipped_config_inventory():
    """The parametrisations below enumerate the shipped files: a new config file is covered without editing tests."""
    files = {str(p.relative_to(CONF / "benchmark").with_suffix("")) for p in (CONF / "benchmark").rglob("*.yaml")
             if not p.stem.startswith("_")}
    selections = _suite_members()
    members = {m for s in ("beir", "miracl", "lmeb") for m in selections[s]}
    assert files == members | set(selections), sorted(files ^ (members | set(selections)))
    assert {r for r, _ in _reranker_presets()} == set(RERANKERS)
    assert {m for _, m in _reranker_presets() if m} == set(_names("model"))  # every preset belongs to a family
    for preset in (CONF / "model").glob("*.yaml"):  # the premise of the pairwise coverage
        assert "${" not in preset.read_text(), preset.name


@pytest.mark.parametrize("sweep", range(max(len(RETRIEVERS), len(RERANKERS))))
def test_every_member_validates_with_every_first_stage_and_reranker(sweep):
    """Sweep i pairs every member with first stage i and reranker family i (cycled): all pairs in few sweeps."""
    retriever, reranker = RETRIEVERS[sweep % len(RETRIEVERS)], RERANKERS[sweep % len(RERANKERS)]
    for selection, members in _suite_members().items():
        validated = _validated(f"benchmark={selection}", f"retriever={retriever}", f"reranker={reranker}")
        assert sorted(validated) == sorted(members)
        assert {c.retriever.name for c in validated.values()} == {retriever}
        assert {c.reranker.name if c.reranker else "none" for c in validated.values()} == {reranker}
    assert list(_validated("benchmark=miracl/sw", f"retriever={retriever}", f"reranker={reranker}")) == ["miracl/sw"]


@pytest.mark.parametrize("retriever", RETRIEVERS)
def test_every_first_stage_validates_with_every_reranker_preset(retriever):
    for reranker, model in _reranker_presets():
        chosen = [f"reranker={reranker}"] + ([f"model={model}"] if model else [])
        (config,) = _validated("benchmark=beir/scifact", f"retriever={retriever}", *chosen).values()
        assert config.reranker is None or config.reranker.depth == config.retriever.depth


@pytest.mark.parametrize("experiment", _names("experiment"))
def test_every_paper_experiment_validates(experiment):
    suite = experiment.removeprefix("paper_")
    assert sorted(_validated(f"+experiment={experiment}")) == sorted(_suite_members()[suite])


def test_a_preset_without_a_pin_says_what_to_set():
    from kalm_eval.config import RunConfig
    from kalm_eval.errors import ConfigError

    cfg = _compose("benchmark=beir/scifact", "reranker=bge_gemma")
    with pytest.raises(ConfigError, match=r"^model\.revision=None: BAAI/bge-reranker-v2-gemma needs a pinned revision"):
        RunConfig.from_hydra(cfg, probe_paths=False)


def test_bm25_without_stopwords_or_stemmer_validates():
    """MIRACL languages that neither bm25s nor PyStemmer covers state `stopwords: null` (none), a shipped value."""
    validated = _validated("benchmark=miracl", "retriever=bm25")
    analysis = {name.split("/")[1]: (c.retriever.settings.stopwords, c.retriever.settings.stemmer)
                for name, c in validated.items()}
    assert len(analysis) == 18 and analysis["de"] == ("de", "german") and analysis["zh"] == ("zh", None)
    assert sorted(lang for lang, (stopwords, _) in analysis.items() if stopwords is None) == [
        "ar", "bn", "fa", "fi", "hi", "id", "ja", "sw", "te", "th", "yo"]
