"""Declarative dataset quirks. Every result records the quirks it was scored under."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Quirks:
    # BEIR/MTEB drop hits whose doc id equals the query id (ArguAna, Quora: the query is itself a corpus document).
    ignore_identical_ids: bool = False
    # Minimum qrels grade that counts as relevant for binary measures (R@k, RR); nDCG uses the graded values.
    relevance_threshold: int = 1

    @classmethod
    def from_config(cls, cfg: Any) -> Quirks:
        values = dict(cfg or {})
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown dataset quirk(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------------------
# Registry: the protocol facts per dataset (harness-lessons §3). Configs carry the quirks; this table is what they
# must say, checked by tests and by `check_quirks` (loaders warn on a deviation, e.g. an ablation).

# (name pattern, quirks, why). First match wins; "*" matches the rest of a name.
REGISTRY: tuple[tuple[str, Quirks, str], ...] = (
    ("beir/arguana", Quirks(ignore_identical_ids=True),
     "1,298 of 1,406 test queries are corpus docs with the same _id (BEIR PR#91: nDCG@10 ~31 -> ~41)"),
    ("beir/quora", Quirks(ignore_identical_ids=True), "queries are corpus questions with the same _id"),
    ("beir/*", Quirks(), "BEIR test split, graded qrels (TREC-COVID 0-2, NFCorpus 1-2); threshold 1"),
    ("miracl/*", Quirks(ignore_identical_ids=False, relevance_threshold=1),
     "dev qrels hold judged-relevant (1) and judged-non-relevant (0) rows; query ids can equal relevant passage "
     "ids (de, es, fa, fr, hi, yo, zh), so identical-id removal must stay off"),
    ("lmeb/*", Quirks(), "per-query scene candidates (Dataset.candidates); no identical-id removal (mteb default)"),
    ("local/*", Quirks(), "user data: no quirk known"),
)

# Facts that are suite configuration rather than per-dataset flags.
NOTES: dict[str, str] = {
    "beir": "the paper's 13 = BEIR minus MSMARCO and CQADupStack (CQADupStack would be averaged over its 12 "
            "forums first, pyserini's 18-dataset mean); mteb also sets ignore_identical_ids for FEVER and FiQA2018, "
            "BEIR/pyserini only for ArguAna and Quora (followed here)",
    "miracl": "dev split, 18 languages, full per-language corpus (not MIRACLReranking / HardNegatives candidates)",
    "lmeb": "dataset score = mean over subsets; memory type = mean over its datasets; LMEB reports both the mean "
            "over datasets and the mean over types",
}


def expected_quirks(name: str) -> tuple[Quirks, str] | None:
    """The registry entry for a dataset name (e.g. "beir/arguana", "miracl/sw", "lmeb/LoCoMo/single_hop")."""
    for pattern, quirks, why in REGISTRY:
        if pattern == name or (pattern.endswith("/*") and name.startswith(pattern[:-1])):
            return quirks, why
    return None


def check_quirks(name: str, quirks: Quirks) -> str | None:
    """A message when `quirks` differ from the registry for `name`, else None."""
    entry = expected_quirks(name)
    if entry is None or entry[0] == quirks:
        return None
    return f"{name}: quirks {quirks.to_dict()} differ from the protocol {entry[0].to_dict()} ({entry[1]})"
