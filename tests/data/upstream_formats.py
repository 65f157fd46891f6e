"""Writers for tiny fixtures in the exact upstream file formats (LMEB upstream layout, MIRACL HF raw files, MTEB
HF dataset repos) plus the shared-data locator. Imported by tests/data/* and tests/test_suite.py."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()


def write_jsonl(path: Path, rows: list[dict], *, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def write_tsv(path: Path, rows: list[tuple], header: tuple | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (["\t".join(header)] if header else []) + ["\t".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- LMEB upstream layout (KaLM-Embedding/LMEB @ 753bfc59): qrels.tsv has no header; ids are "id" ------------

LOCOMO_CORPUS = [  # one corpus for all LoCoMo subsets (corpus_at = dataset); ids deliberately ints in two rows
    {"id": "conv-1_s1_t1", "title": "", "text": "Alice adopted a puppy named Biscuit last spring"},
    {"id": "conv-1_s1_t2", "title": "", "text": "Bob went hiking in the Alps with his brother"},
    {"id": "conv-1_s2_t1", "title": "session 2", "text": "Alice said Biscuit loves the beach and swimming"},
    {"id": "conv-2_s1_t1", "title": "", "text": "Carol bakes sourdough bread every weekend puppy"},
    {"id": "conv-2_s1_t2", "title": "", "text": "Dan plays the violin in an orchestra"},
    {"id": 7, "title": "", "text": "Biscuit the puppy of Erin chews shoes at the beach"},
]
LOCOMO_SCENES = [  # scene = first two "_" parts of the query id
    {"scene_id": "conv-1_0", "candidate_doc_ids": ["conv-1_s1_t1", "conv-1_s1_t2", "conv-1_s2_t1", "gone_1"]},
    {"scene_id": "conv-2_0", "candidate_doc_ids": ["conv-2_s1_t1", "conv-2_s1_t2", 7]},
]
LOCOMO_SUBSETS = {
    "single_hop": {
        "queries": [{"id": "conv-1_0_q1", "text": "What is the name of Alice's puppy?"},
                    {"id": "conv-2_0_q1", "text": "Who bakes bread?"},
                    {"id": "conv-3_0_q1", "text": "Where does Biscuit like to swim?"},  # no scene: whole corpus
                    {"id": "conv-1_0_q9", "text": "an unjudged query"}],
        "qrels": [("conv-1_0_q1", "conv-1_s1_t1", 1), ("conv-2_0_q1", "conv-2_s1_t1", 1),
                  ("conv-3_0_q1", "conv-1_s2_t1", 1)],
    },
    "multi_hop": {
        "queries": [{"id": "conv-1_0_q2", "text": "Which puppy loves the beach?"},
                    {"id": "conv-2_0_q2", "text": "Which instrument and which bread?"}],
        "qrels": [("conv-1_0_q2", "conv-1_s2_t1", 2), ("conv-1_0_q2", "conv-1_s1_t1", 1),
                  ("conv-2_0_q2", "conv-2_s1_t2", 1), ("conv-2_0_q2", "conv-2_s1_t1", 1)],
    },
}

COVIDQA = {  # single subset "Covid-QA": files directly in Semantic/Covid-QA; scene = query id
    "corpus": [{"id": "p1", "title": "Transmission", "text": "The virus spreads through droplets"},
               {"id": "p2", "title": "Incubation", "text": "Incubation lasts five days on average"},
               {"id": "p3", "title": "Vaccines", "text": "Vaccines reduce severe disease"},
               {"id": "p4", "title": "Other paper", "text": "Droplets and incubation in another paper"}],
    "queries": [{"id": "cq1", "text": "How does the virus spread?"}, {"id": "cq2", "text": "How long is incubation?"}],
    "qrels": [("cq1", "p1", 1), ("cq2", "p2", 1)],
    "candidates": [{"scene_id": "cq1", "candidate_doc_ids": ["p1", "p2", "p3"]},
                   {"scene_id": "cq2", "candidate_doc_ids": ["p1", "p2", "p3"]}],
}

EPBENCH = {  # scenario folder holds the corpus shared by its query types; no candidates
    "corpus": [{"id": "e1", "title": "", "text": "Event one in Paris with Ann"},
               {"id": "e2", "title": "", "text": "Event two in Rome with Ben"}],
    "subsets": {"Entities": ([{"id": "q1", "text": "Who was in Paris?"}], [("q1", "e1", 1)]),
                "Times": ([{"id": "q2", "text": "When was Rome?"}], [("q2", "e2", 1)])},
}


def write_lmeb_fixture(root: Path) -> Path:
    """A tiny LMEB root: Dialogue/LoCoMo (2 subsets, dataset-level corpus + candidates), Semantic/Covid-QA (single
    subset), Episodic/EPBench/default_claude_long/{Entities,Times} (scenario-level corpus)."""
    loco = root / "Dialogue" / "LoCoMo"
    write_jsonl(loco / "corpus.jsonl", LOCOMO_CORPUS)
    write_jsonl(loco / "candidates.jsonl", LOCOMO_SCENES)
    for subset, parts in LOCOMO_SUBSETS.items():
        write_jsonl(loco / subset / "queries.jsonl", parts["queries"])
        write_tsv(loco / subset / "qrels.tsv", parts["qrels"])
    covid = root / "Semantic" / "Covid-QA"
    write_jsonl(covid / "corpus.jsonl", COVIDQA["corpus"])
    write_jsonl(covid / "queries.jsonl", COVIDQA["queries"])
    write_tsv(covid / "qrels.tsv", COVIDQA["qrels"])
    write_jsonl(covid / "candidates.jsonl", COVIDQA["candidates"])
    scenario = root / "Episodic" / "EPBench" / "default_claude_long"
    write_jsonl(scenario / "corpus.jsonl", EPBENCH["corpus"])
    for subset, (queries, qrels) in EPBENCH["subsets"].items():
        write_jsonl(scenario / subset / "queries.jsonl", queries)
        write_tsv(scenario / subset / "qrels.tsv", qrels)
    return root


# --- MIRACL: HF miracl/miracl raw files + miracl/miracl-corpus shards ----------------------------------------

MIRACL_TOPICS = [("10020#0", "Odun wo ni idije Olympiiki akoko?"), ("6", "Bandari kubwa nchini Kenya iko wapi?"),
                 ("8", "Je, mji mkuu Australia ni gani?")]
MIRACL_QRELS = [  # judged-0 rows included; query "10020#0" is itself a relevant passage id
    ("10020#0", "10020#0", 1), ("10020#0", "10020#1", 0),
    ("6", "32589#0", 1), ("6", "93957#6", 1), ("6", "555#2", 0),
    ("8", "777#0", 1), ("8", "32589#0", 0)]
MIRACL_SHARDS = [
    [{"docid": "10020#0", "title": "Olympiiki", "text": "Idije Olympiiki akoko waye ni odun 1896."},
     {"docid": "10020#1", "title": "Olympiiki", "text": "Ilu Athens ni won ti se e."},
     {"docid": "32589#0", "title": "Mombasa", "text": "Bandari kubwa ya Kenya iko Mombasa."}],
    [{"docid": "93957#6", "title": "Kenya", "text": "Mombasa ni bandari kubwa nchini Kenya."},
     {"docid": "555#2", "title": "Nairobi", "text": "Nairobi ni mji mkuu wa Kenya."},
     {"docid": "777#0", "title": "Australia", "text": "Canberra ni mji mkuu wa Australia."}],
]


def write_miracl_raw(root: Path, lang: str = "sw", split: str = "dev") -> tuple[Path, Path]:
    """HF repo layouts: <root>/miracl/miracl-v1.0-<lang>/{topics,qrels}/..., and
    <root>/miracl-corpus/miracl-corpus-v1.0-<lang>/docs-{0,1}.jsonl.gz. Returns (topics dir, corpus dir)."""
    topics_dir = root / "miracl" / f"miracl-v1.0-{lang}"
    write_tsv(topics_dir / "topics" / f"topics.miracl-v1.0-{lang}-{split}.tsv", MIRACL_TOPICS)
    # anserini/MIRACL qrels: "qid Q0 docid rel", tab-separated
    write_tsv(topics_dir / "qrels" / f"qrels.miracl-v1.0-{lang}-{split}.tsv",
              [(q, "Q0", d, r) for q, d, r in MIRACL_QRELS])
    corpus_dir = root / "miracl-corpus" / f"miracl-corpus-v1.0-{lang}"
    for n, shard in enumerate(MIRACL_SHARDS):
        write_jsonl(corpus_dir / f"docs-{n}.jsonl.gz", shard, gz=True)
    return topics_dir, corpus_dir


# --- MTEB HF dataset repo (README configs + data files), loadable offline with datasets.load_dataset(dir) -----

def write_mteb_repo(root: Path, subsets: dict[str | None, dict[str, list[dict]]], split: str) -> Path:
    """`subsets`: subset (None = single config) -> role (corpus, queries, qrels, top_ranked) -> rows.
    Written as a dataset repo whose README.md declares one config per `<subset>-<role>`, as mteb's uploads do."""
    configs = []
    for subset, roles in subsets.items():
        for role, rows in roles.items():
            config = f"{subset}-{role}" if subset else ("default" if role == "qrels" else role)
            rel = f"{subset or 'default'}/{role}/{split}.jsonl"
            write_jsonl(root / rel, rows)
            configs.append(f"- config_name: {config}\n  data_files:\n  - split: {split}\n    path: {rel}")
    (root / "README.md").write_text("---\nconfigs:\n" + "\n".join(configs) + "\n---\n", encoding="utf-8")
    return root


def shipped_lmeb(dataset: str) -> dict:
    """memory_type and layout of an LMEB dataset, as the shipped conf/benchmark/lmeb/<dataset>.yaml states them."""
    import importlib.resources

    import yaml

    text = (importlib.resources.files("kalm_eval.conf") / "benchmark" / "lmeb" / f"{dataset}.yaml").read_text()
    config = yaml.safe_load(text)
    return {"memory_type": config["memory_type"], "layout": config["layout"]}
