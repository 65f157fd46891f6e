"""Protocol check for the regression gate: two records may be compared only when everything that affects a number
agrees except the reranker model (the thing under test): dataset (name, split, file hashes = revision, quirks,
joiner), first stage (signature, source, depth, tie break), metric definitions, and the reranker's family, ratio or
cascade, depth, instruction, tail, tie break and score, and the inputs the model is fed (its input lengths, templates
and pooling rule, MODEL_INPUTS). Every difference is named with both values."""

from __future__ import annotations

from typing import Any

from kalm_eval.result import ResultRecord
from kalm_eval.storage import canonical_json

# protocol paths that may legitimately differ between a baseline and a candidate checkpoint
ALWAYS_IGNORED = ("reranker.model", "harness_version")
# ... except the inputs the checkpoint is fed, recorded inside its identity (reranker.model): input lengths, prompt
# and encoder templates, padding, pooling and score rule. R1 at 1,024 document tokens vs R2 at 8,192 compares two
# protocols, not two checkpoints (allow_protocol_diff=[reranker.model.doc_max_len] says it is meant).
MODEL_INPUTS = tuple(f"reranker.model.{key}" for key in (
    "doc_max_len", "query_max_len", "max_length", "query_max_length", "prompt_template_sha256", "encoder_template",
    "pad_to_multiple_of", "pooling_rule", "score"))
ABSENT = "<absent>"


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"dotted.path": leaf}; an empty dict is a leaf of its own."""
    if not isinstance(obj, dict):
        return {prefix: obj}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    if not obj and prefix:
        out[prefix] = {}
    return out


def is_ignored(path: str, ignored: tuple[str, ...]) -> bool:
    return any(path == skip or path.startswith(skip + ".") for skip in ignored)


def protocol_differences(baseline: dict, candidate: dict, allowed: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Dotted paths where two protocols differ, each with both values, e.g.
    "reranker.compression: baseline 4, candidate 8". `allowed` paths (and ALWAYS_IGNORED) are not compared."""
    ignored = tuple(ALWAYS_IGNORED) + tuple(allowed)
    if (baseline.get("reranker") is None) != (candidate.get("reranker") is None) and not is_ignored("reranker", ignored):
        which = "baseline" if baseline.get("reranker") is None else "candidate"
        return [f"reranker: {which} is first stage only, the other is reranked"]
    a, b = flatten(baseline), flatten(candidate)
    differences = []
    for path in sorted(set(a) | set(b)):
        left, right = a.get(path, ABSENT), b.get(path, ABSENT)
        model_input = path in MODEL_INPUTS and ABSENT not in (left, right)  # compared where both records state it
        if is_ignored(path, ignored) and (not model_input or is_ignored(path, tuple(allowed))):
            continue
        if canonical_json(left) != canonical_json(right):
            differences.append(f"{path}: baseline {_short(left)}, candidate {_short(right)}")
    return differences


def pair_key(record: ResultRecord) -> str:
    """What must match for two records to be paired: the dataset and the protocol minus the reranker model (but
    with the inputs it is fed)."""
    protocol = {k: v for k, v in record.protocol.items() if k != "harness_version"}
    if isinstance(protocol.get("reranker"), dict):
        model = protocol["reranker"].get("model") if isinstance(protocol["reranker"].get("model"), dict) else {}
        inputs = {key: model[key] for key in (path.rsplit(".", 1)[1] for path in MODEL_INPUTS) if key in model}
        protocol["reranker"] = {**{k: v for k, v in protocol["reranker"].items() if k != "model"},
                                "model_inputs": inputs}
    return canonical_json({"dataset": record.dataset, "protocol": protocol})


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value) if isinstance(value, str) else canonical_json(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
